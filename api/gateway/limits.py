"""The gateway's bounds on what one client may hold: a request body's size and the time it
may take to arrive, and the event streams (SSE) and WebSockets open per token.

Each is answered in the gateway's error format: 413 for a body too large, 408 (and the
connection closed) for one too slow, 429 ``too_busy`` for a stream past its token's cap
(a WebSocket is closed with 1013, "try again later").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.gateway import errors
from cluster import ErrorCode, FramefleetError

SSE = "event streams"
WEBSOCKETS = "WebSockets"


class StreamCaps:
    """Streams of each kind (:data:`SSE`, :data:`WEBSOCKETS`) held open per owner (a
    token's digest), at most ``limit`` each. Used from the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[tuple[str, str]] = Counter()

    def refusal(self, kind: str) -> str:
        return (
            f"at most {self.limit} {kind} open at once per token; close one, or raise "
            "FRAMEFLEET_MAX_STREAMS_PER_TOKEN"
        )

    @contextlib.contextmanager
    def hold(self, kind: str, owner: str) -> Iterator[None]:
        """One stream of ``kind`` for ``owner`` while the block runs; past the limit, a
        ``too_busy`` error (429) and nothing held."""
        key = (kind, owner)
        if self._open[key] >= self.limit:
            raise FramefleetError(self.refusal(kind), code=ErrorCode.TOO_BUSY)
        self._open[key] += 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]

    def open(self, kind: str, owner: str) -> int:
        return self._open[(kind, owner)]


class BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes gets a 413 before any
    route reads it (by Content-Length, or while streaming when there is none)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0
        refused = False

        async def counted() -> Message:
            # A streamed (chunked) body over the limit: answer 413 now, and tell the app
            # the client left, whatever it does with the body it had.
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True
                    await _too_large(self.limit)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not refused:  # after a 413, the app's own answer goes nowhere
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise


def _too_large(limit: int) -> JSONResponse:
    message = f"request body over {limit} bytes; split a large batch"
    return JSONResponse(errors.body(ErrorCode.TOO_LARGE, message), status_code=413)


CLOSE = (b"connection", b"close")


class BodyDeadline:
    """Pure ASGI middleware: a request body must have arrived ``seconds`` after its
    headers, else 408 and the connection is closed. A client that sends a large body a
    byte at a time would otherwise hold a connection, a task and its buffer as long as
    it likes.

    An answer sent before the body was read (a 413, a route that ignores the body) closes
    the connection too, so the rest of the body is never waited for."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0")
        pending = b"transfer-encoding" in headers or not length.isdigit() or int(length) > 0
        deadline = asyncio.get_running_loop().time() + self.seconds
        answered = expired = False

        async def timed() -> Message:
            nonlocal pending, expired
            if expired:
                return {"type": "http.disconnect"}
            if not pending:  # the body is in: later reads wait for a disconnect, unbounded
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                expired = True
                if not answered:
                    await _too_slow(self.seconds)(scope, receive, send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                pending = False
            return message

        async def closing(message: Message) -> None:
            nonlocal answered
            if expired:  # after a 408, the app's own answer goes nowhere
                return
            if message["type"] == "http.response.start":
                answered = True
                if pending:
                    message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            await send(message)

        try:
            await self.app(scope, timed, closing)
        except Exception:
            if not expired:
                raise


def _too_slow(seconds: float) -> JSONResponse:
    message = f"the request body did not arrive within {seconds:g} s of its headers; send it whole"
    return JSONResponse(
        errors.body(ErrorCode.TIMEOUT, message), status_code=408, headers={"Connection": "close"}
    )
