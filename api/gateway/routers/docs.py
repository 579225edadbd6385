"""``/docs``: the API's interactive docs (Swagger UI) over ``/openapi.json``.

Served from the package like the status page, never from a CDN: Swagger UI is vendored
and pinned in ``ui/vendor/`` (its README says how to refresh it), and the page's one
script of its own is a file, so the Content-Security-Policy allows scripts from this
origin only. The policy is the status page's, with one addition: Swagger UI's stylesheet
draws its icons as ``data:`` images. No token is needed to read the docs; "Try it out"
sends the token given to Authorize.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.gateway.routers.ui import JS, PAGE_HEADERS, asset_response, read_asset

router = APIRouter(tags=["docs"], include_in_schema=False)
DOCS_HEADERS = PAGE_HEADERS | {
    "Content-Security-Policy": PAGE_HEADERS["Content-Security-Policy"].replace(
        "img-src 'self';", "img-src 'self' data:;"
    )
}
ASSETS = {
    "docs.js": ("docs.js", JS),
    "swagger-ui-bundle.js": ("vendor/swagger-ui-bundle.js", JS),
    "swagger-ui.css": ("vendor/swagger-ui.css", "text/css; charset=utf-8"),
}


@router.get("/docs")
async def page() -> Response:
    return Response(read_asset("docs.html"), media_type="text/html; charset=utf-8",
                    headers=DOCS_HEADERS)  # fmt: skip


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    return asset_response(name, ASSETS, DOCS_HEADERS)
