"""/v1/ws: the same job events as the SSE stream, for all jobs or a chosen set.

Authenticate with ``Authorization: Bearer <token>`` on the upgrade request, with the
status page's session cookie (from the gateway's own origin), or, from another browser
page (which cannot set that header), with a first message ``{"token": "..."}`` within
5 s; otherwise the socket is closed with code 4401. A token holds at most
``max_streams_per_token`` sockets at once: one more is closed with 1013 (try again
later). Then send
``{"subscribe": ["<job id>", ...]}`` (or ``"all"``, the default) at any time, with
``"since": <seq>`` (the last event's ``seq`` a reconnecting client saw) to first get
the events it missed.
Every event is a JSON object with ``seq``, ``type``, ``job_id``, ``status``, ``attempts``,
``reason``, ``error_code``, ``progress`` and ``time``; ``{"type": "gap"}`` means some
were missed: re-read the jobs you follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.access import Identity
from api.gateway.auth import (
    REVOKED_CHECK_S,
    bearer,
    cookie_holder,
    identify,
    same_origin,
    still_held,
)
from api.gateway.events import Subscription
from api.gateway.limits import WEBSOCKETS, StreamCaps
from cluster import JobEvent

router = APIRouter(tags=["events"])
AUTH_WAIT_S = 5.0
UNAUTHORIZED = 4401
BAD_FRAME = 4400
TOO_MANY = 1013  # "try again later"
MAX_WAITING_FOR_AUTH = 64
"""Sockets that may wait for their token message at once; more are closed at once."""
MAX_SUBSCRIBE = 10_000
_waiting = 0


@router.websocket("/v1/ws")
async def events_socket(ws: WebSocket) -> None:
    global _waiting
    given = bearer(ws.headers.get("authorization"))
    session = cookie_holder(ws) if given is None and same_origin(ws) else None
    if session is not None:
        await ws.accept()  # the status page: its session cookie, from its own origin
        await _held(ws, session)
        return
    if given is None and _waiting >= MAX_WAITING_FOR_AUTH:
        await ws.close(code=TOO_MANY, reason="too many unauthenticated sockets; retry")
        return
    await ws.accept()
    if given is None:
        _waiting += 1
        try:
            given = await _token_message(ws)
        except _BadFrame:
            with contextlib.suppress(Exception):
                await ws.close(code=BAD_FRAME, reason='send {"token": "..."} as text')
            return
        finally:
            _waiting -= 1
    holder = await identify(ws, given) if isinstance(given, str) else None
    if holder is None:
        with contextlib.suppress(Exception):
            await ws.close(code=UNAUTHORIZED, reason="a valid token is required")
        return
    await _held(ws, holder)


async def _held(ws: WebSocket, holder: Identity) -> None:
    """Serve an accepted socket as one of its token's, or close it past their cap."""
    caps: StreamCaps = ws.app.state.streams
    if caps.open(WEBSOCKETS, holder.key) >= caps.limit:
        with contextlib.suppress(Exception):
            await ws.close(code=TOO_MANY, reason=caps.refusal(WEBSOCKETS))
        return
    with caps.hold(WEBSOCKETS, holder.key):
        await _serve(ws, holder)


async def _serve(ws: WebSocket, holder: Identity) -> None:
    """Events to an authenticated socket until it leaves: its tenant's jobs' only,
    unless its role sees every tenant."""
    await ws.send_json({"type": "ready"})
    hub = ws.app.state.hub
    caller = holder.caller
    tenant = None if caller.every_tenant else caller.tenant
    async with hub.subscribe(None, tenant) as sub:  # the hub filters by job and tenant
        listener = asyncio.create_task(_listen(ws, sub))
        getter: asyncio.Task[JobEvent | None] | None = None
        try:
            while not listener.done():
                getter = getter or asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait(
                    {getter, listener}, timeout=REVOKED_CHECK_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                if not still_held(ws, holder):  # its token was revoked: the socket ends
                    await ws.close(code=UNAUTHORIZED, reason="the token was revoked")
                    break
                if getter in done:
                    event, getter = getter.result(), None
                    await ws.send_json({"type": "gap"} if event is None else event.to_dict())
                elif listener in done:
                    break
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            listener.cancel()
            if getter is not None:
                getter.cancel()


class _BadFrame(Exception):
    pass


async def _token_message(ws: WebSocket) -> str | None:
    """The token from the first message (text JSON), or ``None``; a binary first frame
    is a :class:`_BadFrame`."""
    try:
        message = await asyncio.wait_for(ws.receive(), AUTH_WAIT_S)
    except TimeoutError:
        return None
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is None:
        raise _BadFrame
    try:
        first = json.loads(text)
    except ValueError:
        return None
    token = first.get("token") if isinstance(first, dict) else None
    return token if isinstance(token, str) else None


async def _listen(ws: WebSocket, sub: Subscription) -> None:
    """Apply ``{"subscribe": [...] | "all"}`` messages until the client leaves."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            try:
                message = json.loads(frame.get("text") or "")
            except ValueError:
                await ws.send_json({"type": "error", "message": "send JSON as text"})
                continue
            choice = message.get("subscribe") if isinstance(message, dict) else None
            since = message.get("since") if isinstance(message, dict) else None
            if since is not None and (not isinstance(since, int) or since < 0):
                await ws.send_json({"type": "error", "message": "since must be an event seq"})
                continue
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
            if since is not None:  # what the client missed, then live events
                ids = sorted(sub.job_ids) if sub.job_ids is not None else None
                sub.replay(await ws.app.state.fleet.aio.events(since, ids, 0))
