"""Where a job's media may be: its paths resolved (after symlinks) inside the media roots
and its URLs inside the object roots, and its destination checked, on the filesystem of
the machine that admits it. What a job may ask for whatever the files hold is
:mod:`cluster.scheduling.admission`'s (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cluster.errors import ErrorCode, OutputError, SpecError
from cluster.media.paths import (
    check_output_file,
    check_output_folder,
    check_package_folder,
    resolve,
)
from cluster.model.jobs import JobKind, JobSpec
from cluster.storage.urls import (
    ObjectURL,
    confine_object,
    is_object_url,
    is_url,
    parse_object_url,
)


def confine(spec: JobSpec, roots: tuple[Path, ...], objects: tuple[ObjectURL, ...] = ()) -> JobSpec:
    """``spec`` with input and output resolved (after symlinks) inside ``roots``, or, as
    ``s3://`` URLs, inside ``objects``; else a :class:`SpecError` naming the rule. The one
    place a job's paths and URLs are checked."""
    folder = spec.kind in (JobKind.THUMBNAIL, JobKind.PACKAGE)
    source = _confined(spec.input, roots, objects, what="input")
    output = None
    if spec.output is not None:
        output = _confined(spec.output, roots, objects, what="output", prefix=folder)
    if output is not None and output == source and is_object_url(output):
        raise OutputError(f"output {output} is the input itself; choose another name")
    if spec.kind is JobKind.PACKAGE and output is not None:
        _below_a_root(output, roots, objects)
    reference = None
    if spec.reference is not None:
        reference = _confined(spec.reference, roots, objects, what="reference")
    return replace(spec, input=source, output=output, reference=reference)


def _below_a_root(output: str, roots: tuple[Path, ...], objects: tuple[ObjectURL, ...]) -> None:
    """A package is a folder of its own below a root, never a root itself (its renditions
    are made beside it, inside the root)."""
    if is_url(output):
        url = parse_object_url(output, what="output", prefix=True)
        top = not url.key or any(url == root for root in objects)
    else:
        top = Path(output) in {r.resolve() for r in roots} or Path(output) == Path(output).parent
    if top:
        raise SpecError(
            f"output {output} is a media root; give the package a folder inside it "
            f"({output.rstrip('/')}/show)",
            code=ErrorCode.OUTSIDE_ROOTS,
        )


def _confined(
    raw: str,
    roots: tuple[Path, ...],
    objects: tuple[ObjectURL, ...],
    *,
    what: str,
    prefix: bool = False,
) -> str:
    if is_url(raw):
        return str(confine_object(raw, objects, what=what, prefix=prefix))
    if objects and not roots:
        raise SpecError(
            f"{what} {raw[:120]!r}: this farm keeps media in object storage only "
            f"({', '.join(map(str, objects))}); give an s3:// URL",
            code=ErrorCode.OUTSIDE_ROOTS,
        )
    return str(resolve(raw, roots, what=what))


def confine_path(raw: str, roots: tuple[Path, ...], what: str) -> Path:
    """One path resolved (after symlinks) inside ``roots``, or a :class:`SpecError`."""
    return resolve(raw, roots, what=what)


def check_destination(spec: JobSpec, where: Callable[[str], str | None] = lambda p: p) -> None:
    """Whether a :func:`confine` d spec may write where it writes, as ``where`` (path ->
    where this machine sees it; ``None``: it does not, and the node that runs the job
    checks it, as it always does, before ffmpeg starts) says."""
    if spec.output is None or is_object_url(spec.output):
        return  # an object that exists is refused by the coordinator (a HEAD), not here
    output = where(spec.output)
    if output is None:
        return
    if spec.kind is JobKind.TRANSCODE:
        source = Path(where(spec.input) or spec.input)
        check_output_file(Path(output), input_path=source, overwrite=spec.overwrite)
    elif spec.kind is JobKind.THUMBNAIL:
        check_output_folder(Path(output))
    elif spec.kind is JobKind.PACKAGE:
        source = Path(where(spec.input) or spec.input)
        check_package_folder(Path(output), input_path=source, overwrite=spec.overwrite)
