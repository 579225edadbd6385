"""One table from the engine's errors to HTTP statuses, and the JSON error body.

Every error answer is ``{"error": {"code", "message"}}`` with a one-line message;
validation errors add ``"fields"``. A 500 never carries a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster import ErrorCode, FramefleetError, Kind

log = logging.getLogger("framefleet.api")

HTTP_STATUS: dict[Kind, int] = {
    Kind.REFUSED: 422,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.UNAUTHORIZED: 401,
    Kind.UNAVAILABLE: 503,
    Kind.BUSY: 429,
    Kind.SETUP: 503,
    Kind.FAILED: 400,
}
"""The one table from the engine's error kinds (see :mod:`cluster.errors`) to HTTP."""


def status_for(exc: FramefleetError) -> int:
    return HTTP_STATUS[exc.kind]


def body(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


RETRY_AFTER_S: dict[int, str] = {503: "5", 429: "30"}
"""When to try again: soon for a cluster that is restarting, later for a bound that frees
as jobs start or streams close."""


async def framefleet_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, FramefleetError):
        return await unexpected_error(request, exc)
    status = status_for(exc)
    after = RETRY_AFTER_S.get(status)
    headers = {"Retry-After": after} if after else None
    return JSONResponse(body(exc.code, str(exc)), status_code=status, headers=headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        return await unexpected_error(request, exc)
    fields = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # loc is ("body", character position)
            at = err.get("loc", ("body", "?"))[-1]
            why = (err.get("ctx") or {}).get("error", "invalid JSON")
            fields.append({"field": "body", "message": f"not valid JSON ({why}) at {at}"})
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        fields.append({"field": where or "body", "message": err.get("msg", "invalid")})
    first = fields[0] if fields else {"field": "body", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}"
    return JSONResponse(body(ErrorCode.INVALID_REQUEST, message, fields=fields), status_code=422)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        return await unexpected_error(request, exc)
    code = {
        401: ErrorCode.UNAUTHORIZED,
        403: ErrorCode.FORBIDDEN,
        404: ErrorCode.NOT_FOUND,
        405: ErrorCode.METHOD_NOT_ALLOWED,
        413: ErrorCode.TOO_LARGE,
    }
    return JSONResponse(
        body(code.get(exc.status_code, ErrorCode.HTTP_ERROR), str(exc.detail)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        body(ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); see the gateway's log"),
        status_code=500,
    )
