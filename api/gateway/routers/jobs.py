"""/v1/jobs: submit (one or a batch), list, read, cancel, retry, and follow live (SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from enum import StrEnum
from pathlib import PurePath, PurePosixPath
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.gateway.auth import (
    REVOKED_CHECK_S,
    SUBMITTER,
    VIEWER,
    caller_of,
    identity_of,
    owner_of,
    scoped_key,
    still_held,
)
from api.gateway.limits import SSE
from api.gateway.schemas import BatchRequest, BatchView, JobPage, JobRequest, JobView
from cluster import (
    CallTimeout,
    ErrorCode,
    EventType,
    Job,
    JobEvent,
    JobKind,
    JobSpec,
    JobStatus,
    SpecError,
    is_url,
)

if TYPE_CHECKING:
    from cluster import Fleet

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="The same key returns the job(s) the first request made.",
    ),
]
SSE_KEEPALIVE_S = 15.0


def fleet_of(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


@router.post("", status_code=201, response_model=JobView, dependencies=[SUBMITTER])
async def submit(
    body: JobRequest, request: Request, response: Response, key: IdempotencyKey = None
) -> JobView:
    """Queue one job. Paths must resolve inside the media roots."""
    spec = body.to_spec()
    job = await fleet_of(request).aio.submit(
        spec, idempotency_key=scoped_key(request, key), caller=caller_of(request)
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobView.of(job)


@router.post("/batch", status_code=201, response_model=BatchView, dependencies=[SUBMITTER])
async def submit_batch(
    body: BatchRequest, request: Request, key: IdempotencyKey = None
) -> BatchView:
    """One spec, many inputs: all are queued, or none (the error names the one refused)."""
    limit = request.app.state.settings.max_batch
    if body.input_prefix is not None:
        if body.inputs:
            raise SpecError("give inputs or input_prefix, not both")
        listed = await fleet_of(request).aio.list_inputs(
            body.input_prefix, limit + 1, caller_of(request)
        )
        if not listed:
            raise SpecError(f"no video objects under {body.input_prefix}",
                            code=ErrorCode.INPUT_MISSING)  # fmt: skip
        body = body.model_copy(update={"inputs": listed, "input_prefix": None})
    if not body.inputs:
        raise SpecError("a batch needs inputs (or an s3:// input_prefix)")
    if len(body.inputs) > limit:
        raise SpecError(f"a batch holds at most {limit} inputs; split it", code=ErrorCode.TOO_MANY)
    fields = body.spec.model_dump()
    specs = [JobSpec(**fields, input=src, output=out)
             for src, out in zip(body.inputs, _outputs(body), strict=True)]  # fmt: skip
    jobs = await fleet_of(request).aio.submit_many(
        specs, idempotency_key=scoped_key(request, key), caller=caller_of(request)
    )
    return BatchView(ids=[j.id for j in jobs], jobs=[JobView.of(j) for j in jobs])


def _outputs(body: BatchRequest) -> list[str | None]:
    kind = body.spec.kind
    if kind in (JobKind.PROBE, JobKind.VALIDATE, JobKind.QUALITY):
        if body.outputs or body.output_dir:
            raise SpecError(f"{kind} jobs write no output; drop outputs and output_dir")
        return [None] * len(body.inputs)
    if body.outputs is not None:
        if len(body.outputs) != len(body.inputs):
            raise SpecError(
                f"outputs has {len(body.outputs)} entries for {len(body.inputs)} inputs; "
                "give one per input, or an output_dir"
            )
        return list(body.outputs)  # the same file twice is caught once resolved
    if body.output_dir is None:
        raise SpecError(f"a {kind} batch needs outputs (one per input) or an output_dir")
    if kind is JobKind.THUMBNAIL:
        return [body.output_dir] * len(body.inputs)  # images are named after each input
    stems = [PurePosixPath(src).stem for src in body.inputs]
    if len(set(stems)) != len(stems):
        raise SpecError("two inputs share a file name; give outputs one per input instead")
    if kind is JobKind.PACKAGE:  # a package folder per input
        return [_inside(body.output_dir, stem) for stem in stems]
    return [_inside(body.output_dir, f"{stem}.{body.output_ext}") for stem in stems]


def _inside(folder: str, name: str) -> str:
    """``name`` in ``folder``: a local folder, or an ``s3://`` prefix (kept a URL)."""
    if is_url(folder):
        return f"{folder.rstrip('/')}/{name}"
    return str(PurePath(folder) / name)


class ListedStatus(StrEnum):
    """What a listed job can be: a job's status, less ``waiting`` (only a task of a job
    graph waits, and tasks are never listed)."""

    QUEUED = JobStatus.QUEUED.value
    RUNNING = JobStatus.RUNNING.value
    SUCCEEDED = JobStatus.SUCCEEDED.value
    FAILED = JobStatus.FAILED.value
    CANCELLED = JobStatus.CANCELLED.value


@router.get("", response_model=JobPage, dependencies=[VIEWER])
async def list_jobs(
    request: Request,
    status: Annotated[ListedStatus | None, Query()] = None,
    kind: Annotated[JobKind | None, Query()] = None,
    tenant: Annotated[
        str | None,
        Query(
            max_length=63,
            description="One tenant's jobs (operators and admins; "
            "others see their own tenant's only)",
        ),
    ] = None,
    cursor: Annotated[int, Query(ge=0, description="next_cursor of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JobPage:
    """Jobs in submission order, filtered, a page at a time: the caller's tenant's (every
    tenant's for an operator or admin)."""
    jobs = await fleet_of(request).aio.list_jobs(
        status=str(status) if status else None,
        kind=str(kind) if kind else None,
        after_seq=cursor,
        limit=limit + 1,  # one more: is there a next page at all?
        caller=caller_of(request),
        tenant=tenant,
    )
    more = len(jobs) > limit
    jobs = jobs[:limit]
    next_cursor = jobs[-1].seq if more else None
    return JobPage(jobs=[JobView.of(j) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobView, dependencies=[VIEWER])
async def get_job(job_id: str, request: Request) -> Response:
    """One job; served from the gateway's event-fed cache when it holds the job. A job
    of another tenant is a 404, as a wrong id is."""
    cache = request.app.state.hub.cache
    body = await cache.read(job_id, fleet_of(request).aio.get, caller_of(request))
    return Response(body, media_type="application/json")


CANCEL_REPLY_S = 10.0
"""How long DELETE waits for the encoder to stop before answering 202 (still stopping)."""


@router.delete(
    "/{job_id}",
    response_model=JobView,
    dependencies=[SUBMITTER],
    responses={202: {"model": JobView, "description": "Cancel requested; still stopping."}},
)
async def cancel_job(job_id: str, request: Request, response: Response) -> JobView:
    """Cancel (idempotent): a running ffmpeg is killed and nothing partial is left. 200 with
    the cancelled job, once its ffmpeg is gone; 202 with the job still running when its
    encoder has not confirmed its end within 10 s (the coordinator goes on, and kills the
    encoder if it does not stop: follow the job's events)."""
    cache, fleet, caller = request.app.state.hub.cache, fleet_of(request).aio, caller_of(request)
    cache.drop(job_id)
    try:
        job = await fleet.cancel(job_id, timeout=CANCEL_REPLY_S, caller=caller)
    except CallTimeout:
        response.status_code = 202
        job = await fleet.get(job_id, caller)
    if not job.status.terminal:  # killed, but not yet confirmed gone
        response.status_code = 202
    cache.drop(job_id)
    return JobView.of(job)


@router.post("/{job_id}/retry", response_model=JobView, dependencies=[SUBMITTER])
async def retry_job(job_id: str, request: Request) -> JobView:
    """Queue a failed or cancelled job again (its input is probed again). A job that has
    not ended is a 409: cancel it first; cancels and retries of one job take turns."""
    job = await fleet_of(request).aio.retry(job_id, caller_of(request))
    request.app.state.hub.cache.drop(job_id)
    return JobView.of(job)


async def existing_job(job_id: str, request: Request) -> Job:
    """The job, read before a stream starts, so a wrong id (or another tenant's job) is
    a plain 404."""
    return await fleet_of(request).aio.get(job_id, caller_of(request))


async def stream_slot(request: Request) -> AsyncIterator[None]:
    """One of the caller's event streams, held until the stream ends (its client gone
    included); past ``max_streams_per_token``, 429."""
    with request.app.state.streams.hold(SSE, owner_of(request)):
        yield


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    dependencies=[VIEWER, Depends(stream_slot, scope="request")],
    responses={429: {"description": "The token holds as many event streams as it may."}},
)
async def job_events(
    request: Request,
    job: Annotated[Job, Depends(existing_job)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: ``data:`` JSON with ``status`` and ``progress``, pushed as they
    happen (one subscription per gateway, not a poll per client); the stream ends after
    the terminal event.

    Every event has an ``id:``. A client that reconnects with ``Last-Event-ID`` (after a
    network cut or a gateway restart) first gets every event of the job it missed, or,
    when they are no longer kept (a coordinator restart, a long absence), an
    ``event: gap`` telling it to re-read the job, followed by the job as it is now."""
    fleet, hub, job_id = fleet_of(request).aio, request.app.state.hub, job.id
    async with hub.subscribe(frozenset({job_id})) as sub:
        after = _cursor(last_event_id)
        if after is not None:
            batch = await fleet.events(after, [job_id], 0)
            missed: list[JobEvent] = list(batch.events)
            if batch.gap:
                yield ServerSentEvent(raw_data=gap_message(job_id), event="gap", id=str(after))
                missed = [JobEvent.of(await fleet.get(job_id), EventType.STATUS, batch.last_seq)]
            elif not missed:  # nothing happened since: the job as it is, to go on from
                missed = [JobEvent.of(await fleet.get(job_id), EventType.STATUS, after)]
        else:  # the job as of subscribing, numbered so a reconnect goes on from here
            cursor = await fleet.event_cursor()
            missed = [JobEvent.of(await fleet.get(job_id), EventType.STATUS, cursor)]
        for event in missed:
            yield ServerSentEvent(raw_data=hub.rendered(event), event="job", id=str(event.seq))
        event, holder, quiet = missed[-1], identity_of(request), 0.0
        while not event.status.terminal:
            try:
                async with asyncio.timeout(REVOKED_CHECK_S):  # no task per wait (wait_for's)
                    next_event = await sub.queue.get()
            except TimeoutError:
                if not still_held(request, holder):
                    return  # its token was revoked: the stream ends
                quiet += REVOKED_CHECK_S
                if quiet >= SSE_KEEPALIVE_S:
                    quiet = 0.0
                    yield ServerSentEvent(comment="keep-alive")
                continue
            if not still_held(request, holder):
                return
            quiet = 0.0
            if next_event is None:  # a gap: re-read the job
                cursor = await fleet.event_cursor()
                next_event = JobEvent.of(await fleet.get(job_id), EventType.STATUS, cursor)
            elif next_event.seq <= event.seq:
                continue  # already sent (it happened before the stream's first event)
            event = next_event
            yield ServerSentEvent(raw_data=hub.rendered(event), event="job", id=str(event.seq))


def _cursor(last_event_id: str | None) -> int | None:
    """A ``Last-Event-ID`` as the event cursor it is; anything else is ignored."""
    if last_event_id is None or not last_event_id.strip().isdigit():
        return None
    return int(last_event_id.strip())


def gap_message(job_id: str) -> str:
    return json.dumps({
        "type": "gap", "job_id": job_id,
        "message": "some events of this job are no longer kept; re-read the job "
        "(its state follows)",
    })  # fmt: skip
