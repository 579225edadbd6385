"""Who may call the gateway: a bearer token, or the status page's session cookie.

Tokens are compared in constant time. A 401 is the same whatever the path, so it never
reveals whether a job exists.

The page (``/ui``) asks for a token once and trades it for a session cookie: HttpOnly
(out of reach of the page's scripts), ``SameSite=Strict``, and stateless: its value is
an expiry and an HMAC of it keyed by the token, so the token itself is never in it, a
gateway restart keeps the session, and removing the token from the configuration ends
every session made with it. A request that changes something with the cookie must also
carry ``X-Framefleet-UI: 1`` and, when the browser says where it comes from, come from
this origin: a cross-site form cannot set the header, and a cross-site script would need
CORS, which the gateway never grants.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

UNAUTHORIZED = HTTPException(
    status_code=401,
    detail="a valid bearer token is required (Authorization: Bearer <token>)",
    headers={"WWW-Authenticate": "Bearer"},
)
CROSS_SITE = HTTPException(
    status_code=403,
    detail="a change made with the page's session must come from the page itself "
    "(X-Framefleet-UI: 1, same origin)",
)
SESSION_COOKIE = "framefleet_session"
SESSION_S = 12 * 3600
UI_HEADER = "x-framefleet-ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_ok(given: str, tokens: tuple[bytes, ...]) -> bool:
    """Whether ``given`` is one of ``tokens``; every token is compared, equal time."""
    raw = given.encode()
    found = False
    for token in tokens:
        found |= hmac.compare_digest(raw, token)
    return found and bool(tokens)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _mac(token: bytes, expires: int) -> str:
    return hmac.new(token, f"framefleet-ui:{expires}".encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    """A session cookie's value for a valid ``token``."""
    expires = int((time.time() if now is None else now) + SESSION_S)
    return f"{expires}.{_mac(token.encode(), expires)}"


def session_ok(value: str | None, tokens: tuple[bytes, ...], now: float | None = None) -> bool:
    """Whether a session cookie was made with one of ``tokens`` and has not expired."""
    if not value or not tokens:
        return False
    stamp, _, mac = value.partition(".")
    if not stamp.isdigit() or int(stamp) < (time.time() if now is None else now):
        return False
    found = False
    for token in tokens:
        found |= hmac.compare_digest(mac.encode(), _mac(token, int(stamp)).encode())
    return found


def same_origin(conn: HTTPConnection) -> bool:
    """Whether the browser's ``Origin`` (when it sends one) is this gateway's own, and
    its ``Sec-Fetch-Site`` (when it sends one) says so too."""
    origin = conn.headers.get("origin")
    host = conn.headers.get("host", "")
    if origin is not None and origin.split("://", 1)[-1] != host:
        return False
    return conn.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def scoped_key(request: Request, key: str | None) -> str | None:
    """An ``Idempotency-Key`` as the engine stores it: per token (or page session), so two
    clients' keys never meet (the token itself is never stored, only a digest of it)."""
    if key is None:
        return None
    token = bearer(request.headers.get("authorization"))
    if token is None:
        token = request.cookies.get(SESSION_COOKIE, "").partition(".")[2]
    return f"{hashlib.sha256(token.encode()).hexdigest()[:16]}:{key}"


async def require_token(request: Request) -> None:
    """FastAPI dependency for /v1 routes: a bearer token, or the page's session (with its
    cross-site checks for anything but reads)."""
    tokens: tuple[bytes, ...] = request.app.state.tokens
    given = bearer(request.headers.get("authorization"))
    if given is not None:
        if not token_ok(given, tokens):
            raise UNAUTHORIZED
        return
    if not session_ok(request.cookies.get(SESSION_COOKIE), tokens):
        raise UNAUTHORIZED
    if request.method not in SAFE_METHODS and (
        request.headers.get(UI_HEADER) != "1" or not same_origin(request)
    ):
        raise CROSS_SITE
