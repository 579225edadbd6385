"""What happens to jobs that is counted: retries, placement failures, stalls, quarantines,
webhooks and the rest (:class:`JobCounter`), each with what it counts."""

from __future__ import annotations

from enum import StrEnum


class JobCounter(StrEnum):
    """What happens to jobs that is counted (the value is the Prometheus name, less the
    ``framefleet_`` prefix and ``_total``; :data:`COUNTER_HELP` says what each counts)."""

    RETRIES = "job_retries"
    PLACEMENT_FAILURES = "placement_failures"
    NVENC_FAILURES = "nvenc_open_failures"
    NODE_LOSSES = "node_losses"
    STALLS = "job_stalls"
    TIMEOUTS = "job_timeouts"
    POISON_JOBS = "poison_jobs"
    QUARANTINES = "quarantines"
    WEBHOOKS_DELIVERED = "webhooks_delivered"
    WEBHOOKS_FAILED = "webhooks_failed"
    WEBHOOK_RETRIES = "webhook_retries"


COUNTER_HELP: dict[JobCounter, str] = {
    JobCounter.RETRIES: "Attempts re-queued after a retryable failure.",
    JobCounter.PLACEMENT_FAILURES: "Jobs no node in the cluster can run.",
    JobCounter.NVENC_FAILURES: "Encodes where NVENC could not be opened.",
    JobCounter.NODE_LOSSES: "Jobs re-placed because their node left mid-job.",
    JobCounter.STALLS: "Encodes killed: no progress for the job's stall limit.",
    JobCounter.TIMEOUTS: "Encodes killed: past the job's runtime ceiling.",
    JobCounter.POISON_JOBS: "Jobs failed as poison (encoders crashed on K nodes).",
    JobCounter.QUARANTINES: "Times a node or GPU was quarantined.",
    JobCounter.WEBHOOKS_DELIVERED: "Job endings delivered to callbacks.",
    JobCounter.WEBHOOKS_FAILED: "Webhooks given up after every attempt.",
    JobCounter.WEBHOOK_RETRIES: "Webhook attempts that will be tried again.",
}
