"""What a job may ask for: checked before it is queued (and, by the CLI, before Ray starts)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cluster.errors import ErrorCode, SpecError
from cluster.media.argv import check_thumbnail_request
from cluster.media.encoders import CATALOG, Encoder, container_for
from cluster.media.paths import check_output_file, check_output_folder, resolve
from cluster.model.jobs import Hardware, JobKind, JobSpec


def check_spec(spec: JobSpec, encoders: tuple[Encoder, ...] | None) -> None:
    """Reject what cannot work whatever the files hold: container, codec, and (unless
    ``encoders`` is ``None``) an encoder that some node's ffmpeg has."""
    if spec.kind is JobKind.THUMBNAIL:
        check_thumbnail_request(spec.thumbnail_count, spec.thumbnail_width)
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


def admit(spec: JobSpec, roots: tuple[Path, ...], encoders: tuple[Encoder, ...] | None) -> JobSpec:
    """``spec`` with its paths resolved inside ``roots``, once everything checks out."""
    check_spec(spec, encoders)
    source = resolve(spec.input, roots, what="input")
    output: Path | None = None
    if spec.output is not None:
        output = resolve(spec.output, roots, what="output")
        if spec.kind is JobKind.TRANSCODE:
            check_output_file(output, input_path=source, overwrite=spec.overwrite)
        elif spec.kind is JobKind.THUMBNAIL:
            check_output_folder(output)
    return replace(spec, input=str(source), output=str(output) if output else None)


def confine(spec: JobSpec, roots: tuple[Path, ...]) -> JobSpec:
    """``spec`` with input and output resolved (after symlinks) inside ``roots``, or a
    :class:`SpecError` naming the rule. For a gateway that must not trust the coordinator
    it talks to to have been started with the same roots."""
    source = resolve(spec.input, roots, what="input")
    output = resolve(spec.output, roots, what="output") if spec.output is not None else None
    return replace(spec, input=str(source), output=str(output) if output else None)


def confine_path(raw: str, roots: tuple[Path, ...], what: str) -> Path:
    """One path resolved (after symlinks) inside ``roots``, or a :class:`SpecError`."""
    return resolve(raw, roots, what=what)
