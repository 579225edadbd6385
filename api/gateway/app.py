"""The FastAPI gateway: thin. It validates, authenticates and streams; the engine decides.

``create_app(settings)`` connects to the coordinator on start-up (an embedded local
Ray unless ``ray_address`` is set) and subscribes once to its event log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.gateway import errors
from api.gateway.auth import require_token
from api.gateway.events import EventHub
from api.gateway.metrics import metrics_router, registry_for
from api.gateway.routers import cluster as cluster_routes
from api.gateway.routers import health, jobs, packages, ui, ws
from api.gateway.schemas import JobView
from api.settings import Settings
from cluster import (
    ErrorCode,
    FolderWatcher,
    FramefleetError,
    WatchRule,
    check_rule,
    confine_path,
)

if TYPE_CHECKING:
    from cluster import Fleet

log = logging.getLogger("framefleet.api")
watch_log = logging.getLogger("framefleet.watch")
VERSION = version("framefleet")


def start_watchers(
    settings: Settings, fleet: Fleet, stop: threading.Event
) -> list[threading.Thread]:
    """One thread per configured watch folder; folders must lie inside the media roots."""
    roots = settings.roots(serving=True)
    threads = []
    for i, wf in enumerate(settings.watch_folders):
        folder = confine_path(str(wf.folder), roots, "watch folder")
        out = confine_path(str(wf.output_dir), roots, "output folder") if wf.output_dir else None
        extra = {"extensions": tuple(wf.extensions)} if wf.extensions else {}
        rule = WatchRule(
            folder=folder,
            output_dir=out,
            template=wf.template(),
            output_ext=wf.output_ext,
            stable_s=wf.stable_s,
            recursive=wf.recursive,
            **extra,
        )
        check_rule(rule)
        watcher = FolderWatcher(
            rule, settings.data_dir / "watch.sqlite3", fleet.submit, say=watch_log.info
        )
        thread = threading.Thread(target=watcher.run, args=(stop,), name=f"watch-{i}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def create_app(settings: Settings, fleet: Fleet | None = None) -> FastAPI:
    """The app. ``fleet`` is connected on start-up unless given (and then not closed; the
    caller connected it with :meth:`Settings.connect`, which checks its media roots).

    ``framefleet serve`` connects first, from the main thread, and passes it in: Ray ties
    the processes of an embedded cluster to the thread that started them, and a
    start-up hook runs in a pool thread that is retired when idle."""
    tokens = tuple(t.encode() for t in settings.tokens())
    if not tokens:
        log.warning("no API tokens configured: every /v1 request will get 401")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = fleet is None
        # Never in a pool thread (see above): blocking here only delays start-up.
        connected: Fleet = fleet if fleet is not None else settings.connect(serving=True)
        app.state.fleet = connected
        app.state.metrics = registry_for(connected.metrics)
        app.state.hub = hub = EventHub(
            lambda after, timeout: connected.aio.events(after, None, timeout),
            await connected.aio.event_cursor(),
            lambda job: JobView.of(job).model_dump_json().encode(),
        )
        hub.start()
        stop = threading.Event()
        watchers = start_watchers(settings, connected, stop)
        try:
            yield
        finally:
            stop.set()
            for thread in watchers:
                await run_in_threadpool(thread.join, 10)
            await hub.stop()
            if own:
                connected.close()

    app = FastAPI(
        title="framefleet",
        version=VERSION,
        summary="GPU-aware video transcoding on a Ray cluster",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = tokens
    app.add_exception_handler(FramefleetError, errors.framefleet_error)
    app.add_exception_handler(RequestValidationError, errors.validation_error)
    app.add_exception_handler(StarletteHTTPException, errors.http_error)
    app.add_exception_handler(Exception, errors.unexpected_error)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.include_router(health.router)
    secured = [Depends(require_token)]
    app.include_router(jobs.router, dependencies=secured)
    app.include_router(packages.router, dependencies=secured)  # a package's files, for players
    app.include_router(cluster_routes.router, dependencies=secured)
    app.include_router(metrics_router(settings.metrics_public))
    app.include_router(ws.router)  # authenticates itself (browsers cannot send headers)
    app.include_router(ui.router)  # the status page and its session
    return app


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
