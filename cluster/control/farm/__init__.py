"""What the head knows of the farm: the nodes and what their agents report (``view``),
where media are seen (``reach``), probed inputs (``prober``), quarantines and drains
(``healing``), and the seam to the cluster (``backend``)."""
