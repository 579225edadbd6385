"""Health checks, without a token: /healthz (process up), /readyz (cluster reachable)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(request: Request) -> dict[str, Any] | JSONResponse:
    """Ready when the coordinator answers (through Ray)."""
    try:
        ping = request.app.state.fleet.ping()
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "reason": f"coordinator not reachable: {exc}"},
            status_code=503,
        )
    return {"status": "ready", "queued": ping["queued"], "running": ping["running"]}
