"""Every bench, one after another, and one table at the end (``make bench``).

Each bench runs in its own process (each starts and stops its own cluster), compares
framefleet with a baseline in the same run and appends its rows to one report; the
table gives measure, framefleet, baseline, ratio, target and whether it was met.

    .venv/bin/python bench/all.py [--quick] [--only throughput,api_load] [--out FILE]

``--quick`` runs CI-sized work (a few minutes in all on 2 cores); the full run takes
about half an hour. ``bench/gpu_cost.py`` is not included: it needs an NVENC GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import Row, read, table  # noqa: E402

BENCHES = {  # name: (full-run arguments, quick-run arguments)
    "throughput": ([], ["--quick"]),
    "latency": ([], ["--quick"]),
    "head": ([], ["--quick"]),
    "head_ray": ([], ["--quick"]),
    "api_load": ([], ["--quick"]),
    "load": ([], ["--quick"]),
    "idle": ([], ["--quick"]),
    "scheduler_sim": (["--nodes", "10000", "--jobs", "1000000"], ["--quick"]),
    "eta": ([], ["--quick"]),
    "coordinator_memory": ([], ["--quick"]),
    "ui": ([], ["--quick"]),
    "transfer": ([], ["--quick"]),
    "split": ([], ["--quick"]),
    "ladder": ([], ["--quick"]),
    "quality": ([], ["--quick"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized runs of every bench")
    ap.add_argument("--only", help="a comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        sys.exit(f"bench: no bench named {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ffbench-") as tmp:
        report = Path(tmp) / "rows.jsonl"
        for name in names:
            extra = BENCHES[name][1 if args.quick else 0]
            argv = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *extra]
            print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
            started = time.monotonic()
            code = subprocess.run([*argv, "--report", str(report)], cwd=ROOT).returncode
            print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
            if code != 0:
                failed.append(name)
        rows = read(report)
    rows += [Row(f"{name} bench", "failed", "-", None, "runs", False) for name in failed]
    text = table(rows)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
