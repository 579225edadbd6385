"""/v1/nodes and /v1/presets: the cluster as the scheduler sees it, and what it offers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.gateway.schemas import PresetsView
from cluster import CATALOG, CODECS, CONTAINERS, Encoder, Hardware, Speed

router = APIRouter(prefix="/v1", tags=["cluster"])


@router.get("/nodes")
def nodes(request: Request) -> list[dict[str, Any]]:
    """Nodes with CPUs, GPUs (readings, NVENC codecs and their verification state), running
    jobs."""
    result: list[dict[str, Any]] = request.app.state.fleet.nodes()
    return result


def _nodes_with(encoder: Encoder, nodes: list[dict[str, Any]]) -> list[str]:
    """Addresses of nodes that can run ``encoder`` now: their own ffmpeg has it, and for
    NVENC one of their GPUs has proven (or declares) the codec."""
    able = []
    for node in nodes:
        if encoder.name not in ((node.get("ffmpeg") or {}).get("encoders") or []):
            continue
        if encoder.is_nvenc:
            usable = any(
                (g["nvenc"].get(encoder.codec) or {}).get("state") in ("verified", "declared")
                for g in node["gpus"]
            )
        else:
            usable = node["cpus"] > 0
        if usable:
            able.append(node["address"])
    return able


@router.get("/presets", response_model=PresetsView)
def presets(request: Request) -> PresetsView:
    """Codecs, the encoders of the catalog with the nodes that can run each now (their own
    ffmpeg builds and GPUs), quality and speed options."""
    nodes = request.app.state.fleet.nodes()
    encoders = []
    for e in CATALOG:
        able = _nodes_with(e, nodes)
        encoders.append({"name": e.name, "codec": e.codec, "hardware": str(e.hardware),
                         "available": bool(able), "nodes": able})  # fmt: skip
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
