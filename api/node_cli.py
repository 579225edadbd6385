"""``framefleet node``: join this machine to a render farm with what it really has.

``node start`` detects the GPUs (NVML, or a static inventory), proves their NVENC codecs
with trial encodes, and runs ``ray start`` with the CPU count, Ray GPUs, per-GPU memory
and session resources and node labels (see ``cluster.register``). ``node detect`` shows
the same without starting anything.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cluster import INVENTORY_ENV, LocalNode, detect_local

node_app = typer.Typer(help="Join this machine to a farm, or show what it would offer.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Inventory = Annotated[
    Path | None,
    typer.Option(
        "--gpu-inventory",
        envvar=INVENTORY_ENV,
        help="Declare GPUs in a JSON file instead of reading NVML (simulation, no driver).",
    ),
]
NumCpus = Annotated[
    int | None, typer.Option("--num-cpus", min=0, help="Cores to offer (default: all).")
]


def _show(node: LocalNode) -> None:
    err.print(f"GPU source: {node.source}; {len(node.gpus)} GPU(s)")
    if not node.gpus:
        return
    table = Table("#", "UUID", "model", "memory", "sessions", "h264", "hevc", "av1")
    for g in node.gpus:
        caps = node.codecs.get(g.uuid, {})
        table.add_row(
            str(g.index),
            g.uuid,
            g.name,
            f"{g.memory_total_mb} MiB",
            str(g.max_encoder_sessions or "no cap"),
            *(str(caps[c].state) if c in caps else "-" for c in ("h264", "hevc", "av1")),
        )
    err.print(table)
    for g in node.gpus:
        for codec, cap in node.codecs.get(g.uuid, {}).items():
            if cap.state == "failed":
                err.print(f"  GPU {g.index} {codec}: {cap.reason}")


@node_app.command()
def detect(
    gpu_inventory: Inventory = None,
    num_cpus: NumCpus = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show this machine's GPUs, their proven NVENC codecs, and what it would register."""
    node = detect_local(gpu_inventory, num_cpus)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "source": node.source,
                    "gpus": [g.to_dict() for g in node.gpus],
                    "nvenc": {
                        uuid: {c: cap.to_dict() for c, cap in caps.items()}
                        for uuid, caps in node.codecs.items()
                    },
                    "ray_start_args": node.registration.ray_start_args(),
                }
            )
        )
        return
    _show(node)
    out.print(" ".join(shlex.quote(a) for a in node.registration.ray_start_args()))


@node_app.command()
def start(
    head: Annotated[
        bool, typer.Option("--head", help="Start the head node of a new farm.")
    ] = False,
    address: Annotated[
        str | None, typer.Option("--address", help="Join the farm whose head is HOST:PORT.")
    ] = None,
    port: Annotated[int, typer.Option(help="The head's GCS port (--head only).")] = 6379,
    gpu_inventory: Inventory = None,
    num_cpus: NumCpus = None,
    block: Annotated[
        bool, typer.Option("--block", help="Stay in the foreground (for systemd).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the ray start command; run nothing.")
    ] = False,
) -> None:
    """Start Ray on this machine with the resources framefleet schedules by."""
    if head == (address is not None):
        raise typer.BadParameter("give exactly one of --head or --address HEAD:PORT")
    node = detect_local(gpu_inventory, num_cpus)
    _show(node)
    ray = str(Path(sys.executable).with_name("ray"))
    argv = [ray, "start", *(["--head", f"--port={port}"] if head else [f"--address={address}"])]
    argv += node.registration.ray_start_args()
    argv += ["--disable-usage-stats"] + (["--block"] if block else [])
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "token")
    if gpu_inventory is not None:
        env[INVENTORY_ENV] = str(gpu_inventory.resolve())  # the node agent reads it
    shown = shlex.join(argv)
    if gpu_inventory is not None:
        shown = f"{INVENTORY_ENV}={shlex.quote(env[INVENTORY_ENV])} {shown}"
    if dry_run:
        out.print(shown)
        return
    err.print(f"running: {shown}")
    code = subprocess.call(argv, env=env)
    if code == 0 and head and not block:
        err.print(
            f"head started. On each other machine: framefleet node start --address "
            f"<this host>:{port} (copy ~/.ray/auth_token there first, or set RAY_AUTH_TOKEN)"
        )
    raise typer.Exit(code)
