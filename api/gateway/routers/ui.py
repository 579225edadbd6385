"""``/ui``: the farm's status page, and the session that lets it call the API.

The page is static HTML, CSS and one script, served from the package (no CDN, nothing
inline, so the Content-Security-Policy allows only this origin). It reads the same
``/v1`` routes and ``/v1/ws`` events as any client, authenticated by the session cookie
:mod:`api.gateway.auth` describes. A finished package plays in the page with hls.js and
dash.js, vendored and pinned in ``ui/vendor/`` (its README says how to refresh them), and
loaded only when a package is shown.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from api.gateway.auth import (
    CROSS_SITE,
    SESSION_COOKIE,
    SESSION_S,
    UI_HEADER,
    cookie_holder,
    keyring_of,
    new_session,
    same_origin,
    session_expiry,
)

router = APIRouter(tags=["ui"], include_in_schema=False)
JS = "text/javascript; charset=utf-8"
ASSETS = {
    "app.js": ("app.js", JS),
    "app.css": ("app.css", "text/css; charset=utf-8"),
    "icon.svg": ("icon.svg", "image/svg+xml"),
    # The players, pinned (ui/vendor/README.md); hls.js's transmuxing worker is a file of
    # its own, so the worker is a script from this origin, not a blob.
    "hls.min.js": ("vendor/hls.min.js", JS),
    "hls.worker.js": ("vendor/hls.worker.js", JS),
    "dash.mediaplayer.min.js": ("vendor/dash.mediaplayer.min.js", JS),
}
PAGE_HEADERS = {
    # media-src is the one addition the players need. blob: Media Source Extensions play
    # from a blob: URL of a MediaSource that the player fills with segments it fetched
    # itself (connect-src 'self'). data: hls.js gives each subtitle <track> the empty
    # source `data:,WEBVTT` (for Chrome's captions menu) and adds the cues itself. Workers
    # fall back to script-src ('self': hls.js is given the URL of its worker file), so
    # no worker-src and no blob: script.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; media-src blob: data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
WRONG_TOKEN = HTTPException(status_code=401, detail="that token is not valid for this gateway")


def read_asset(path: str) -> bytes:
    return files("api.gateway").joinpath("ui", *path.split("/")).read_bytes()


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
async def page() -> Response:
    return Response(read_asset("index.html"), media_type="text/html; charset=utf-8",
                    headers=PAGE_HEADERS)  # fmt: skip


@router.get("/ui/assets/{name}")
async def asset(name: str) -> Response:
    return asset_response(name, ASSETS, PAGE_HEADERS)


def asset_response(
    name: str, assets: dict[str, tuple[str, str]], headers: dict[str, str]
) -> Response:
    """One of ``assets`` (name -> path under ``ui/``, content type), with ``headers``; a
    404 for another name, or for a vendored file an install left out."""
    found = assets.get(name)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no asset {name!r}")
    path, kind = found
    try:
        content = read_asset(path)
    except FileNotFoundError:  # an install without ui/vendor/ (its package data)
        raise HTTPException(status_code=404, detail=f"{name} is not installed here") from None
    return Response(content, media_type=kind, headers=headers)


def _from_page(request: Request) -> None:
    if request.headers.get(UI_HEADER) != "1" or not same_origin(request):
        raise CROSS_SITE


@router.get("/ui/session")
async def session(request: Request) -> dict[str, bool]:
    """Whether the browser holds a valid session (the page asks for a token if not)."""
    return {"signed_in": cookie_holder(request) is not None}


@router.post("/ui/session", status_code=204)
async def sign_in(
    request: Request, token: Annotated[str, Body(embed=True, max_length=512)]
) -> Response:
    """Trade an API token for a session cookie (the token is not kept in the browser)."""
    _from_page(request)
    holder = await run_in_threadpool(keyring_of(request).identify, token)  # scrypt: a thread
    if holder is None:
        raise WRONG_TOKEN
    value = new_session(request.app.state.session_key, holder.key)
    response = Response(status_code=204)
    response.set_cookie(
        SESSION_COOKIE, value, max_age=SESSION_S, path="/", httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


@router.delete("/ui/session", status_code=204)
async def sign_out(request: Request) -> Response:
    """End the browser's session: here (its cookie is refused from now on, wherever it
    was copied to, across gateway restarts) and in the browser."""
    _from_page(request)
    value = request.cookies.get(SESSION_COOKIE, "")
    expires = session_expiry(value) if cookie_holder(request) is not None else None
    if expires is not None:  # only a live session this gateway made is kept
        await run_in_threadpool(request.app.state.signed_out.add, value, expires)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
