"""Running ffprobe on an input, safely: the input whitelist every ffmpeg input gets, the
file checks and the one-line errors; :func:`probe` (blocking) and :func:`probe_async`
(for the coordinator's event loop). The result is parsed by :mod:`cluster.media.info`.

An object in storage is probed where it is (:func:`probe_object_async`): ffprobe reads
a short-lived presigned URL with HTTP range requests, a few small reads (the header,
the index) rather than a download. That input alone may use the network protocols, and
its demuxers are the same whitelist.

Two short reads may follow ffprobe's (:mod:`cluster.media.looks`), through the same
open file (or link) and whitelist, each bounded in time: ``idet`` on the first frames of
a video whose tag may hide interlacing or telecine, and the first frame's side data of an
HDR video. An ordinary progressive SDR file gets neither. Their failure fails nothing:
the probe stands, its scan as tagged, and a warning says why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cluster.errors import EncodeError, ErrorCode, InputError, ToolMissing
from cluster.media.info import parse_probe
from cluster.media.looks import IDET, Look, looks, read_look
from cluster.media.paths import open_input
from cluster.model.media import MediaInfo, VideoStream
from cluster.storage import objects
from cluster.storage.objects import ObjectHead, ObjectStore
from cluster.storage.urls import ObjectURL

log = logging.getLogger("framefleet.probe")
PROBE_TIMEOUT_S = 60.0
INPUT_FORMATS = (
    "mov", "mp4", "matroska", "webm", "avi", "mpegts", "mxf", "flv", "ogg", "mpeg", "asf",
    "yuv4mpegpipe", "ivf", "h264", "hevc", "gif", "wav", "mp3", "aac", "flac",
)  # fmt: skip
"""The demuxers an input may be read with (``-format_whitelist``): media containers that
read only the file they are given. Playlists and lists of files (hls, dash, concat,
image2 patterns...) would open other files, wherever they are, so they are refused."""
FORMAT_WHITELIST = ",".join(INPUT_FORMATS)
INPUT_OPTIONS = ("-protocol_whitelist", "file,pipe", "-format_whitelist", FORMAT_WHITELIST)
"""What every ffprobe and ffmpeg input gets before its ``file:`` path."""
URL_INPUT_OPTIONS = (
    "-protocol_whitelist", "https,http,tls,tcp", "-format_whitelist", FORMAT_WHITELIST,
    "-rw_timeout", "30000000",
)  # fmt: skip
"""What ffprobe gets before a presigned object URL (which framefleet made, never a user)."""
_REFUSED_FORMAT = re.compile(r"\[(\w+) @ [^\]]*\] Format not on whitelist")
_ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"})


def probe_argv(path: str | os.PathLike[str], *, link: str | None = None) -> list[str]:
    """ffprobe's argv for ``path``, always through the file protocol; or for ``link``, a
    presigned object URL, through HTTP(S) alone."""
    source = [*URL_INPUT_OPTIONS, link] if link else [*INPUT_OPTIONS, f"file:{os.fspath(path)}"]
    return ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
            *source]  # fmt: skip


def _check_readable(path: Path) -> None:
    """Refuse what is not a readable, non-empty file, in one line (never an ``OSError``)."""
    try:
        _check_file(path)
    except OSError as exc:
        raise InputError(
            f"{path.name[:80] or path}: cannot be read ({exc.strerror or exc})",
            code=ErrorCode.UNREADABLE,
        ) from exc


def _check_file(path: Path) -> None:
    name = path.name or str(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path", code=ErrorCode.INPUT_MISSING)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a media file", code=ErrorCode.NOT_MEDIA)
    if not os.access(path, os.R_OK):
        raise InputError(f"{name}: cannot be read (permission denied)", code=ErrorCode.UNREADABLE)
    if path.stat().st_size == 0:
        raise InputError(f"{name}: the file is empty (0 bytes)", code=ErrorCode.NOT_MEDIA)


def _looks_like_iso_media(path: Path) -> bool:
    """Whether the file starts like an MP4/MOV (an ISO base media box)."""
    if not path.is_absolute():  # an object's name: nothing local to look at
        return False
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] in _ISO_BOXES


def refused_format(name: str, stderr: str) -> InputError | None:
    """The error for an input whose format is not on the whitelist (a playlist...)."""
    match = _REFUSED_FORMAT.search(stderr)
    if match is None:
        return None
    return InputError(
        f"{name}: a {match.group(1)} file (a playlist or list of other files) is refused; "
        "give the media file itself",
        code=ErrorCode.FORMAT_REFUSED,
    )


def _probe_error(path: Path, stderr: str) -> InputError:
    refused = refused_format(path.name, stderr)
    if refused is not None:
        return refused
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = lines[-1] if lines else "ffprobe failed"
    if "moov atom not found" in stderr and _looks_like_iso_media(path):
        return InputError(
            f"{path.name}: truncated or incomplete file (moov atom not found); "
            "copy or export it again",
            code=ErrorCode.TRUNCATED,
        )
    named_iso = path.suffix.lower() in (".mp4", ".mov", ".m4v", ".m4a", ".3gp")
    if "moov atom not found" in stderr or (
        named_iso and "Invalid data found" in stderr and not _looks_like_iso_media(path)
    ):
        return InputError(
            f"{path.name}: not a media file (no MP4/MOV structure found); check the file",
            code=ErrorCode.NOT_MEDIA,
        )
    if "Invalid data found" in stderr or "could not find codec parameters" in stderr.lower():
        return InputError(
            f"{path.name}: not a media file ffprobe can read ({detail.split(': ')[-1]})",
            code=ErrorCode.NOT_MEDIA,
        )
    return InputError(
        f"{path.name}: ffprobe could not read it ({detail})", code=ErrorCode.NOT_MEDIA
    )


def _result(path: Path, returncode: int, stdout: bytes, stderr: bytes) -> MediaInfo:
    if returncode < 0:
        # Killed from outside (its worker exiting, the OOM killer, a crash): says nothing
        # sure about the file, so it is retryable rather than an input error.
        raise EncodeError(
            f"{path.name}: ffprobe was stopped by signal {-returncode}; try again",
            code=ErrorCode.PROBE_INTERRUPTED,
        )
    if returncode != 0:
        raise _probe_error(path, stderr.decode(errors="replace"))
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path.name}: ffprobe gave unreadable output", code=ErrorCode.NOT_MEDIA
        ) from exc
    info = parse_probe(str(path), data)
    if not data.get("streams"):
        raise InputError(
            f"{path.name}: not a media file (no streams found)", code=ErrorCode.NOT_MEDIA
        )
    return info


def probe(path: str | os.PathLike[str], roots: tuple[Path, ...] = ()) -> MediaInfo:
    """Probe ``path`` with ffprobe (blocking); see :func:`probe_async` for ``roots``."""
    p = Path(path)
    _check_readable(p)
    fd = open_input(str(p), roots)
    try:
        version = _version(fd)
        try:
            done = subprocess.run(
                probe_argv(f"/proc/self/fd/{fd}"),
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
                pass_fds=(fd,),
            )
        except FileNotFoundError as exc:
            raise ToolMissing.for_tool("ffprobe") from exc
        except OSError as exc:
            raise InputError(f"{p.name[:80]}: ffprobe could not start ({exc})") from exc
        except subprocess.TimeoutExpired as exc:
            raise InputError(f"{p.name}: ffprobe took over {PROBE_TIMEOUT_S:.0f} s") from exc
        info = replace(_result(p, done.returncode, done.stdout, done.stderr), version=version)
        return _looked_again(info, _file_source(fd), (fd,), p.name)
    finally:
        os.close(fd)


async def probe_async(path: str | os.PathLike[str], roots: tuple[Path, ...] = ()) -> MediaInfo:
    """Probe ``path`` with ffprobe without blocking the event loop. The file is opened
    here (no link in its last part, and inside ``roots``) and ffprobe reads that open
    file, so a link swapped in after submit cannot show another file's metadata."""
    p = Path(path)
    _check_readable(p)
    fd = open_input(str(p), roots)
    try:
        code, stdout, stderr = await run_ffprobe(probe_argv(f"/proc/self/fd/{fd}"), p.name, (fd,))
        info = replace(_result(p, code, stdout, stderr), version=_version(fd))
        return await _looked_again_async(info, _file_source(fd), (fd,), p.name)
    finally:
        os.close(fd)


def _version(fd: int) -> str:
    """The open file's identity: its inode and modification time."""
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"


async def run_ffprobe(
    argv: list[str], name: str, pass_fds: tuple[int, ...] = (), timeout_s: float = PROBE_TIMEOUT_S
) -> tuple[int, bytes, bytes]:
    """Run ffprobe (or another tool: ``argv[0]``) without blocking the loop: (exit status,
    stdout, stderr); errors name ``name``."""
    tool = os.path.basename(argv[0])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=pass_fds,
        )
    except FileNotFoundError as exc:
        raise ToolMissing.for_tool(tool) from exc
    except OSError as exc:
        raise InputError(f"{name[:80]}: {tool} could not start ({exc})") from exc
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except (TimeoutError, asyncio.CancelledError) as exc:
        proc.kill()
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise InputError(f"{name}: {tool} took over {timeout_s:g} s") from exc
    return (proc.returncode if proc.returncode is not None else 0), stdout, stderr


async def probe_object_async(
    url: ObjectURL, store: ObjectStore, head: ObjectHead | None = None
) -> MediaInfo:
    """Probe the object at ``url`` through a presigned URL (ranged reads, no download);
    ``head``: what a HEAD just said of it, if the caller made one. Messages name ``url``;
    the presigned URL, which carries a signature, never shows."""
    if head is None:
        head = await asyncio.to_thread(objects.head, store, url)
    if head is None:
        raise InputError(f"{url}: no such object; check the key", code=ErrorCode.INPUT_MISSING)
    if head.size == 0:
        raise InputError(f"{url.name}: the file is empty (0 bytes)", code=ErrorCode.NOT_MEDIA)
    link = await asyncio.to_thread(objects.presigned_get, store, url)
    code, stdout, stderr = await run_ffprobe(probe_argv(url.name, link=link), str(url))
    said = _hidden(stderr.decode(errors="replace"), link, url)
    info = _result(Path(url.name), code, stdout, said.encode())
    info = replace(info, path=str(url), size_bytes=head.size, version=f"etag:{head.etag}")
    return await _looked_again_async(
        info,
        [*URL_INPUT_OPTIONS, "-i", link],
        (),
        str(url),
        hide=lambda text: _hidden(text, link, url),
    )


def _hidden(text: str, link: str, url: ObjectURL) -> str:
    """``text`` with the presigned ``link`` (it carries a signature) shown as ``url``."""
    return text.replace(link, str(url)).replace(link.split("?")[0], str(url))


def _file_source(fd: int) -> list[str]:
    """An extra read's input: the probed open file, with every input's whitelist."""
    return [*INPUT_OPTIONS, "-i", f"file:/proc/self/fd/{fd}"]


def _unchanged(text: str) -> str:
    return text


def _warn(look: Look, video: VideoStream, name: str, why: str) -> None:
    """Say that ``look`` failed and why (``why`` already rid of any link; cut here)."""
    kept = f"; its scan stays as tagged ({video.scan})" if look.what == IDET else ""
    log.warning("%s: the %s read failed (%s)%s", name, look.what, why[:300], kept)


def _looked_again(
    info: MediaInfo, source: list[str], pass_fds: tuple[int, ...], name: str
) -> MediaInfo:
    """``info`` with what its :func:`~cluster.media.looks.looks` read (blocking)."""
    if info.video is None:
        return info
    video = info.video
    for look in looks(video, source):
        try:
            run = subprocess.run(look.argv, stdin=subprocess.DEVNULL, capture_output=True,
                                 timeout=look.timeout_s, check=False,
                                 pass_fds=pass_fds)  # fmt: skip
        except subprocess.TimeoutExpired:
            _warn(look, video, name, f"{look.argv[0]} took over {look.timeout_s:g} s")
            continue
        except OSError as exc:
            _warn(look, video, name, f"{look.argv[0]} could not start ({exc})")
            continue
        video, why = read_look(look, video, run.returncode, run.stdout, run.stderr)
        if why:
            _warn(look, video, name, why)
    return replace(info, video=video)


async def _looked_again_async(
    info: MediaInfo,
    source: list[str],
    pass_fds: tuple[int, ...],
    name: str,
    hide: Callable[[str], str] = _unchanged,
) -> MediaInfo:
    """``info`` with what its :func:`~cluster.media.looks.looks` read, without blocking
    the loop; ``hide``: what a message must not show (a presigned link) hidden."""
    if info.video is None:
        return info
    video = info.video
    for look in looks(video, source):
        try:
            code, stdout, stderr = await run_ffprobe(look.argv, name, pass_fds, look.timeout_s)
        except (InputError, ToolMissing) as exc:  # it could not start, or took too long
            _warn(look, video, name, hide(str(exc).removeprefix(f"{name[:80]}: ")))
            continue
        video, why = read_look(look, video, code, stdout, stderr)
        if why:
            _warn(look, video, name, hide(why))
    return replace(info, video=video)
