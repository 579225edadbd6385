"""/v1/nodes and /v1/presets: the cluster as the scheduler sees it, and what it offers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.gateway.auth import OPERATOR, VIEWER, caller_of
from api.gateway.schemas import PresetsView
from cluster import CATALOG, CODECS, CONTAINERS, Hardware, NodeRecord, Speed

router = APIRouter(prefix="/v1", tags=["cluster"])


@router.get("/nodes", dependencies=[VIEWER])
async def nodes(request: Request) -> list[dict[str, Any]]:
    """Nodes with CPUs, GPUs (readings, NVENC codecs and their verification state), running
    jobs."""
    nodes = await request.app.state.fleet.aio.nodes(caller_of(request))
    return [node.to_dict() for node in nodes]


@router.post("/nodes/{name}/drain", dependencies=[OPERATOR])
async def drain(name: str, request: Request) -> dict[str, Any]:
    """Drain a node (by id, address or hostname): its running jobs finish, no new work
    goes there; it shows as ``draining``, then ``drained``, and stays so across restarts."""
    node: NodeRecord = await request.app.state.fleet.aio.drain(name, True, caller_of(request))
    return node.to_dict()


@router.delete("/nodes/{name}/drain", dependencies=[OPERATOR])
async def undrain(name: str, request: Request) -> dict[str, Any]:
    """Put a drained node back in service."""
    node: NodeRecord = await request.app.state.fleet.aio.drain(name, False, caller_of(request))
    return node.to_dict()


@router.post("/nodes/{name}/release", dependencies=[OPERATOR])
async def release(name: str, request: Request) -> dict[str, str]:
    """Lift the quarantine of a node (by id, address or hostname) or of a GPU (by UUID)."""
    return {"released": await request.app.state.fleet.aio.release(name, caller_of(request))}


@router.get("/presets", response_model=PresetsView, dependencies=[VIEWER])
async def presets(request: Request) -> PresetsView:
    """Codecs, the encoders of the catalog with the nodes that can run each now (their own
    ffmpeg builds and GPUs), quality and speed options."""
    nodes = await request.app.state.fleet.aio.nodes()
    encoders = []
    for e in CATALOG:
        able = [node.address for node in nodes if node.can_run(e)]
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
