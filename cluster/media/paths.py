"""Where a job may read and write: paths resolved (symlinks too) inside the media roots."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from cluster.errors import ErrorCode, InputError, JobFailure, OutputError, SpecError

OVERWRITE_HINT = "allow overwriting to replace it (overwrite: true; --overwrite)"
NAME_MAX = 255
"""Bytes in one file or folder name (Linux filesystems)."""
PATH_MAX = 4096
"""Bytes in a whole path (Linux)."""


def check_lengths(path: Path, raw: str, *, what: str) -> None:
    """Refuse names the filesystem cannot hold, before anything touches them (they would
    make every later check fail with ENAMETOOLONG)."""
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            raise SpecError(
                f"{what} {raw[:80]!r}…: a name in it is {size} bytes; the filesystem allows "
                f"{NAME_MAX}; shorten it",
                code=ErrorCode.NAME_TOO_LONG,
            )
    size = len(os.fsencode(str(path)))
    if size >= PATH_MAX:
        raise SpecError(
            f"{what} {raw[:80]!r}…: the path is {size} bytes; the filesystem allows "
            f"{PATH_MAX - 1}; shorten it",
            code=ErrorCode.NAME_TOO_LONG,
        )


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve(raw: str, roots: tuple[Path, ...], *, what: str) -> Path:
    """``raw`` made absolute (relative to the first root) with symlinks resolved.

    With roots configured, the result must lie inside one of them.
    """
    path = Path(raw)  # no `~` expansion: a server's paths do not depend on its user's home
    if not path.is_absolute():
        if not roots:
            raise SpecError(f"{what} {raw!r} must be an absolute path")
        path = roots[0] / path
    check_lengths(path, raw, what=what)
    resolved = path.resolve(strict=False)
    check_lengths(resolved, raw, what=what)
    if roots and not _inside(resolved, tuple(r.resolve() for r in roots)):
        raise SpecError(
            f"{what} {raw!r} resolves outside the media roots "
            f"({', '.join(str(r) for r in roots)}); move the file under one of them"
        )
    return resolved


def check_output_file(path: Path, *, input_path: Path, overwrite: bool) -> None:
    """An output file may be written at ``path``: its folder exists and is writable."""
    if path == input_path:
        raise OutputError(f"output {path} is the input itself; choose another name")
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name such as {path}/out.mp4")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; {OVERWRITE_HINT}")
    _check_writable_folder(path.parent, create=False)


PACKAGE_MANIFESTS = ("master.m3u8", "manifest.mpd")


def check_package_folder(path: Path, *, input_path: Path, overwrite: bool) -> None:
    """A package may be published as the folder ``path``: nothing is there yet (or, with
    ``overwrite``, a package, replaced whole), it does not hold the input, and the folder
    it goes in exists."""
    if input_path == path or path in input_path.parents:
        raise OutputError(f"output {path} holds the input; give the package a folder of its own")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; {OVERWRITE_HINT}")
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {path} is a file; a package needs a folder name")
    if path.exists() and not any(
        (path / n).is_file() and not (path / n).is_symlink() for n in PACKAGE_MANIFESTS
    ):
        raise OutputError(
            f"{path} exists and is not a package (no {' or '.join(PACKAGE_MANIFESTS)}); "
            "overwrite replaces only a package: choose another folder"
        )
    _check_writable_folder(path.parent, create=False)


def check_output_folder(path: Path) -> None:
    """Files may be written in ``path`` (created when missing, below an existing folder)."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {path} is a file; thumbnails need a folder")
    _check_writable_folder(path, create=True)


def _check_writable_folder(folder: Path, *, create: bool) -> None:
    probe = folder
    while not probe.exists():
        if not create:
            raise OutputError(f"output folder {folder} does not exist; create it first")
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot write under {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {probe} (permission denied)")


# ---- at run time: open once, check what was opened -------------------------------------

_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def opened_path(fd: int) -> Path:
    """Where an open file really is (the kernel's account, after every link)."""
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def check_opened(fd: int, roots: tuple[Path, ...], *, what: str, shown: str) -> None:
    """What ``fd`` opened lies inside ``roots`` (none: anywhere), else a :class:`SpecError`."""
    if not roots:
        return
    real = opened_path(fd)
    if not _inside(real, tuple(Path(os.path.realpath(r)) for r in roots)):
        raise SpecError(
            f"{what} {shown} now leads outside the media roots (a link changed since the "
            "job was submitted); nothing was read or written there",
            code=ErrorCode.OUTSIDE_ROOTS,
        )


def open_input(path: str, roots: tuple[Path, ...]) -> int:
    """``path`` opened for reading, refusing a link in its last part and a file that is
    (now) outside ``roots``; the caller closes the descriptor."""
    try:
        fd = os.open(path, _OPEN_FILE)
    except OSError as exc:
        raise _open_error(exc, "input", path) from exc
    try:
        check_opened(fd, roots, what="input", shown=path)
        if not os.path.isfile(f"/proc/self/fd/{fd}"):
            raise SpecError(f"input {path} is not a regular file", code=ErrorCode.NOT_MEDIA)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_folder(path: str, roots: tuple[Path, ...], *, create: bool = False) -> int:
    """The folder ``path`` opened (made first, below its deepest existing folder, when
    ``create``), refusing links in the part made or opened and a folder outside ``roots``."""
    folder = Path(path)
    missing: list[str] = []
    while create and not os.path.lexists(folder) and folder != folder.parent:
        missing.insert(0, folder.name)
        folder = folder.parent
    try:
        fd = os.open(folder, _OPEN_DIR)
    except OSError as exc:
        raise _open_error(exc, "output folder", str(folder)) from exc
    try:
        check_opened(fd, roots, what="output folder", shown=str(folder))
        for name in missing:  # made inside what was checked, one level at a time
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=fd)
            child = os.open(name, _OPEN_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as exc:
        os.close(fd)
        raise _open_error(exc, "output folder", path) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_error(exc: OSError, what: str, path: str) -> JobFailure:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return SpecError(
            f"{what} {path} became a link since the job was submitted; refused",
            code=ErrorCode.OUTSIDE_ROOTS,
        )
    if what == "input":
        code = ErrorCode.INPUT_MISSING if exc.errno == errno.ENOENT else ErrorCode.UNREADABLE
        return InputError(f"{path}: cannot be opened ({exc.strerror})", code=code)
    return OutputError(f"{what} {path} cannot be opened ({exc.strerror})")
