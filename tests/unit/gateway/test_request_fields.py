"""The CLI hands a running gateway its job spec as the request body (it does not import
the gateway's schemas): a job request takes exactly the spec's fields."""

from __future__ import annotations

from dataclasses import fields

from api.gateway.schemas import JobRequest
from cluster import JobSpec


def test_a_job_request_has_the_fields_of_a_job_spec() -> None:
    assert set(JobRequest.model_fields) == {f.name for f in fields(JobSpec)}
