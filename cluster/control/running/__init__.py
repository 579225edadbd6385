"""Work in flight: warm encoders (``pool``), the encodes running on them (``encodes``) and
the work order each attempt gets (``orders``)."""
