"""/v1/ws: the same job events as the SSE stream, for all jobs or a chosen set.

Authenticate with ``Authorization: Bearer <token>`` on the upgrade request or, from a
browser (which cannot set that header), with a first message ``{"token": "..."}``
within 5 s; otherwise the socket is closed with code 4401. Then send
``{"subscribe": ["<job id>", ...]}`` (or ``"all"``, the default) at any time.
Every event is a JSON object with ``job_id``, ``status``, ``progress``, ``attempts``,
``reason``; ``{"type": "gap"}`` means some were missed: re-read the jobs you follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.auth import bearer, token_ok
from api.events import Subscription

router = APIRouter(tags=["events"])
AUTH_WAIT_S = 5.0
UNAUTHORIZED = 4401
MAX_SUBSCRIBE = 10_000


@router.websocket("/v1/ws")
async def events_socket(ws: WebSocket) -> None:
    await ws.accept()
    tokens = ws.app.state.tokens
    given = bearer(ws.headers.get("authorization"))
    if given is None:
        try:
            first = json.loads(await asyncio.wait_for(ws.receive_text(), AUTH_WAIT_S))
            given = first.get("token") if isinstance(first, dict) else None
        except (TimeoutError, ValueError, WebSocketDisconnect):
            given = None
    if not isinstance(given, str) or not token_ok(given, tokens):
        with contextlib.suppress(Exception):
            await ws.close(code=UNAUTHORIZED, reason="a valid token is required")
        return
    await ws.send_json({"type": "ready"})
    hub = ws.app.state.hub
    async with hub.subscribe(None) as sub:  # the hub filters by sub.job_ids
        listener = asyncio.create_task(_listen(ws, sub))
        try:
            while not listener.done():
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait(
                    {getter, listener}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    break
                event = getter.result()
                await ws.send_json({"type": "gap"} if event is None else _public(event))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            listener.cancel()


async def _listen(ws: WebSocket, sub: Subscription) -> None:
    """Apply ``{"subscribe": [...] | "all"}`` messages until the client leaves."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            try:
                message = json.loads(await ws.receive_text())
            except ValueError:
                await ws.send_json({"type": "error", "message": "send JSON"})
                continue
            choice = message.get("subscribe") if isinstance(message, dict) else None
            if choice == "all":
                sub.job_ids = None
            elif isinstance(choice, list) and len(choice) <= MAX_SUBSCRIBE:
                sub.job_ids = frozenset(str(i) for i in choice)
            else:
                await ws.send_json(
                    {"type": "error", "message": 'send {"subscribe": ["<job id>", ...]} or "all"'}
                )
                continue
            await ws.send_json({"type": "subscribed", "jobs": choice})


def _public(event: dict[str, Any]) -> dict[str, Any]:
    keys = ("seq", "type", "job_id", "status", "progress", "attempts", "reason", "error_code")
    return {k: event.get(k) for k in keys}
