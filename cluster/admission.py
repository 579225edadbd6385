"""What a job may ask for: checked before it is queued (and, by the CLI, before Ray starts)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cluster.encoders import Encoder, choose_encoder, container_for
from cluster.errors import SpecError
from cluster.jobs import JobKind, JobSpec
from cluster.paths import check_output_file, check_output_folder, resolve


def check_spec(spec: JobSpec, encoders: tuple[Encoder, ...]) -> None:
    """Reject what cannot work whatever the files hold: container, codec, encoder."""
    if spec.kind is not JobKind.TRANSCODE:
        return
    assert spec.output is not None
    container = container_for(spec.output)
    if spec.codec not in container.video_codecs:
        raise SpecError(
            f".{container.ext} cannot hold {spec.codec} video; use --codec "
            f"{' or '.join(sorted(container.video_codecs))} or another extension"
        )
    choose_encoder(spec.codec, spec.hardware, encoders)


def admit(spec: JobSpec, roots: tuple[Path, ...], encoders: tuple[Encoder, ...]) -> JobSpec:
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
