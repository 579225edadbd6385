"""The node's side of a stitch: the chunk files opened here (no link, inside the output's
pinned folder) and listed for ffmpeg's concat demuxer in a memory file; the joined file
checked frame by frame before it is committed; the chunk files removed once it is.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace

from cluster.errors import EncodeError, ErrorCode
from cluster.media.argv import LIST_PLACEHOLDER
from cluster.media.pinned import Pinned
from cluster.media.split import check_timeline, scan_frames
from cluster.model.split import Stitch


@dataclass(slots=True)
class ChunkFiles:
    """The chunks, open, and the list ffmpeg reads them through."""

    folder_fd: int
    stitch: Stitch
    fds: list[int] = field(default_factory=list)

    @classmethod
    def open(cls, stitch: Stitch, pinned: Pinned) -> tuple[ChunkFiles, Pinned]:
        """Open every chunk and write the list; the pinned command, reading it."""
        files = cls(pinned.outputs[0].folder_fd, stitch)
        try:
            for name, segment in zip(stitch.chunks, stitch.segments, strict=True):
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=files.folder_fd)
                except OSError as exc:
                    raise EncodeError(
                        f"{segment.label}: its chunk file cannot be read ({exc.strerror}); "
                        "retry the job to encode it again",
                        code=ErrorCode.ENCODE_FAILED,
                    ) from exc
                files.fds.append(fd)
            lines = ["ffconcat version 1.0"]
            for fd, segment in zip(files.fds, stitch.segments, strict=True):
                lines += [f"file 'file:/proc/self/fd/{fd}'", f"duration {segment.duration_s:.6f}"]
            listed = os.memfd_create("framefleet-chunks", 0)
            files.fds.append(listed)
            os.write(listed, ("\n".join(lines) + "\n").encode())
        except BaseException:
            files.close()
            raise
        argv = [f"file:/proc/self/fd/{listed}" if a == LIST_PLACEHOLDER else a
                for a in pinned.command.argv]  # fmt: skip
        command = replace(pinned.command, argv=argv)
        return files, replace(pinned, command=command, pass_fds=(*pinned.pass_fds, *files.fds))

    async def check(self, partial: str, audio: bool) -> dict[str, float | int]:
        """Read the joined file's packets; an :class:`EncodeError` naming the chunk at
        fault unless it is whole (:func:`~cluster.media.split.check_timeline`)."""
        path = f"/proc/self/fd/{self.folder_fd}/{partial}"
        index = await scan_frames(path, 0, 1 if audio else None, (self.folder_fd,))
        stitch = self.stitch
        frames = check_timeline(index.times, stitch.segments, frame_s=stitch.frame_s,
                                audio_end_s=index.audio_end_s,
                                source_audio_end_s=stitch.audio_end_s,
                                keyframes=index.keyframes)  # fmt: skip
        return {"frames": frames, "joins": len(stitch.chunks) - 1}

    def remove(self) -> None:
        """Remove the chunk files (the output holds them now)."""
        for name in self.stitch.chunks:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.folder_fd)

    def close(self) -> None:
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())
