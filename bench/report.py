"""One row per measure, shared by every bench: printed, and appended to ``--report``.

Each bench compares framefleet with a baseline measured in the same run and prints
its ratio last; with ``--report FILE`` it also appends its rows there as JSON lines,
which ``bench/all.py`` (``make bench``) gathers into one table.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Row:
    measure: str
    framefleet: str
    """What framefleet did, with its unit ("18.2 s", "1,020 req/s")."""
    baseline: str
    """What the same work cost without framefleet, in the same run ("-" when none)."""
    ratio: float | None
    target: str
    """The target, as the issue words it ("<= 1.00")."""
    met: bool | None
    """``None`` where there is nothing to judge (a figure printed for the record)."""


def at_most(value: float, bound: float) -> bool:
    return not math.isnan(value) and value <= bound


def at_least(value: float, bound: float) -> bool:
    return not math.isnan(value) and value >= bound


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a CI-sized run: less work")
    parser.add_argument("--report", type=Path, help="append the rows here as JSON lines")


def emit(rows: list[Row], report: Path | None) -> None:
    """Print ``rows`` as the bench's closing lines, and append them to ``report``."""
    for row in rows:
        ratio = f"ratio {row.ratio:.3f}; " if row.ratio is not None else ""
        verdict = {True: "met", False: "NOT met", None: "for the record"}[row.met]
        print(
            f"{row.measure}: framefleet {row.framefleet}, baseline {row.baseline}; "
            f"{ratio}target {row.target}: {verdict}"
        )
    if report is not None:
        with report.open("a") as out:
            for row in rows:
                out.write(json.dumps(asdict(row)) + "\n")


def read(report: Path) -> list[Row]:
    if not report.exists():
        return []
    return [Row(**json.loads(line)) for line in report.read_text().splitlines() if line]


def table(rows: list[Row]) -> str:
    """A Markdown table: it reads the same in a terminal, a note and the README."""
    head = ("measure", "framefleet", "baseline", "ratio", "target", "met")
    body = [
        (
            r.measure,
            r.framefleet,
            r.baseline,
            f"{r.ratio:.3f}" if r.ratio is not None else "-",
            r.target,
            {True: "yes", False: "**no**", None: "-"}[r.met],
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |"
        for line in (head, *body)
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
