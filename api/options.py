"""Command-line options shared by the local commands and the gateway client."""

from __future__ import annotations

from typing import Annotated

import typer

from cluster import Hardware, Speed

Codec = Annotated[str, typer.Option(help="h264, hevc or av1.")]
Quality = Annotated[
    int | None, typer.Option(min=0, max=51, help="0 best … 51 smallest (default per codec).")
]
SpeedOpt = Annotated[Speed, typer.Option("--speed", help="Encoder speed preset.")]
HardwareOpt = Annotated[Hardware, typer.Option("--hardware", help="auto, gpu (NVENC) or cpu.")]
Priority = Annotated[int, typer.Option(help="Higher runs first.")]
