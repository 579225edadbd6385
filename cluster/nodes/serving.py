"""A node's media, served to nodes that cannot see them: the agent's half of moving a job's
local input and outputs through Ray.

Each node agent owns one :class:`MediaServer`. It knows which media roots the node sees
(:func:`~cluster.storage.roots.look`, refreshed every :data:`SIGHT_S`) and where, and
answers, for a node that runs a job whose media it cannot see:

- :meth:`MediaServer.read`: one bounded chunk (at most :data:`CHUNK_MAX` bytes) of a
  file, with its CRC-32 and the file's size and modification time (the reader checks
  every chunk, and that the file did not change under it);
- :meth:`MediaServer.open_upload`, :meth:`~MediaServer.write`,
  :meth:`~MediaServer.commit`, :meth:`~MediaServer.abort`: an output written chunk by
  chunk (each checked against its CRC-32) to a hidden partial file beside its
  destination, renamed into place only when whole, never over an existing file unless
  the job allows it. An upload left idle for :data:`UPLOAD_IDLE_S` (its encoder died) is
  removed by :meth:`MediaServer.sweep`.

Paths arrive in root space and are confined to the roots this node sees, with the
same checks as an encoder's own files (:mod:`cluster.media.paths`): a link in the last
part, or a file that resolves outside the roots, is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cluster.errors import ErrorCode, OutputError, SpecError, TransferError
from cluster.media.argv import partial_path
from cluster.media.paths import OVERWRITE_HINT, check_opened, open_folder, open_input
from cluster.media.pinned import exists_in
from cluster.media.probe import probe_async
from cluster.media.runner import remove_stale_partials
from cluster.media.split import index_file
from cluster.model.media import MediaInfo
from cluster.model.split import FrameIndex
from cluster.storage.roots import Pairs, Sight, look, to_node

log = logging.getLogger("framefleet.agent")

CHUNK_MAX = 32 * 1024 * 1024
SIGHT_S = 10.0
"""How long a look at the roots is trusted (mounts come and go)."""
LOOK_TIMEOUT_S = 5.0
"""A hung mount must not hang the agent: a look that takes longer sees nothing."""
UPLOAD_IDLE_S = 120.0


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(slots=True)
class _Upload:
    folder_fd: int
    folder: str
    partial: str
    final: str
    fd: int
    overwrite: bool
    touched: float
    roots: tuple[Path, ...]


class MediaServer:
    def __init__(self, media_map: Pairs = (), *, no_media: bool = False) -> None:
        self.media_map = media_map
        self.no_media = no_media
        self._known: dict[tuple[str, str], tuple[Sight, float]] = {}
        """(root, identity) -> how this node saw it, and when (monotonic)."""
        self._uploads: dict[str, _Upload] = {}
        self._serial = 0

    # ---- which roots this node sees -------------------------------------------------

    async def look(self, roots: Pairs) -> tuple[Sight, ...]:
        """Whether this node sees each of ``roots`` (``(root, identity)``), at most
        :data:`SIGHT_S` old."""
        now = time.monotonic()
        stale = tuple(
            (root, identity)
            for root, identity in roots
            if (root, identity) not in self._known
            or now - self._known[(root, identity)][1] >= SIGHT_S
        )
        if stale:
            try:
                sights = await asyncio.wait_for(
                    asyncio.to_thread(look, stale, self.media_map, no_media=self.no_media),
                    LOOK_TIMEOUT_S,
                )
            except TimeoutError:
                why = f"looking for the roots took over {LOOK_TIMEOUT_S:g} s (a hung mount?)"
                sights = tuple(Sight(r, to_node(r, self.media_map), False, why) for r, _ in stale)
            for pair, sight in zip(stale, sights, strict=True):
                self._known[pair] = (sight, now)
        return tuple(self._known[pair][0] for pair in roots)

    def _local(self, path: str, what: str) -> tuple[str, tuple[Path, ...]]:
        """``path`` (root space) on this node, and the roots it must stay inside."""
        seen = [s for s, _ in self._known.values() if s.seen]
        for s in sorted(seen, key=lambda s: -len(s.root)):
            if path == s.root or path.startswith(s.root.rstrip("/") + "/"):
                return to_node(path, ((s.root, s.path),)), tuple(Path(x.path) for x in seen)
        raise SpecError(
            f"{what} {path} is not under a media root this node sees", code=ErrorCode.OUTSIDE_ROOTS
        )

    # ---- reading --------------------------------------------------------------------

    async def read(self, path: str, offset: int, size: int) -> dict[str, Any]:
        """Up to ``size`` bytes of ``path`` from ``offset``: ``data``, ``crc32``, and the
        file's ``size`` and ``mtime_ns``."""
        local, roots = self._local(path, "input")
        return await asyncio.to_thread(_read, local, roots, offset, min(size, CHUNK_MAX))

    async def probe(self, path: str) -> MediaInfo:
        """ffprobe of ``path`` where this node sees it (its path shown in root space)."""
        local, roots = self._local(path, "input")
        media = await probe_async(local, roots)
        return media if local == path else _renamed(media, path)

    async def index(self, path: str, video_index: int, audio_index: int | None) -> FrameIndex:
        """Every frame's time in ``path`` where this node sees it (to split it)."""
        local, roots = self._local(path, "input")
        return await index_file(local, roots, video_index, audio_index)

    async def remove_partials(self, folder: str, job_id: str, tasks: bool = False) -> None:
        """Remove what a dead attempt of ``job_id`` left half-written in ``folder`` (with
        ``tasks``: every file its job graph's tasks made)."""
        local, _ = self._local(folder, "output folder")
        await asyncio.to_thread(remove_stale_partials, Path(local), job_id, tasks=tasks)

    # ---- writing --------------------------------------------------------------------

    async def open_upload(
        self, final: str, tag: str, *, overwrite: bool, make_folder: bool = False
    ) -> str:
        """Start writing ``final`` (root space) for the attempt ``tag``; an upload id."""
        local, roots = self._local(final, "output")
        return await asyncio.to_thread(self._open, local, roots, tag, overwrite, make_folder)

    def _open(
        self, local: str, roots: tuple[Path, ...], tag: str, overwrite: bool, make: bool
    ) -> str:
        folder = os.path.dirname(local)
        folder_fd = open_folder(folder, roots, create=make)
        name = os.path.basename(local)
        if not overwrite and exists_in(name, folder_fd):
            os.close(folder_fd)
            raise OutputError(f"{local} already exists; {OVERWRITE_HINT}")
        partial = os.path.basename(partial_path(local, tag))
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(partial, flags, 0o644, dir_fd=folder_fd)
        except OSError as exc:
            os.close(folder_fd)
            raise OutputError(f"cannot write in {folder} ({exc.strerror})") from exc
        self._serial += 1
        upload = f"{tag}:{self._serial}"
        self._uploads[upload] = _Upload(folder_fd, folder, partial, name, fd, overwrite,
                                        time.monotonic(), roots)  # fmt: skip
        return upload

    async def write(self, upload: str, offset: int, data: bytes, crc: int) -> None:
        up = self._upload(upload)
        if crc32(data) != crc:
            raise TransferError(f"a chunk of {up.final} arrived damaged (CRC-32 mismatch)")
        await asyncio.to_thread(os.pwrite, up.fd, data, offset)
        up.touched = time.monotonic()

    async def commit(self, upload: str, size: int) -> None:
        """Rename the upload into place once it holds ``size`` bytes (else it is dropped)."""
        up = self._upload(upload)
        try:
            await asyncio.to_thread(self._commit, up, size)
        finally:
            self._drop(upload)

    def _commit(self, up: _Upload, size: int) -> None:
        os.fsync(up.fd)
        got = os.fstat(up.fd).st_size
        if got != size:
            raise TransferError(f"{up.final}: {got} of {size} bytes arrived; not kept")
        check_opened(up.folder_fd, up.roots, what="output folder", shown=up.folder)
        if not up.overwrite and exists_in(up.final, up.folder_fd):
            raise OutputError(f"{up.folder}/{up.final} already exists; {OVERWRITE_HINT}")
        os.replace(up.partial, up.final, src_dir_fd=up.folder_fd, dst_dir_fd=up.folder_fd)
        up.partial = ""  # nothing left to remove

    async def abort(self, upload: str) -> None:
        if upload in self._uploads:
            self._drop(upload)

    def sweep(self, now: float | None = None) -> list[str]:
        """Drop uploads idle for :data:`UPLOAD_IDLE_S` (their encoder died); their ids."""
        now = time.monotonic() if now is None else now
        stale = [k for k, up in self._uploads.items() if now - up.touched > UPLOAD_IDLE_S]
        for upload in stale:
            log.warning("dropping the idle upload of %s/%s", self._uploads[upload].folder,
                        self._uploads[upload].final)  # fmt: skip
            self._drop(upload)
        return stale

    def _upload(self, upload: str) -> _Upload:
        up = self._uploads.get(upload)
        if up is None:
            raise TransferError(f"upload {upload} is not open here (dropped after idling?)")
        return up

    def _drop(self, upload: str) -> None:
        up = self._uploads.pop(upload)
        if up.partial:
            with contextlib.suppress(OSError):
                os.unlink(up.partial, dir_fd=up.folder_fd)
        for fd in (up.fd, up.folder_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _read(local: str, roots: tuple[Path, ...], offset: int, size: int) -> dict[str, Any]:
    fd = open_input(local, roots)
    try:
        st = os.fstat(fd)
        data = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    return {"data": data, "crc32": crc32(data), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _renamed(media: MediaInfo, path: str) -> MediaInfo:
    return replace(media, path=path)
