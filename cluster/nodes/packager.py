"""The node's side of a package: its staging folder made beside the destination (inside
the output's pinned folder), each chunked rendition's chunk files listed for ffmpeg's
concat demuxer in a memory file, and, once ffmpeg wrote one fragmented MP4 per rendition,
the package itself: segments cut at the same frames in every rendition, measured,
described by HLS playlists and a DASH MPD written from the measurements, checked
(:func:`cluster.media.manifests.check`), and only then renamed onto the destination in
one step. Whatever the end, the staging folder goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import mmap
import os
import re
import secrets
import shutil
import stat
from dataclasses import dataclass, field, replace
from fractions import Fraction

from cluster.errors import EncodeError, ErrorCode, OutputError
from cluster.media.cmaf import CmafError, Init, read_fragments, read_init
from cluster.media.manifests import (
    IFRAME_PLAYLIST,
    INIT,
    MASTER,
    MEDIA_PLAYLIST,
    MPD,
    SUBTITLES,
    Expected,
    MeasuredSegment,
    Track,
    bandwidth_problems,
    check,
    cut,
    dash_mpd,
    hls_iframes,
    hls_master,
    hls_media,
    hls_text,
    measure,
    segment_name,
    target_duration,
    variants,
)
from cluster.media.packaging import LIST_PLACEHOLDER, WHOLE
from cluster.media.paths import OVERWRITE_HINT
from cluster.media.pinned import Pinned, exists_in
from cluster.model.package import PackageStep, Rendition
from cluster.model.split import Segment

MAX_PROBLEMS_SHOWN = 3
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class PackageFiles:
    """A package being made in its staging folder (see the module docstring).

    Every folder it makes is opened right after it is made (no link followed) and every
    read and write goes through those descriptors, as ffmpeg's do (``/proc/self/fd/N``):
    a folder or file swapped for a link while the job runs cannot redirect one."""

    folder_fd: int
    staging: str
    """The staging folder's name in the output's folder."""
    final: str
    final_path: str
    """The package as the user named it (the folder's path and ``final``)."""
    folder_path: str
    step: PackageStep
    expected: Expected
    staging_fd: int = -1
    dirs: dict[str, int] = field(default_factory=dict)
    """Each rendition's folder in the staging folder, open."""
    fds: list[int] = field(default_factory=list)

    @classmethod
    def open(
        cls, step: PackageStep, pinned: Pinned, frames: int | None
    ) -> tuple[PackageFiles, Pinned]:
        """Make the staging folder (a folder per rendition in it), open the renditions'
        files and write the chunk lists; the pinned command, reading and writing them
        through descriptors."""
        out = pinned.outputs[0]
        frame_s = float(1 / Fraction(step.frame_rate)) if Fraction(step.frame_rate) else 0.04
        expected = Expected(frames, step.duration_s, frame_s, step.segment_s, step.segment_frames)
        shown = os.path.join(out.folder, out.final)
        files = cls(out.folder_fd, out.partial, out.final, shown, out.folder, step, expected)
        here = f"file:/proc/self/fd/{out.folder_fd}/"
        swap: dict[str, str] = {}
        try:
            os.mkdir(files.staging, 0o755, dir_fd=files.folder_fd)
            files.staging_fd = files._keep(
                os.open(files.staging, DIR_FLAGS, dir_fd=files.folder_fd)
            )
            for rendition in step.renditions:
                os.mkdir(rendition.key, 0o755, dir_fd=files.staging_fd)
                fd = files._keep(os.open(rendition.key, DIR_FLAGS, dir_fd=files.staging_fd))
                files.dirs[rendition.key] = fd
                swap[f"{here}{files.staging}/{rendition.key}/"] = f"file:/proc/self/fd/{fd}/"
            for key, names in step.files.items():
                if len(names) > 1:
                    swap[f"{LIST_PLACEHOLDER}{key}"] = files._list(names, step.chunks[key])
                else:
                    fd = files._keep(files._source(names[0], key))
                    swap[f"{here}{names[0]}"] = f"file:/proc/self/fd/{fd}"
        except BaseException:
            files.close()
            raise
        argv = [_swapped(a, swap) for a in pinned.command.argv]
        command = replace(pinned.command, argv=argv)
        return files, replace(pinned, command=command, pass_fds=(*pinned.pass_fds, *files.fds))

    def _keep(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def _source(self, name: str, key: str) -> int:
        try:
            return os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.folder_fd)
        except OSError as exc:
            raise EncodeError(
                f"rendition {key}: its file cannot be read ({exc.strerror}); retry the job "
                "to encode it again"
            ) from exc

    def _list(self, names: tuple[str, ...], chunks: tuple[Segment, ...]) -> str:
        lines = ["ffconcat version 1.0"]
        for name, chunk in zip(names, chunks, strict=True):
            fd = self._keep(self._source(name, chunk.label))
            lines += [f"file 'file:/proc/self/fd/{fd}'", f"duration {chunk.duration_s:.6f}"]
        listed = self._keep(os.memfd_create("framefleet-rendition", 0))
        os.write(listed, ("\n".join(lines) + "\n").encode())
        return f"file:/proc/self/fd/{listed}"

    async def build(self) -> dict[str, object]:
        """Cut, measure, describe and check the package (off the event loop: it reads
        every byte once); an :class:`EncodeError` naming the rendition and segment at
        fault unless it passed."""
        return await asyncio.to_thread(self._build)

    def _build(self) -> dict[str, object]:
        step = self.step
        videos = [self._cut(r, None) for r in step.video]
        times = [videos[0].seconds(s.start) for s in videos[0].segments] if videos else []
        audios = [self._cut(r, times) for r in step.audio]
        verdict = check(videos, audios, self.expected)
        if verdict.problems:
            raise self._failed(verdict.problems)
        for text in step.texts:
            if not exists_in(SUBTITLES, self.dirs[text.key]):
                raise EncodeError(f"{text.label()}: ffmpeg wrote no WebVTT file")
        written: dict[str, str] = {}
        if "hls" in step.formats:
            target = target_duration([*videos, *audios])
            for track in [*videos, *audios]:
                key = track.rendition.key
                self._write(key, MEDIA_PLAYLIST, hls_media(track, target).encode())
                if track.rendition.kind == "video":
                    self._write(key, IFRAME_PLAYLIST, hls_iframes(track).encode())
            for text in step.texts:
                self._write(text.key, MEDIA_PLAYLIST, hls_text(step.duration_s).encode())
            master = hls_master(videos, audios, step.texts, step.frame_rate)
            self._write(None, MASTER, master.encode())
            self._check_master(master, videos, audios)
            written["hls"] = MASTER
        if "dash" in step.formats:
            duration = max((v.duration_s for v in videos), default=step.duration_s)
            mpd = dash_mpd(videos, audios, step.texts, step.frame_rate, duration, step.segment_s)
            self._write(None, MPD, mpd.encode())
            written["dash"] = MPD
        return self._summary(videos, audios, written, verdict.segments)

    def _cut(self, rendition: Rendition, times: list[float] | None) -> Track:
        """One rendition's fragmented MP4 cut into its init segment and media segments
        (the MP4 removed once cut), measured; audio (``times``: the video's segment
        starts) follows the video's segments, and goes on at the same length past them."""
        folder = self.dirs[rendition.key]
        fd = os.open(WHOLE, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
        problem: str | None = None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise EncodeError(f"{rendition.label()}: ffmpeg wrote an empty file")
            with mmap.mmap(fd, size, prot=mmap.PROT_READ) as data:
                try:
                    init, segments = self._segments(data, rendition, times)
                except CmafError as exc:  # raised below, once the map is closed
                    problem = f"{rendition.label()}: {exc}"
        finally:
            os.close(fd)
        if problem is not None:
            raise EncodeError(problem)
        os.unlink(WHOLE, dir_fd=folder)
        return Track(rendition, init, tuple(segments))

    def _segments(
        self, data: mmap.mmap, rendition: Rendition, times: list[float] | None
    ) -> tuple[Init, list[MeasuredSegment]]:
        init = read_init(data)
        fragments = read_fragments(data, init)
        if not fragments:
            raise CmafError("no media was written")
        if times is None:
            groups = cut(fragments, segment_frames=self.step.segment_frames)
        else:
            groups = cut(fragments, times=times, every=self.step.segment_s,
                         timescale=init.timescale)  # fmt: skip
        self._write(rendition.key, INIT, data[: init.size])
        segments = []
        for number, group in enumerate(groups, 1):
            self._write(rendition.key, segment_name(number), data[group[0].start : group[-1].end])
            segments.append(measure(group, number, video=times is None))
        return init, segments

    def _check_master(self, master: str, videos: list[Track], audios: list[Track]) -> None:
        """The multivariant playlist as written, read back: each variant's BANDWIDTH and
        AVERAGE-BANDWIDTH within 10 % of what was measured."""
        said: dict[str, tuple[int, int]] = {}
        lines = master.splitlines()
        for line, uri in itertools.pairwise(lines):
            if line.startswith("#EXT-X-STREAM-INF:"):
                peak = re.search(r"(?:^|[:,])BANDWIDTH=(\d+)", line)
                average = re.search(r"AVERAGE-BANDWIDTH=(\d+)", line)
                said[uri] = (
                    int(peak.group(1)) if peak else 0,
                    int(average.group(1)) if average else 0,
                )
        problems: list[str] = []
        for variant in variants(videos, audios):
            uri = f"{variant.track.rendition.key}/{MEDIA_PLAYLIST}"
            if uri not in said:
                problems.append(f"{variant.track.rendition.label()} is not in {MASTER}")
                continue
            problems += bandwidth_problems(variant, *said[uri])
        if problems:
            raise self._failed(problems)

    def _failed(self, problems: list[str]) -> EncodeError:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        tail = f" (and {more} more)" if more > 0 else ""
        return EncodeError(f"package check failed: {shown}{tail}", code=ErrorCode.ENCODE_FAILED)

    def _write(self, key: str | None, name: str, data: bytes) -> None:
        """A new file in a rendition's folder (``key``) or the staging folder's top."""
        folder = self.staging_fd if key is None else self.dirs[key]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(name, flags, 0o644, dir_fd=folder)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def _summary(
        self, videos: list[Track], audios: list[Track], written: dict[str, str], segments: int
    ) -> dict[str, object]:
        size = 0
        for _, _, names, fd in os.fwalk(".", dir_fd=self.staging_fd):
            size += sum(os.stat(n, dir_fd=fd, follow_symlinks=False).st_size for n in names)
        renditions: list[dict[str, object]] = []
        for variant in variants(videos, audios):
            track = variant.track
            renditions.append(
                {
                    "key": track.rendition.key,
                    "kind": "video",
                    "codec": track.rendition.codec,
                    "codecs": track.init.codecs,
                    "width": track.init.width,
                    "height": track.init.height,
                    "bandwidth": variant.bandwidth,
                    "average_bandwidth": variant.average,
                    "peak_bps": track.peak_bps,
                    "average_bps": track.average_bps,
                    "segments": len(track.segments),
                    "duration_s": round(track.duration_s, 4),
                }
            )
        for track in audios:
            renditions.append(
                {
                    "key": track.rendition.key,
                    "kind": "audio",
                    "codec": "aac",
                    "codecs": track.init.codecs,
                    "language": track.rendition.language,
                    "peak_bps": track.peak_bps,
                    "average_bps": track.average_bps,
                    "segments": len(track.segments),
                    "duration_s": round(track.duration_s, 4),
                }
            )
        for text in self.step.texts:
            renditions.append(
                {"key": text.key, "kind": "text", "codec": "webvtt", "language": text.language}
            )
        return {
            "output": self.final_path,
            "renditions": renditions,
            "playlists": written,
            "segments": segments,
            "segment_s": self.step.segment_s,
            "duration_s": round(max((v.duration_s for v in videos), default=0.0), 4),
            "size_bytes": size,
        }

    def publish(self, *, overwrite: bool) -> None:
        """The staging folder renamed onto the package (one rename: a player never sees
        half a package); an existing package is refused unless ``overwrite``, then moved
        aside and removed once the new one is in place."""
        here, made = os.stat(self.staging, dir_fd=self.folder_fd, follow_symlinks=False), \
            os.fstat(self.staging_fd)  # fmt: skip
        if (here.st_dev, here.st_ino) != (made.st_dev, made.st_ino):
            raise OutputError(f"{self.final_path}: its staging folder was replaced; not published")
        old = None
        if exists_in(self.final, self.folder_fd):
            if not overwrite:
                raise OutputError(f"{self.final_path} already exists; {OVERWRITE_HINT}")
            old = self._aside()
        try:
            os.rename(self.staging, self.final, src_dir_fd=self.folder_fd,
                      dst_dir_fd=self.folder_fd)  # fmt: skip
        except OSError:
            if old is not None:  # the package before stays where it was
                os.rename(old, self.final, src_dir_fd=self.folder_fd, dst_dir_fd=self.folder_fd)
            raise
        if old is not None:
            with contextlib.suppress(OSError):  # published: a leftover is not a failure
                remove_tree(old, self.folder_fd)

    def _aside(self) -> str:
        """The package being replaced, moved aside (a name no job's clean-up touches: it
        is never lost); an :class:`OutputError` unless it is a package, the very folder
        that was checked."""
        not_one = OutputError(
            f"{self.final_path} exists and is not a package (no {MASTER} or {MPD}); "
            "overwrite replaces only a package: choose another folder"
        )
        try:
            fd = os.open(self.final, DIR_FLAGS, dir_fd=self.folder_fd)
        except OSError:
            raise not_one from None
        try:
            if not holds_manifest(fd):
                raise not_one
            seen = os.fstat(fd)
        finally:
            os.close(fd)
        old = f".{self.final}.replaced-{secrets.token_hex(4)}"
        os.rename(self.final, old, src_dir_fd=self.folder_fd, dst_dir_fd=self.folder_fd)
        moved = os.stat(old, dir_fd=self.folder_fd, follow_symlinks=False)
        if (moved.st_dev, moved.st_ino) != (seen.st_dev, seen.st_ino):
            os.rename(old, self.final, src_dir_fd=self.folder_fd, dst_dir_fd=self.folder_fd)
            raise OutputError(f"{self.final_path} changed while it was replaced; not published")
        return old

    def published_files(self) -> list[str]:
        """Every file of the published package (paths on this node), in the order they
        may be uploaded: media first, then media playlists, the multivariant playlist and
        the MPD last."""
        files: list[str] = []
        for top, _, names, _ in os.fwalk(self.final, dir_fd=self.folder_fd):
            files += [os.path.join(self.folder_path, top, n) for n in names]

        def rank(path: str) -> tuple[int, str]:
            name = os.path.basename(path)
            last = name in (MASTER, MPD)
            return (2 if last else 1 if name.endswith(".m3u8") else 0, path)

        return sorted(files, key=rank)

    def remove_sources(self) -> None:
        """The renditions' hidden files (the package holds them now)."""
        for names in self.step.files.values():
            for name in names:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self.folder_fd)

    def close(self) -> None:
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())


def remove_tree(name: str, folder_fd: int) -> None:
    """A folder inside the folder open as ``folder_fd``, and all it holds (links are
    removed, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(name, dir_fd=folder_fd)


def _swapped(arg: str, swap: dict[str, str]) -> str:
    """``arg`` with a path ffmpeg would have opened by name replaced by a descriptor."""
    for before, after in swap.items():
        if arg == before or (before.endswith("/") and arg.startswith(before)):
            return after + arg[len(before) :]
    return arg


def holds_manifest(folder_fd: int) -> bool:
    """Whether the folder open as ``folder_fd`` holds a package's manifest (a plain file):
    what ``overwrite`` may replace whole."""
    return any(_regular(n, folder_fd) for n in (MASTER, MPD))


def _regular(name: str, folder_fd: int) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
