"""Command-line options shared by the local commands and the gateway client."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster import Deinterlace, Hardware, Speed, Tonemap

Codec = Annotated[str, typer.Option(help="h264, hevc or av1.")]
Quality = Annotated[
    int | None, typer.Option(min=0, max=51, help="0 best … 51 smallest (default per codec).")
]
SpeedOpt = Annotated[Speed, typer.Option("--speed", help="Encoder speed preset.")]
HardwareOpt = Annotated[Hardware, typer.Option("--hardware", help="auto, gpu (NVENC) or cpu.")]
Priority = Annotated[int, typer.Option(help="Higher runs first.")]
DeinterlaceOpt = Annotated[
    Deinterlace,
    typer.Option(
        "--deinterlace",
        help="auto: interlaced sources deinterlaced at their frame rate (25i to 25p), "
        "telecined film back to 24 frames/s; frame or field: always, at the frame or the "
        "field rate (25i to 50p); off: fields kept, flagged interlaced.",
    ),
]
SdrOpt = Annotated[
    bool, typer.Option("--sdr", help="Tone-map an HDR source to BT.709 SDR even for hevc/av1.")
]
TonemapOpt = Annotated[Tonemap, typer.Option("--tonemap", help="How HDR is tone-mapped to SDR.")]
SplitOpt = Annotated[
    str,
    typer.Option(
        "--split",
        help="auto, off or SECONDS: encode the video in chunks of about SECONDS across "
        "the farm, joined frame-exact (auto: inputs over a minute, when encoders are free).",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="FRAMEFLEET_DATA_DIR",
        help="Job database, API token and Ray files [$XDG_DATA_HOME/framefleet or "
        "~/.local/share/framefleet]; the same for `serve` and the client.",
        show_default=False,
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="FRAMEFLEET_RAY_ADDRESS",
        help="Join this Ray cluster (HOST:PORT) instead of starting a local one.",
    ),
]
