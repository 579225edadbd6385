"""``/v1/jobs/{id}/package/{path}``: the files of a finished package, for players.

A succeeded ``package`` job's published folder (``result["output"]``) is served file by
file, with byte ranges, to whoever may read the job: a bearer token, or the status page's
session cookie (so a player in the page never puts a token in a URL). Nothing else is:

- the job must be a ``package`` job that succeeded, and its folder inside the gateway's
  media roots (the kernel's account of what was opened, after every link);
- ``path`` is a playlist, an MPD, an init or media segment or a WebVTT file (by its
  suffix), named by plain parts: no ``..``, ``.``, empty or absolute part;
- it is opened one part at a time below the opened folder, refusing every link (a
  package holds none: the packager writes plain files), so no link, even one swapped in
  while the request runs, leads a read outside the package.

Anything refused is the same 404, whether the file is absent or forbidden.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send

from api.gateway.auth import VIEWER, caller_of
from cluster import ErrorCode, FramefleetError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".mp4": "video/mp4",
    ".m4s": "video/mp4",
    ".vtt": "text/vtt; charset=utf-8",
}
"""What a package holds, by suffix; any other file is not served."""
FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Opened on its own (not by a player), a file is inert: no script, no subresource.
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
    # A package may be replaced (overwrite): revalidate (ETag, Last-Modified) each time.
    "Cache-Control": "private, no-cache",
}
MAX_PARTS = 4
"""A package's files are at most a folder deep (``v360h264/seg_00001.m4s``)."""
NAME_MAX = 255

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _missing(message: str) -> FramefleetError:
    return FramefleetError(message, code=ErrorCode.NOT_FOUND)


def package_folder(job: dict[str, Any]) -> str:
    """The published folder of a job (as ``GET /v1/jobs/{id}`` shows it), or a 404 saying
    why it has none to serve."""
    if job.get("kind") != "package":
        raise _missing(f"job {job['id']} is a {job.get('kind')} job; only a package is served")
    if job.get("status") != "succeeded":
        raise _missing(
            f"job {job['id']} is {job.get('status')}; its package is served once it succeeded"
        )
    output = (job.get("result") or {}).get("output")
    if not isinstance(output, str) or not os.path.isabs(output):
        raise _missing(f"job {job['id']} has no package folder on this gateway's filesystem")
    return output


def _plain(name: str) -> bool:
    return name not in ("", ".", "..") and "\x00" not in name and len(name.encode()) <= NAME_MAX


def _parts(path: str) -> list[str]:
    """``path``'s names, each plain, naming a kind of file a package holds."""
    parts = path.split("/")
    suffix = os.path.splitext(parts[-1])[1]
    if len(parts) > MAX_PARTS or not all(map(_plain, parts)) or suffix not in CONTENT_TYPES:
        raise ValueError(path)
    return parts


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def open_in_package(folder: str, path: str, roots: tuple[Path, ...]) -> int:
    """``path`` opened for reading below ``folder`` without following any link (see the
    module docstring); the caller closes the descriptor. ``ValueError`` or ``OSError``
    when it is not a plain file of the package."""
    parts = _parts(path)
    fd = os.open(folder, _OPEN_DIR)
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if real != Path(folder) or not _inside(real, roots):
            raise OSError(errno.EXDEV, "the package folder is not where the job put it")
        for name in parts[:-1]:
            child = os.open(name, _OPEN_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        found = os.open(parts[-1], _OPEN_FILE, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(found).st_mode):  # a FIFO, socket or device: not a package's
        os.close(found)
        raise OSError(errno.EINVAL, "not a plain file")
    return found


class OpenedFile(FileResponse):
    """A :class:`FileResponse` (ranges, ETag, Last-Modified) of a file already opened and
    checked: read again through ``/proc/self/fd``, never by its name, and closed once
    answered (or once the client left)."""

    def __init__(self, fd: int, *, media_type: str, headers: dict[str, str]) -> None:
        self.fd = fd
        super().__init__(f"/proc/self/fd/{fd}", media_type=media_type, headers=headers,
                         stat_result=os.fstat(fd))  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A server's own file sending (ASGI pathsend) would open the path after we close it.
        extensions = {k: v for k, v in scope.get("extensions", {}).items()
                      if k != "http.response.pathsend"}  # fmt: skip
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            os.close(self.fd)


@router.get(
    "/{job_id}/package/{path:path}",
    dependencies=[VIEWER],
    response_class=FileResponse,
    responses={
        200: {"content": {t: {} for t in sorted(set(CONTENT_TYPES.values()))}},
        206: {"description": "The byte range asked for (``Range: bytes=…``)."},
    },
)
async def package_file(job_id: str, path: str, request: Request) -> OpenedFile:
    """A file of a succeeded package job (``master.m3u8``, ``manifest.mpd``,
    ``v360h264/seg_00001.m4s``…), with byte ranges; relative URIs in the playlists and the
    MPD resolve here too. A path outside the package, through a link, or of another kind
    of file, and a job that is not a finished package, are 404."""
    app = request.app
    body = await app.state.hub.cache.read(job_id, app.state.fleet.aio.get, caller_of(request))
    job = json.loads(body)
    folder = package_folder(job)
    roots: tuple[Path, ...] = app.state.settings.roots(serving=True)
    try:
        fd = await run_in_threadpool(open_in_package, folder, path, roots)
    except (OSError, ValueError) as exc:
        shown = path if len(path) <= 200 else f"{path[:200]}…"
        raise _missing(f"no file {shown!r} in the package of job {job['id']}") from exc
    suffix = os.path.splitext(path)[1]
    return OpenedFile(fd, media_type=CONTENT_TYPES[suffix], headers=FILE_HEADERS)
