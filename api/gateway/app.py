"""The FastAPI gateway: thin. It validates, authenticates and streams; the engine decides.

``create_app(settings)`` connects to the coordinator on start-up (an embedded local
Ray unless ``ray_address`` is set) and subscribes once to its event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.access import Keyring
from api.gateway import errors
from api.gateway.auth import require_token, session_key
from api.gateway.events import EventHub
from api.gateway.limits import BodyDeadline, BodyLimit, StreamCaps
from api.gateway.metrics import metrics_router, registry_for
from api.gateway.routers import cluster as cluster_routes
from api.gateway.routers import docs, farm, health, jobs, packages, ui, ws
from api.gateway.schemas import JobView
from api.gateway.sessions import FILE_NAME as SIGNED_OUT_FILE
from api.gateway.sessions import SignedOut
from api.settings import Settings
from cluster import (
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


TENANTS_EVERY_S = 2.0


async def keep_tenants(keyring: Keyring, fleet: Fleet) -> None:
    """Give the coordinator the tokens file's tenants, and again whenever the file
    changes or the coordinator (restarted, or told otherwise by another gateway) holds
    others. Without a tokens file the coordinator's tenants are left as they are."""
    if keyring.path is None:
        return
    said = ""
    while True:
        try:
            await asyncio.to_thread(keyring.refresh)
            if await fleet.aio.get_tenants() != keyring.tenants:
                await fleet.aio.set_tenants(keyring.tenants)
                log.info("tenants from %s: %s", keyring.path,
                         ", ".join(t.name for t in keyring.tenants.known) or "none")  # fmt: skip
            said = ""
        except Exception as exc:  # a bad edit of the file, a coordinator restarting
            if str(exc) != said:  # once per problem, not every round
                log.warning("tenants not updated: %s", exc)
                said = str(exc)
        await asyncio.sleep(TENANTS_EVERY_S)


def create_app(settings: Settings, fleet: Fleet | None = None) -> FastAPI:
    """The app. ``fleet`` is connected on start-up unless given (and then not closed; the
    caller connected it with :meth:`Settings.connect`, which checks its media roots).

    ``framefleet serve`` connects first, from the main thread, and passes it in: Ray ties
    the processes of an embedded cluster to the thread that started them, and a
    start-up hook runs in a pool thread that is retired when idle."""
    keyring = settings.keyring()
    if not keyring:
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
        tenants = asyncio.create_task(keep_tenants(keyring, connected))
        stop = threading.Event()
        watchers = start_watchers(settings, connected, stop)
        try:
            yield
        finally:
            tenants.cancel()
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
        # /docs is served from the package, not a CDN (routers/docs.py); no /redoc.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keyring = keyring
    app.state.session_key = session_key(settings.data_dir)
    app.state.signed_out = SignedOut(settings.data_dir / SIGNED_OUT_FILE)
    app.state.streams = StreamCaps(settings.max_streams_per_token)
    app.add_exception_handler(FramefleetError, errors.framefleet_error)
    app.add_exception_handler(RequestValidationError, errors.validation_error)
    app.add_exception_handler(StarletteHTTPException, errors.http_error)
    app.add_exception_handler(Exception, errors.unexpected_error)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout_s)  # outermost: it closes
    app.include_router(health.router)
    secured = [Depends(require_token)]
    app.include_router(jobs.router, dependencies=secured)
    app.include_router(packages.router, dependencies=secured)  # a package's files, for players
    app.include_router(cluster_routes.router, dependencies=secured)
    app.include_router(farm.router, dependencies=secured)  # tenants, tokens, the audit trail
    app.include_router(metrics_router(settings.metrics_public))
    app.include_router(ws.router)  # authenticates itself (browsers cannot send headers)
    app.include_router(ui.router)  # the status page and its session
    app.include_router(docs.router)  # the API's docs (Swagger UI, vendored)
    return app
