"""What a node moves for one attempt of a job whose input or outputs are in object
storage (:class:`StagePlan`), planned on the head by :func:`localize`, which is pure.

The job's spec is rewritten to local paths in the attempt's scratch folder on the node
(``<scratch>/<job>.<attempt>``): the input is fetched to ``in/<its name>``, outputs are
written under ``out/`` and uploaded to their URLs once ffmpeg and the checks have
passed. ffmpeg itself only ever sees local files, through the same pinned descriptors
as any job.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from cluster.model.jobs import JobKind, JobSpec
from cluster.storage.objects import ObjectStore
from cluster.storage.urls import ObjectURL, is_object_url, parse_object_url

MIN_OUTPUT_ESTIMATE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StagePlan:
    folder: str
    """The attempt's scratch folder on its node."""
    store: ObjectStore
    fetch: tuple[tuple[str, str], ...] = ()
    """``(s3 URL, local path)`` to download before ffmpeg starts."""
    push: tuple[tuple[str, str], ...] = ()
    """``(s3 URL prefix or object, local folder or file)``: what to upload after; a
    thumbnail job's images are found by name in the local folder."""
    need_bytes: int = 0
    """Scratch this attempt reserves: the input plus an estimate of the outputs."""
    overwrite: bool = False


def localize(
    spec: JobSpec, folder: str, store: ObjectStore, input_bytes: int | None
) -> tuple[JobSpec, StagePlan | None]:
    """``spec`` with its ``s3://`` input and output replaced by paths in ``folder``, and
    the plan that moves them; ``(spec, None)`` when it names no URL."""
    if not is_object_url(spec.input) and not is_object_url(spec.output):
        return spec, None
    fetch: tuple[tuple[str, str], ...] = ()
    push: tuple[tuple[str, str], ...] = ()
    local_input, local_output = spec.input, spec.output
    size = input_bytes or 0
    if is_object_url(spec.input):
        url = parse_object_url(spec.input, what="input")
        local_input = posixpath.join(folder, "in", url.name)
        fetch = ((str(url), local_input),)
    estimate = 0
    if spec.output is not None and is_object_url(spec.output):
        if spec.kind is JobKind.THUMBNAIL:
            prefix = parse_object_url(spec.output, what="output", prefix=True)
            local_output = posixpath.join(folder, "out")
            push = ((str(prefix), local_output),)
            estimate = MIN_OUTPUT_ESTIMATE
        else:
            url = parse_object_url(spec.output, what="output")
            local_output = posixpath.join(folder, "out", url.name)
            push = ((str(url), local_output),)
            estimate = max(size, MIN_OUTPUT_ESTIMATE)  # a transcode rarely outgrows its source
    need = (size if fetch else 0) + estimate
    local = replace(spec, input=local_input, output=local_output)
    return local, StagePlan(folder, store, fetch, push, need, spec.overwrite)


def pushed_url(plan: StagePlan, local: str) -> ObjectURL | None:
    """Where the local output ``local`` goes (``None``: it stays where it is)."""
    for target, source in plan.push:
        if local == source:
            return parse_object_url(target, what="output")
        if local.startswith(source + "/"):
            prefix = parse_object_url(target, what="output", prefix=True)
            return prefix.child(local[len(source) + 1 :])
    return None
