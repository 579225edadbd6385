"""A job as the outside world sees it: the one JSON shape the gateway returns for a job
and a webhook POSTs when it ends, so a receiver can parse both with the same code."""

from __future__ import annotations

from typing import Any

from cluster.model.jobs import Job, JobStatus
from cluster.model.tenancy import tenant_of


def job_view(job: Job) -> dict[str, Any]:
    """``job`` as JSON-ready data (``GET /v1/jobs/{id}``'s body)."""
    spec = job.spec
    ended = job.status in (JobStatus.FAILED, JobStatus.CANCELLED)
    return {
        "id": job.id,
        "kind": str(spec.kind),
        "status": str(job.status),
        "tenant": tenant_of(job.tenant),
        "input": spec.input,
        "output": spec.output,
        "spec": spec.to_dict(),
        "progress": job.progress.to_dict() if job.progress else None,
        "placement": job.placement.to_dict() if job.placement else None,
        "attempts": job.attempts,
        "reason": job.reason,
        "error": {"code": str(job.error_code) if job.error_code else None, "message": job.reason}
        if ended
        else None,
        "result": job.result,
        "notes": list(job.notes),
        "limits": job.limits,
        "failures": [f.to_dict() for f in job.failures],
        "webhook": job.webhook.to_dict() if job.webhook else None,
        "split": job.split.to_dict() if job.split else None,
        "package": job.package.to_dict() if job.package else None,
        "input_media": job.input_media.to_dict() if job.input_media else None,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "forecast": job.forecast,
    }
