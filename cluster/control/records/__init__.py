"""What the head keeps: the job table (the one writer of a job), its SQLite store, the
webhook outbox and the job counters."""
