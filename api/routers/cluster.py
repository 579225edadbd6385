"""/v1/nodes and /v1/presets: the cluster as the scheduler sees it, and what it offers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.schemas import PresetsView
from cluster import CATALOG, CODECS, CONTAINERS, Hardware, Speed

router = APIRouter(prefix="/v1", tags=["cluster"])


@router.get("/nodes")
def nodes(request: Request) -> list[dict[str, Any]]:
    """Nodes with CPUs, GPUs (readings, NVENC codecs and their verification state), running
    jobs."""
    result: list[dict[str, Any]] = request.app.state.fleet.nodes()
    return result


@router.get("/presets", response_model=PresetsView)
def presets(request: Request) -> PresetsView:
    """Codecs, encoders available in the cluster now, quality and speed options."""
    nodes = request.app.state.fleet.nodes()
    nvenc = {
        codec
        for node in nodes
        for gpu in node["gpus"]
        for codec, cap in gpu["nvenc"].items()
        if cap["state"] in ("verified", "declared")
    }
    built = request.app.state.encoders
    encoders = []
    for e in CATALOG:
        if e.name not in built:
            continue
        usable = e.codec in nvenc if e.is_nvenc else any(n["cpus"] > 0 for n in nodes)
        encoders.append(
            {"name": e.name, "codec": e.codec, "hardware": str(e.hardware), "available": usable}
        )
    return PresetsView(
        codecs=list(CODECS),
        encoders=encoders,
        speeds=[str(s) for s in Speed],
        hardware=[str(h) for h in Hardware],
        quality={
            "min": 0,
            "max": 51,
            "default": {e.codec: e.default_quality for e in CATALOG if not e.is_nvenc},
        },
        containers=sorted(CONTAINERS),
    )
