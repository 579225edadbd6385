"""framefleet engine."""
