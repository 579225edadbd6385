"""Runs one ffmpeg :class:`~cluster.media.argv.Command`: progress out, stderr tail kept, killable.

ffmpeg starts without a shell, in its own process group but in the caller's
session, so :meth:`FfmpegRun.kill` can end it (and anything it spawned) with one
``killpg``. It is also told to die with its parent (``PR_SET_PDEATHSIG``): if the
encoder actor's process dies by any signal, SIGKILL included, the kernel kills its
ffmpeg at once; nothing else would (ffmpeg blocks on its input, not on the pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import (
    EncodeError,
    EncoderUnavailable,
    ErrorCode,
    InputError,
    JobFailure,
    OutputError,
    ToolMissing,
)
from cluster.media.argv import Command
from cluster.media.paths import OVERWRITE_HINT
from cluster.media.probe import refused_format
from cluster.model.progress import ProgressParser, ProgressSnapshot, ProgressThrottle

STDERR_TAIL_LINES = 30

ENCODE_NICENESS = 4
"""ffmpeg runs this much nicer than its worker, so the coordinator, the agents and the
gateway stay responsive (progress, API) on a node whose cores the encodes fill."""
NICE = shutil.which("nice")

_NVENC_MARKERS = (  # what ffmpeg prints -> what it means for the user
    ("Cannot load libcuda", "no NVIDIA driver (libcuda.so.1 cannot be loaded)"),
    ("Cannot load libnvidia-encode", "the driver has no NVENC library (libnvidia-encode)"),
    ("No NVENC capable devices", "this GPU has no NVENC"),
    ("No capable devices found", "this GPU has no NVENC"),
    ("unsupported device", "this GPU has no NVENC"),
    ("incompatible client key", "the driver's NVENC session cap is reached"),
    ("out of memory (10)", "NVENC is out of sessions or GPU memory"),
    ("OpenEncodeSessionEx failed", "NVENC refused to open a session"),
    ("Driver does not support the required nvenc API version", "the driver is too old"),
    ("CUDA_ERROR", "a CUDA error"),
)
_INPUT_MARKERS = ("Invalid data found when processing input", "moov atom not found")
_OUTPUT_MARKERS = ("No space left on device", "Permission denied", "Read-only file system")


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _child_setup(parent: int) -> None:
    """In the forked child, before exec: own process group; die with the parent thread."""
    os.setpgrp()
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl: nobody would kill us
        os._exit(1)


@dataclass(frozen=True, slots=True)
class RunResult:
    returncode: int
    stderr_tail: list[str]
    progress: ProgressSnapshot | None
    killed: bool
    started_at: float = 0.0
    """Wall-clock time ffmpeg was started (``time.time()``)."""
    ran_s: float = 0.0
    """From ffmpeg's start to its exit."""


def nvenc_failure_reason(stderr: str) -> str | None:
    """Why NVENC did not open, from ffmpeg's stderr, or ``None`` if it is not about NVENC."""
    return next((why for marker, why in _NVENC_MARKERS if marker in stderr), None)


def failure_for(result: RunResult, *, input_name: str, encoder: str | None = None) -> JobFailure:
    """The :class:`JobFailure` that an unsuccessful ffmpeg run amounts to."""
    tail = "\n".join(result.stderr_tail)
    last = next((line for line in reversed(result.stderr_tail) if line.strip()), "")
    why = nvenc_failure_reason(tail)
    if why is not None:
        return EncoderUnavailable(
            f"NVENC could not be opened{f' for {encoder}' if encoder else ''}: {why}",
            code=ErrorCode.NVENC_UNAVAILABLE,
        )
    refused = refused_format(input_name, tail)
    if refused is not None:
        return refused
    for marker in _OUTPUT_MARKERS:
        if marker in tail:
            return OutputError(f"cannot write the output ({marker}); free space or fix access")
    for marker in _INPUT_MARKERS:
        if marker in tail:
            return InputError(f"{input_name}: corrupt or unreadable input ({marker})")
    if result.returncode < 0:
        return EncodeError(f"ffmpeg was killed by signal {-result.returncode}")
    return EncodeError(f"ffmpeg failed (exit {result.returncode}): {last or 'no message'}")


class FfmpegRun:
    """One ffmpeg process for one command. ``await run()``; ``await kill()`` from elsewhere."""

    def __init__(
        self,
        command: Command,
        *,
        on_progress: Callable[[ProgressSnapshot], None] | None = None,
        throttle: ProgressThrottle | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.command = command
        self._pass_fds = pass_fds
        self._on_progress = on_progress
        self._throttle = throttle or ProgressThrottle()
        self._parser = ProgressParser(
            duration_s=command.duration_s, total_frames=command.total_frames
        )
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._killed = False
        self.result: RunResult | None = None
        """What :meth:`run` returned, once it has."""

    @property
    def latest(self) -> ProgressSnapshot | None:
        """The last progress block ffmpeg wrote, throttled or not."""
        return self._parser.latest

    async def run(self) -> RunResult:
        env = {**os.environ, **self.command.env}
        pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        argv = self.command.argv
        if shutil.which(argv[0]) is None:  # nice would only say so as exit 127
            raise ToolMissing.for_tool(f"ffmpeg ({argv[0]})" if os.sep in argv[0] else "ffmpeg")
        if ENCODE_NICENESS and NICE is not None:
            # Exec'ed by nice (no shell): same pid, same process group, lower priority.
            argv = [NICE, "-n", str(ENCODE_NICENESS), *argv]
        parent = os.getpid()
        if self._killed:  # stopped before it started: it never runs
            self.result = RunResult(-signal.SIGKILL, [], None, True, time.time(), 0.0)
            return self.result
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=null, stdout=pipe, stderr=pipe, env=env,
                preexec_fn=lambda: _child_setup(parent), pass_fds=self._pass_fds,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise ToolMissing.for_tool("ffmpeg") from exc
        if self._killed:  # stopped while it was being started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        started_at, began = time.time(), time.monotonic()
        try:
            await asyncio.gather(self._read_progress(), self._read_stderr())
            returncode = await self._proc.wait()
        finally:
            if self._proc.returncode is None:  # cancelled while running
                await self.kill()
        ran_s = time.monotonic() - began
        self.result = RunResult(
            returncode, list(self._stderr), self._parser.latest, self._killed, started_at, ran_s
        )
        return self.result

    async def _read_progress(self) -> None:
        if self._proc is None or self._proc.stdout is None:
            return
        async for raw in self._proc.stdout:
            snapshot = self._parser.feed(raw.decode(errors="replace"))
            if snapshot and self._on_progress and self._throttle.should_emit(snapshot):
                self._on_progress(snapshot)

    async def _read_stderr(self) -> None:
        if self._proc is None or self._proc.stderr is None:
            return
        async for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr.append(line)

    async def kill(self, grace_s: float = 2.0) -> None:
        """End ffmpeg's process group: SIGTERM, then SIGKILL after ``grace_s``. Asked
        before ffmpeg has started, it never starts (or is killed as it does)."""
        proc = self._proc
        if proc is None:
            self._killed = True
            return
        if proc.returncode is not None:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    def kill_now(self) -> None:
        """SIGKILL the process group at once (for exit paths that cannot await)."""
        if self._proc is None:
            self._killed = True
        elif self._proc.returncode is None:
            self._killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)


def remove_partials(command: Command) -> None:
    for partial, _ in command.outputs:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def remove_stale_partials(folder: Path, job_id: str, *, tasks: bool = False) -> None:
    """Remove partial files any attempt of ``job_id`` left in ``folder``; with ``tasks``,
    every file its job graph's tasks made there (``.<name>.<job>-<key>...``: chunk files,
    their partials, the stitch's), finished or not."""
    pattern = f".*.{job_id}-*" if tasks else f".*.{job_id}.*partial"
    with contextlib.suppress(OSError):
        for stale in folder.glob(pattern):
            with contextlib.suppress(OSError):
                if stale.is_dir() and not stale.is_symlink():  # a package's staging folder
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)


def commit_outputs(command: Command, *, overwrite: bool) -> None:
    """Rename every partial file onto its destination (atomic per file)."""
    for partial, final in command.outputs:
        if not overwrite and os.path.exists(final):
            remove_partials(command)
            raise OutputError(f"{final} already exists; {OVERWRITE_HINT}")
        if not Path(partial).exists():
            remove_partials(command)
            raise EncodeError(f"ffmpeg finished but wrote no {Path(final).name}")
    for partial, final in command.outputs:
        os.replace(partial, final)
