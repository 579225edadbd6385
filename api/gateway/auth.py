"""Who may call the gateway: a bearer token, or the status page's session cookie.

Tokens are compared in constant time. A 401 is the same whatever the path, so it never
reveals whether a job exists. Each request is tagged with its caller, ``owner``: a digest
of the token it came with (directly or through the page's session), never the token; the
engine's per-submitter bounds and the gateway's per-token stream caps count by it.

The page (``/ui``) asks for a token once and trades it for a session cookie: HttpOnly
(out of reach of the page's scripts), ``SameSite=Strict``, and self-contained: its value
is an expiry, a random nonce and an HMAC of both keyed by the token, so the token itself
is never in it, a gateway restart keeps the session, and removing the token from the
configuration ends every session made with it. Signing out (``DELETE /ui/session``) ends
that one session on the server too: it is kept as signed out until it would have expired
(:mod:`api.gateway.sessions`, in the data dir, so across restarts), and a copy of the
cookie is refused. A request that changes something with the cookie must also carry
``X-Framefleet-UI: 1`` and, when the browser says where it comes from, come from this
origin: a cross-site form cannot set the header, and a cross-site script would need CORS,
which the gateway never grants.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.gateway.sessions import SignedOut

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


def owner_id(token: bytes) -> str:
    """Who holds ``token``, as the gateway and the engine name them: a digest of it."""
    return hashlib.sha256(token).hexdigest()[:16]


def _mac(token: bytes, expires: int, nonce: str) -> str:
    message = f"framefleet-ui:{expires}:{nonce}".encode()
    return hmac.new(token, message, hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    """A session cookie's value for a valid ``token``: its own, even for two sign-ins in
    the same second (signing one out leaves the other)."""
    expires = int((time.time() if now is None else now) + SESSION_S)
    nonce = secrets.token_hex(8)
    return f"{expires}.{nonce}.{_mac(token.encode(), expires, nonce)}"


def session_expiry(value: str) -> int | None:
    """When a session cookie's value says it expires (unchecked)."""
    stamp = value.partition(".")[0]
    return int(stamp) if stamp.isdigit() else None


def session_token(
    value: str | None,
    tokens: tuple[bytes, ...],
    signed_out: SignedOut | None = None,
    now: float | None = None,
) -> bytes | None:
    """The one of ``tokens`` a session cookie was made with, if it has not expired and was
    not signed out; every token is compared, equal time."""
    if not value or not tokens or value.count(".") != 2:
        return None
    stamp, nonce, mac = value.split(".")
    if not stamp.isdigit() or int(stamp) < (time.time() if now is None else now):
        return None
    found = None
    for token in tokens:
        if hmac.compare_digest(mac.encode(), _mac(token, int(stamp), nonce).encode()):
            found = token
    if found is None or (signed_out is not None and value in signed_out):
        return None
    return found


def session_ok(
    value: str | None,
    tokens: tuple[bytes, ...],
    signed_out: SignedOut | None = None,
    now: float | None = None,
) -> bool:
    """Whether a session cookie was made with one of ``tokens``, has not expired and was
    not signed out."""
    return session_token(value, tokens, signed_out, now) is not None


def cookie_token(conn: HTTPConnection) -> bytes | None:
    """The token behind the connection's session cookie, if it holds a valid one."""
    state = conn.app.state
    return session_token(conn.cookies.get(SESSION_COOKIE), state.tokens, state.signed_out)


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


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (FRAMEFLEET_API_TOKENS), sent as Authorization: Bearer <token>.",
)
"""Declares the bearer token in the OpenAPI schema (``require_token`` checks it)."""


async def require_token(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
) -> None:
    """FastAPI dependency for /v1 routes: a bearer token, or the page's session (with its
    cross-site checks for anything but reads). Records who called (:func:`owner_of`)."""
    tokens: tuple[bytes, ...] = request.app.state.tokens
    given = bearer(request.headers.get("authorization"))
    if given is not None:
        if not token_ok(given, tokens):
            raise UNAUTHORIZED
        request.state.owner = owner_id(given.encode())
        return
    token = cookie_token(request)
    if token is None:
        raise UNAUTHORIZED
    if request.method not in SAFE_METHODS and (
        request.headers.get(UI_HEADER) != "1" or not same_origin(request)
    ):
        raise CROSS_SITE
    request.state.owner = owner_id(token)


def owner_of(request: HTTPConnection) -> str | None:
    """Who made this request (a digest of its token), once :func:`require_token` let it
    through; ``None`` before."""
    owner: str | None = getattr(request.state, "owner", None)
    return owner
