"""The live progress bar the CLI shows for a job (percent, fps, speed, ETA)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn


def fmt_eta(seconds: Any) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


@contextmanager
def live_bar(label: str, console: Console) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yields ``show(event)``, which draws a job event (``status``, ``progress``)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[fps]} fps"),
        TextColumn("{task.fields[speed]}"),
        TextColumn("ETA {task.fields[eta]}"),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=100, fps="-", speed="-", eta="--:--")

        def show(event: dict[str, Any]) -> None:
            p = event.get("progress") or {}
            bar.update(
                task,
                completed=p.get("percent") or 0,
                fps=f"{p['fps']:.0f}" if p.get("fps") else "-",
                speed=f"{p['speed']:.2f}x" if p.get("speed") else "-",
                eta=fmt_eta(p.get("eta_s")),
                description=f"{label} [{event['status']}]",
            )

        yield show
