"""/v1/whoami, /v1/audit, /v1/tenants and /v1/tokens: who calls, what was done, and who
shares the farm.

The audit trail is for operators and admins; tenants and tokens for admins. Tokens are
listed by name, tenant and role: never a token, never its hash.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from api.access import Keyring
from api.gateway.auth import ADMIN, OPERATOR, VIEWER, caller_of, identity_of

router = APIRouter(prefix="/v1", tags=["farm"])


@router.get("/whoami", dependencies=[VIEWER])
async def whoami(request: Request) -> dict[str, str]:
    """The caller's token name, tenant and role."""
    holder = identity_of(request)
    return {"name": holder.name, "tenant": holder.tenant, "role": str(holder.role)}


@router.get("/audit", dependencies=[OPERATOR])
async def audit(
    request: Request,
    after: Annotated[int, Query(ge=0, description="the last seq of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """Who (token name, tenant) did what (submit, cancel, retry, drain, undrain, release,
    token and tenant changes) to what, and when; oldest first, a page at a time."""
    entries = await request.app.state.fleet.aio.audit(after, limit, tenant, action)
    return {
        "entries": [e.to_dict() for e in entries],
        "next_after": entries[-1].seq if len(entries) == limit else None,
    }


@router.get("/tenants", dependencies=[ADMIN])
async def tenants(request: Request) -> dict[str, Any]:
    """The tenants in force: weight, share of the farm, limits and media roots."""
    known = await request.app.state.fleet.aio.get_tenants()
    return {
        "tenants": [
            {**t.to_dict(), "share": round(known.weight_share(t.name), 4)} for t in known.known
        ]
    }


@router.get("/tokens", dependencies=[ADMIN])
async def tokens(request: Request) -> dict[str, Any]:
    """The tokens the gateway accepts, by name (never a token or its hash)."""
    keyring: Keyring = request.app.state.keyring
    return {"tokens": keyring.listing()}


@router.get("/speeds", dependencies=[OPERATOR])
async def speeds(
    request: Request,
    samples: Annotated[bool, Query(description="also a page of the kept runs")] = False,
    after: Annotated[int, Query(ge=0, description="the last seq of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 5000,
) -> dict[str, Any]:
    """What the farm learned of its speeds: each device's factor over the static table
    and its runs; with ``samples``, a page of the kept runs (``framefleet speeds
    export`` reads them all)."""
    found: dict[str, Any] = await request.app.state.fleet.aio.speeds(samples, after, limit)
    return found


@router.post("/speeds", dependencies=[ADMIN])
async def load_speeds(
    request: Request,
    body: Annotated[list[dict[str, Any]], Body(embed=True, alias="samples", max_length=5000)],
) -> dict[str, int]:
    """Import samples another farm exported (a new farm starts warm); how many were new."""
    added = await request.app.state.fleet.aio.load_speeds(body, caller_of(request))
    return {"imported": added}
