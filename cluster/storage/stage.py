"""What a node moves for one attempt of a job whose input or outputs are in object
storage, or under a media root the node cannot see (:class:`StagePlan`), planned on the
head by :func:`localize`, which is pure.

Media in object storage move through the store; local media of a root the node does
not see move through Ray, from and to the agent of a node that sees it (the plan's
``peer``). The job's spec is rewritten to local paths in the attempt's scratch folder on the node
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
    """``(source, local path)`` to fetch before ffmpeg starts; the source is an ``s3://``
    URL, or a path (in root space) that ``peer`` serves."""
    push: tuple[tuple[str, str], ...] = ()
    """``(target, local folder or file)``: what to upload after, to an ``s3://`` prefix or
    object, or to a path ``peer`` writes; a thumbnail job's images are found by name in
    the local folder."""
    need_bytes: int = 0
    """Scratch this attempt reserves: the input plus an estimate of the outputs."""
    overwrite: bool = False
    peer: str | None = None
    """The node whose agent serves the paths in ``fetch`` and ``push`` (``None``: only
    URLs are moved)."""

    @property
    def tag(self) -> str:
        """The attempt (``<job>.<attempt>``, the folder's name): names partial files."""
        return posixpath.basename(self.folder)


def localize(
    spec: JobSpec,
    folder: str,
    store: ObjectStore,
    input_bytes: int | None,
    *,
    peer: str | None = None,
    beside: tuple[str, ...] = (),
    needs_input: bool = True,
) -> tuple[JobSpec, StagePlan | None]:
    """``spec`` with its ``s3://`` input and output (and, with a ``peer``, its local
    ones too) replaced by paths in ``folder``, and the plan that moves them; ``(spec,
    None)`` when nothing moves. ``beside``: objects (names beside an ``s3://`` output) to
    fetch next to the local output (a package's renditions); ``needs_input``: whether the
    command reads its input (a package without subtitles reads only its renditions)."""
    moves_in = is_object_url(spec.input) or peer is not None
    moves_out = spec.output is not None and (is_object_url(spec.output) or peer is not None)
    reference = spec.reference
    moves_ref = reference is not None and (is_object_url(reference) or peer is not None)
    if not moves_in and not moves_out and not moves_ref:
        return spec, None
    fetch: tuple[tuple[str, str], ...] = ()
    push: tuple[tuple[str, str], ...] = ()
    overwrite = spec.overwrite
    local_input, local_output = spec.input, spec.output
    size = input_bytes or 0
    if moves_in:
        source = _source(spec.input)
        local_input = posixpath.join(folder, "in", posixpath.basename(source))
        fetch = ((source, local_input),)
    if moves_ref and reference == spec.input:  # a probe: the input against itself
        reference = local_input
    elif moves_ref and reference is not None:  # a quality job's second input
        source = _source(reference)
        reference = posixpath.join(folder, "ref", posixpath.basename(source))
        fetch += ((source, reference),)
        size *= 2  # about as large as the input
    estimate = 0
    if moves_out and spec.output is not None:
        if spec.kind is JobKind.THUMBNAIL:
            local_output = posixpath.join(folder, "out")
            push = ((_target(spec.output, prefix=True), local_output),)
            estimate = MIN_OUTPUT_ESTIMATE
        elif spec.kind is JobKind.PACKAGE:  # a folder of files under a prefix
            target = _target(spec.output, prefix=True)
            local_output = posixpath.join(folder, "out", posixpath.basename(target))
            push = ((target, local_output),)
            estimate = max(size, MIN_OUTPUT_ESTIMATE)
            if is_object_url(spec.output):
                fetch += tuple((str(url), posixpath.join(folder, "out", url.name))
                               for url in beside_urls(spec.output, beside))  # fmt: skip
                estimate *= 2  # the renditions, then the package made of them
                # Its manifests were checked absent at submit, and are again before it
                # uploads: what else is under the prefix is an earlier attempt's.
                overwrite = True
        else:
            target = _target(spec.output, prefix=False)
            local_output = posixpath.join(folder, "out", posixpath.basename(target))
            push = ((target, local_output),)
            estimate = max(size, MIN_OUTPUT_ESTIMATE)  # a transcode rarely outgrows its source
    if spec.kind is JobKind.PACKAGE and not needs_input and beside and is_object_url(spec.input):
        # The master stays put: the package reads only its renditions (one stands in as
        # the input the node opens).
        fetch, moves_in = tuple(f for f in fetch if f[1] != local_input), False
        beside_local = posixpath.dirname(local_output or "")
        local_input = posixpath.join(beside_local, beside[0])
        if not fetch and not push:
            return replace(spec, input=local_input), None
    need = (size if moves_in or moves_ref else 0) + estimate
    local = replace(spec, input=local_input, output=local_output, reference=reference)
    return local, StagePlan(folder, store, fetch, push, need, overwrite, peer)


def beside_urls(output: str, names: tuple[str, ...]) -> list[ObjectURL]:
    """The objects called ``names`` beside the ``s3://`` output ``output``."""
    target = parse_object_url(output, what="output", prefix=True)
    parent = parse_object_url(posixpath.dirname(str(target)), what="output", prefix=True)
    return [parent.child(name) for name in names]


def _source(raw: str) -> str:
    return str(parse_object_url(raw, what="input")) if is_object_url(raw) else raw


def _target(raw: str, *, prefix: bool) -> str:
    if is_object_url(raw):
        return str(parse_object_url(raw, what="output", prefix=prefix))
    return raw.rstrip("/") if prefix else raw


def pushed_target(plan: StagePlan, local: str) -> str | None:
    """Where the local output ``local`` goes, an ``s3://`` URL or a path the peer writes
    (``None``: it stays where it is)."""
    for target, source in plan.push:
        if local == source:
            return target
        if local.startswith(source + "/"):
            child = local[len(source) + 1 :]
            if is_object_url(target):
                return str(parse_object_url(target, what="output", prefix=True).child(child))
            return posixpath.join(target, child)
    return None
