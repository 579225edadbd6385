"""Asking an ffmpeg what it was built with: its encoders and filters, in two short runs.

Light on purpose (the standard library only): a one-shot command starts these runs
(:func:`read_ahead`) before it imports the rest of the engine, which reads the answers
here (:func:`~cluster.media.encoders.ffmpeg_build` parses them).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading

from cluster.errors import ToolMissing

FFMPEG_ENV = "FRAMEFLEET_FFMPEG"
"""The ffmpeg a node runs (set for ``ray start`` by ``framefleet node start --ffmpeg``)."""
TOOL_TIMEOUT_S = 30.0
QUERIES = ("-encoders", "-filters")
"""What is asked; the first run also prints ffmpeg's banner (its version) on stderr."""

_LOCK = threading.Lock()
_READING: dict[str, threading.Lock] = {}
_ANSWERS: dict[str, list[tuple[str, str]]] = {}


def run_queries(path: str, *queries: str) -> list[tuple[str, str]]:
    """``ffmpeg QUERY`` for each query, all at once (each costs ffmpeg's start-up, some
    50 ms for a build linked to many libraries); their outputs (stdout, stderr) in order.
    The first query's stderr has ffmpeg's banner (its version); the others hide it."""
    argvs = [[path, *(["-hide_banner"] if n else []), "-nostdin", query]
             for n, query in enumerate(queries)]  # fmt: skip
    try:
        running = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, errors="replace") for a in argvs]  # fmt: skip
    except FileNotFoundError as exc:
        raise ToolMissing.for_tool(path) from exc
    except PermissionError as exc:
        raise ToolMissing(f"{path} is not executable; check --ffmpeg") from exc
    outputs = []
    try:
        for argv, proc in zip(argvs, running, strict=True):
            try:
                out, err = proc.communicate(timeout=TOOL_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise ToolMissing(f"{path} does not run as ffmpeg ({exc}); check --ffmpeg") from exc
            if proc.returncode != 0:
                failed = subprocess.CalledProcessError(proc.returncode, argv)
                raise ToolMissing(f"{path} does not run as ffmpeg ({failed}); check --ffmpeg")
            outputs.append((out, err))
    finally:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


def answers(resolved: str) -> list[tuple[str, str]]:
    """:data:`QUERIES` answered by the ffmpeg at ``resolved`` (a path), once per process:
    a thread asking while another runs them waits for that answer."""
    with _LOCK:
        reading = _READING.setdefault(resolved, threading.Lock())
    with reading:
        if resolved not in _ANSWERS:
            _ANSWERS[resolved] = run_queries(resolved, *QUERIES)
        return _ANSWERS[resolved]


def read_ahead(ffmpeg: str = "ffmpeg") -> None:
    """Ask this machine's ffmpeg (``ffmpeg``; the one on PATH too, which the CLI checks
    encoders against) and the static one pinned for quality metrics, all at once, so that
    the answers wait when the engine asks. Errors are left for the engine's own asking
    to report."""
    paths = {shutil.which(p) for p in (ffmpeg, "ffmpeg")}
    pinned = threading.Thread(target=_read_pinned, name="framefleet-read-pinned", daemon=True)
    pinned.start()
    for path in paths - {None}:
        with contextlib.suppress(ToolMissing, OSError):
            answers(str(path))
    pinned.join()


def _read_pinned() -> None:
    try:
        import imageio_ffmpeg  # a wheel with a static ffmpeg; no import-time work

        answers(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError, ToolMissing, OSError):
        pass
