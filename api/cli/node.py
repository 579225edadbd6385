"""``framefleet node``: join this machine to a render farm with what it really has.

``node start`` finds this node's ffmpeg, detects the GPUs (NVML, or a static
inventory), proves their NVENC codecs with trial encodes, and runs ``ray start`` with
the CPU count, Ray GPUs, per-GPU memory and session resources and node labels (see
``cluster.nodes.register``). ``node detect`` shows the same without starting anything.

The farm's Ray token (see ``cluster.ray_edge.token``): ``node start --head`` makes it where
Ray looks when there is none and says how workers get it; ``node token`` prints it;
``node start --address`` without one stops with one line saying what to do.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

import cluster  # what a node command runs is read when it runs (not for every command)
from cluster import (
    FFMPEG_ENV,
    INVENTORY_ENV,
    MEDIA_MAP_ENV,
    NO_MEDIA_ENV,
    SCRATCH_BYTES_ENV,
    SCRATCH_ENV,
    ConfigError,
)

if TYPE_CHECKING:
    from cluster import LocalNode

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
Ffmpeg = Annotated[
    str | None,
    typer.Option(
        "--ffmpeg",
        envvar=FFMPEG_ENV,
        help="This node's ffmpeg (a path or a name on PATH) [ffmpeg].",
        show_default=False,
    ),
]

Scratch = Annotated[
    Path | None,
    typer.Option(
        "--scratch",
        envvar=SCRATCH_ENV,
        help="Where this node keeps media fetched from and bound for object storage "
        "[$TMPDIR/framefleet-scratch].",
        show_default=False,
    ),
]
ScratchBytes = Annotated[
    int | None,
    typer.Option(
        "--scratch-bytes",
        envvar=SCRATCH_BYTES_ENV,
        min=0,
        help="At most this many bytes in scratch at once [what the disk has].",
        show_default=False,
    ),
]
MediaMap = Annotated[
    list[str] | None,
    typer.Option(
        "--media-map",
        help="ROOT=PATH: this machine mounts the media root ROOT at PATH (repeat for each "
        "root; e.g. /srv/media=/mnt/nas/media).",
        show_default=False,
    ),
]
NoMedia = Annotated[
    bool,
    typer.Option(
        "--no-media",
        help="This machine sees no media root: its jobs' media move through the farm, from "
        "and to a node that sees them.",
    ),
]


def _show(node: LocalNode) -> None:
    encoders = ", ".join(e.name for e in node.ffmpeg.catalog()) or "none of framefleet's"
    err.print(f"ffmpeg: {node.ffmpeg.path} ({node.ffmpeg.version}); encoders: {encoders}")
    err.print(f"GPU source: {node.source}; {len(node.gpus)} GPU(s)")
    if not node.gpus:
        return
    table = Table("#", "UUID", "model", "memory", "sessions", *cluster.CODECS)
    for g in node.gpus:
        caps = node.codecs.get(g.uuid, {})
        table.add_row(
            str(g.index),
            g.uuid,
            g.name,
            f"{g.memory_total_mb} MiB",
            str(g.max_encoder_sessions or "no cap"),
            *(str(caps[c].state) if c in caps else "-" for c in cluster.CODECS),
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
    ffmpeg: Ffmpeg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show this machine's ffmpeg, GPUs, proven NVENC codecs, and what it would register."""
    node = cluster.detect_local(gpu_inventory, num_cpus, ffmpeg)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "ffmpeg": node.ffmpeg.to_dict(),
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
    ffmpeg: Ffmpeg = None,
    scratch: Scratch = None,
    scratch_bytes: ScratchBytes = None,
    media_map: MediaMap = None,
    no_media: NoMedia = False,
    temp_dir: Annotated[
        Path | None,
        typer.Option("--temp-dir", help="Ray's session and log folder [Ray's default]."),
    ] = None,
    node_ip_address: Annotated[
        str | None,
        typer.Option("--node-ip-address", help="The address other nodes reach this one at."),
    ] = None,
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
    if media_map and no_media:
        raise typer.BadParameter("give --media-map or --no-media, not both")
    # A bad entry stops here, in one line (the variable, from an env file, too).
    mapped = cluster.parse_media_map(
        ",".join(media_map) if media_map else os.environ.get(MEDIA_MAP_ENV)
    )
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "token")
    if not dry_run and address is not None:  # a worker: the token and the head first
        _join_check(address, env)
    node = cluster.detect_local(gpu_inventory, num_cpus, ffmpeg)
    _show(node)
    if not dry_run and head:  # the head's token once what it offers checks out
        found, made = cluster.ensure_token(env)
        if made:
            err.print(f"made the farm's Ray token in {found.where} (mode 600)")
        err.print(_join_hint(port))
    ray = str(Path(sys.executable).with_name("ray"))
    argv = [ray, "start", *(["--head", f"--port={port}"] if head else [f"--address={address}"])]
    argv += node.registration.ray_start_args()
    if temp_dir is not None:
        argv.append(f"--temp-dir={temp_dir.resolve()}")
    if node_ip_address is not None:
        argv.append(f"--node-ip-address={node_ip_address}")
    argv += ["--disable-usage-stats"] + (["--block"] if block else [])
    # What the node's agent and encoders read, through the raylet's environment.
    shown_env = _node_env(node.ffmpeg.path, gpu_inventory, scratch, scratch_bytes)
    if mapped:
        shown_env[MEDIA_MAP_ENV] = ",".join(f"{root}={path}" for root, path in mapped)
    if no_media:
        shown_env[NO_MEDIA_ENV] = "1"
    env.update(shown_env)
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in shown_env.items())
    shown += " " + shlex.join(argv)
    if dry_run:
        out.print(shown)
        return
    err.print(f"running: {shown}")
    if block:
        sys.stdout.flush()
        sys.stderr.flush()
        # Become `ray start`: the service manager's signals reach Ray itself.
        os.execve(argv[0], argv, env)  # noqa: S606 (argv built above, no shell)
    code = subprocess.call(argv, env=env)
    if code == 0 and head:
        err.print(f"head started on port {port}. {_join_hint(port)}")
    raise typer.Exit(code)


def _node_env(
    ffmpeg: str, inventory: Path | None, scratch: Path | None, scratch_bytes: int | None
) -> dict[str, str]:
    env = {FFMPEG_ENV: ffmpeg}
    if inventory is not None:
        env[INVENTORY_ENV] = str(inventory.resolve())
    if scratch is not None:
        env[SCRATCH_ENV] = str(scratch.resolve())
    if scratch_bytes is not None:
        env[SCRATCH_BYTES_ENV] = str(scratch_bytes)
    return env


def _join_check(address: str, env: dict[str, str]) -> None:
    """A worker must have the farm's token, and the head must answer."""
    if cluster.find_token(env) is None:
        raise ConfigError(cluster.missing_token_message(address))
    cluster.check_reachable(address)


def _join_hint(port: int) -> str:
    return (
        "workers join with the same Ray token: run `framefleet node token` here, then on "
        f"each worker set RAY_AUTH_TOKEN=<token> (or save it to ~/.ray/auth_token, mode 600) "
        f"and run `framefleet node start --address <this host>:{port}`"
    )


@node_app.command()
def token() -> None:
    """Print the farm's Ray token (for RAY_AUTH_TOKEN or ~/.ray/auth_token on workers)."""
    found = cluster.find_token(os.environ)
    if found is None:
        raise ConfigError(
            "no Ray token on this machine; `framefleet node start --head` makes one, or "
            "copy the head's here"
        )
    err.print(f"from {found.where}:")
    out.print(found.value, highlight=False)
