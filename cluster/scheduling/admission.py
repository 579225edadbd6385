"""What a job may ask for, whatever the files hold: checked before it is queued (and, by
the CLI, before Ray starts). Pure: where its paths resolve and whether its output may be
written are the filesystem's (:mod:`cluster.media.confine`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cluster.errors import ErrorCode, JobFailure, SpecError
from cluster.media.argv import check_thumbnail_request
from cluster.media.encoders import CATALOG, Encoder, container_for
from cluster.model.jobs import Hardware, JobKind, JobSpec
from cluster.model.spec import check_labels

T = TypeVar("T")
MAX_SPEC_BYTES = 16 * 1024
"""A job's spec as JSON, at most: a full ladder, paths and labels fit many times over."""


def check_spec(spec: JobSpec, encoders: tuple[Encoder, ...] | None) -> None:
    """Reject what cannot work whatever the files hold: a spec too big to keep, container,
    codec, and (unless ``encoders`` is ``None``) an encoder that some node's ffmpeg has."""
    check_labels(spec.labels)
    size = len(json.dumps(spec.to_dict(), separators=(",", ":")))
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"the job's spec is {size} bytes of JSON; at most {MAX_SPEC_BYTES} are kept "
            "(shorten its labels, ladder or paths)"
        )
    if spec.kind is JobKind.THUMBNAIL:
        check_thumbnail_request(spec.thumbnail_count, spec.thumbnail_width)
    if spec.kind is JobKind.PACKAGE:
        _check_package(spec, encoders)
    if spec.kind is not JobKind.TRANSCODE:
        return
    if spec.output is None:
        raise SpecError("a transcode needs an output file (-o)")
    container = container_for(spec.output)
    if spec.codec not in container.video_codecs:
        raise SpecError(
            f".{container.ext} cannot hold {spec.codec} video; use --codec "
            f"{' or '.join(sorted(container.video_codecs))} or another extension"
        )
    if encoders is not None:
        check_encoder(spec.codec, spec.hardware, encoders)


def _check_package(spec: JobSpec, encoders: tuple[Encoder, ...] | None) -> None:
    if spec.output is None or spec.package is None:
        raise SpecError("a package needs an output folder (-o)")
    if encoders is not None:
        codecs = {r.codec for r in spec.package.ladder} or set(spec.package.codecs)
        for codec in sorted(codecs):
            check_encoder(codec, spec.hardware, encoders)


def check_metrics(spec: JobSpec, metrics: frozenset[str] | None) -> None:
    """Some node computes every metric ``spec`` is scored with (``metrics``: what the
    nodes' quality ffmpegs compute; ``None``: not known yet, judged at placement)."""
    target = spec.target
    asked = [
        *(spec.score.metrics if spec.score else ()),
        *([target.metric.value] if target else []),
    ]
    if not asked or metrics is None:
        return
    missing = [m for m in dict.fromkeys(asked) if m not in metrics]
    if missing:
        has = ", ".join(sorted(metrics)) or "none"
        raise SpecError(
            f"no node in the cluster computes {', '.join(missing)} (they compute: {has}); "
            "drop the metric, or start a node with framefleet's pinned static ffmpeg "
            "(imageio-ffmpeg) or an ffmpeg built with libvmaf",
            code=ErrorCode.METRIC_MISSING,
        )


def check_encoder(codec: str, hardware: Hardware, encoders: tuple[Encoder, ...]) -> None:
    """Some ffmpeg in the cluster (``encoders``: the union of the nodes' builds) can encode
    ``codec`` on ``hardware`` (``auto``: either), or a :class:`SpecError` naming it."""
    wanted = [e for e in CATALOG if e.codec == codec]
    if hardware is not Hardware.AUTO:
        wanted = [e for e in wanted if e.hardware is hardware]
    names = {e.name for e in encoders}
    if any(e.name in names for e in wanted):
        return
    missing = " or ".join(e.name for e in wanted)
    raise SpecError(
        f"no node in the cluster has an ffmpeg with {missing} ({codec}, --hardware "
        f"{hardware}); start a node whose ffmpeg has it (framefleet node start --ffmpeg "
        "PATH), or choose another codec or hardware",
        code=ErrorCode.ENCODER_MISSING,
    )


def check_callback(url: str | None, hosts: tuple[str, ...]) -> None:
    """A job's ``callback_url`` names an allowed host (``name``: any port; ``name:port``:
    that port), or a :class:`SpecError` naming the rule. Webhooks go only where an
    operator said, so a job cannot make the farm call into its own network."""
    if url is None:
        return
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise SpecError(
            f"callback_url {url!r} has a bad port", code=ErrorCode.CALLBACK_REFUSED
        ) from None
    allowed = {h.lower() for h in hosts}
    if host in allowed or f"{host}:{port}" in allowed:
        return
    if not hosts:
        raise SpecError(
            "webhooks are off on this farm: an operator lists the receivers' hosts in "
            "FRAMEFLEET_WEBHOOK_HOSTS; drop callback_url",
            code=ErrorCode.CALLBACK_REFUSED,
        )
    raise SpecError(
        f"callback_url host {host}:{port} is not allowed; use one of {', '.join(hosts)} "
        "(FRAMEFLEET_WEBHOOK_HOSTS)",
        code=ErrorCode.CALLBACK_REFUSED,
    )


def numbered(i: int, specs: list[JobSpec], batch: bool, check: Callable[..., T], *args: Any) -> T:
    """``check(*args)`` for ``specs[i]``; in a batch, a refusal names the job it is about
    (``job 3 of 10: ...``), keeping its code."""
    try:
        return check(*args)
    except JobFailure as exc:
        if not batch:
            raise
        raise type(exc)(f"job {i + 1} of {len(specs)}: {exc}", code=exc.code) from exc


def refuse_shared_outputs(specs: list[JobSpec]) -> None:
    """Two transcodes of one batch writing one file would both encode in full, then one
    would fail: refuse the batch instead (``specs`` confined, so one file has one name)."""
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs, start=1):
        if spec.kind is not JobKind.TRANSCODE or spec.output is None:
            continue
        if spec.output in seen:
            raise SpecError(
                f"jobs {seen[spec.output]} and {i} of {len(specs)} both write {spec.output}; "
                "give each input its own output",
                code=ErrorCode.DUPLICATE_OUTPUT,
            )
        seen[spec.output] = i
