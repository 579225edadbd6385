"""framefleet gateway and CLI."""
