"""Health checks, without a token: /healthz (the process is up) and /readyz (usable).

Ready means usable: the coordinator answers, and every node Ray lists as alive has
reported through its agent (its ffmpeg and GPUs) and finished proving its NVENC codecs,
so ``/v1/nodes`` and ``/v1/presets`` are complete. Until then /readyz is 503 and says
what it waits for."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> dict[str, Any] | JSONResponse:
    """Ready when the coordinator answers and every alive node has reported."""
    try:
        ping = await request.app.state.fleet.aio.ping()
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "reason": f"coordinator not reachable: {exc}"},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    if not ping["ready"]:
        waiting = "; ".join(ping["waiting_for"]) or "the first node report"
        return JSONResponse(
            {"status": "starting", "reason": f"waiting for nodes: {waiting}"},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    return {
        "status": "ready",
        "nodes": ping["nodes"],
        "queued": ping["queued"],
        "running": ping["running"],
    }
