"""Pure vocabulary: jobs and their states, progress, events. Runs everywhere; no I/O."""
