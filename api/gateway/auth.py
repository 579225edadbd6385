"""Who may call the gateway, and what they may do: a bearer token, or the status page's
session cookie; then the role the route needs.

Tokens come from a :class:`~api.access.Keyring` (the tokens file's hashed tokens, and the
plain ones of ``FRAMEFLEET_API_TOKENS``). A 401 is the same whatever the path, so it never
reveals whether a job exists; a job of another tenant is a 404, as a wrong id is (the
engine decides that); an action beyond the caller's role is a 403 naming the role it
needs. Each request carries its holder (:func:`identity_of`) and, for the engine, its
:class:`~cluster.model.tenancy.Caller` (:func:`caller_of`).

The page (``/ui``) asks for a token once and trades it for a session cookie: HttpOnly
(out of reach of the page's scripts), ``SameSite=Strict``, and self-contained: its value
is an expiry, a random nonce and the key of its token (the token's id, never the token),
with an HMAC of them under the gateway's session key (``<data dir>/session-key``, 0600).
A gateway restart keeps the session; revoking the token ends every session made with
it. Signing out (``DELETE /ui/session``) ends that one session on the server too: it is
kept as signed out until it would have expired (:mod:`api.gateway.sessions`, in the
data dir, so across restarts), and a copy of the cookie is refused. A request that
changes something with the cookie must also carry ``X-Framefleet-UI: 1`` and, when the
browser says where it comes from, come from this origin: a cross-site form cannot set
the header, and a cross-site script would need CORS, which the gateway never grants.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.access import Identity, Keyring, Role
from api.gateway.sessions import SignedOut
from cluster import Caller, private_dir, write_secret

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
SESSION_KEY_FILE = "session-key"
UI_HEADER = "x-framefleet-ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFRESH_S = 1.0
"""How often a request may look whether the tokens file changed (a revoke takes effect
within this)."""


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def session_key(data_dir: Path) -> bytes:
    """The gateway's key for session cookies: ``<data dir>/session-key``, made once (32
    random bytes, mode 0600, in a folder framefleet keeps 0700)."""
    path = data_dir / SESSION_KEY_FILE
    key = secrets.token_bytes(32)
    try:
        write_secret(path, key)
    except FileExistsError:
        private_dir(data_dir)
        return path.read_bytes()
    return key


def _mac(key: bytes, expires: int, nonce: str, token_key: str) -> str:
    message = f"framefleet-ui:{expires}:{nonce}:{token_key}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def new_session(key: bytes, token_key: str, now: float | None = None) -> str:
    """A session cookie's value for the token whose key is ``token_key``: its own, even
    for two sign-ins in the same second (signing one out leaves the other)."""
    expires = int((time.time() if now is None else now) + SESSION_S)
    nonce = secrets.token_hex(8)
    return f"{expires}.{nonce}.{token_key}.{_mac(key, expires, nonce, token_key)}"


def session_expiry(value: str) -> int | None:
    """When a session cookie's value says it expires (unchecked)."""
    stamp = value.partition(".")[0]
    return int(stamp) if stamp.isdigit() else None


def session_holder(
    value: str | None,
    key: bytes,
    keyring: Keyring,
    signed_out: SignedOut | None = None,
    now: float | None = None,
) -> Identity | None:
    """Who holds a session cookie: the holder of its token, if the cookie is this
    gateway's, has not expired, was not signed out, and its token is still accepted."""
    if not value or value.count(".") != 3:
        return None
    stamp, nonce, token_key, mac = value.split(".")
    if not stamp.isdigit() or int(stamp) < (time.time() if now is None else now):
        return None
    if not hmac.compare_digest(mac.encode(), _mac(key, int(stamp), nonce, token_key).encode()):
        return None
    if signed_out is not None and value in signed_out:
        return None
    return keyring.by_key(token_key)


def keyring_of(conn: HTTPConnection) -> Keyring:
    """The gateway's keyring, the tokens file looked at again at most every second."""
    state = conn.app.state
    keyring: Keyring = state.keyring
    now = time.monotonic()
    if now - getattr(state, "keyring_looked", 0.0) >= REFRESH_S:
        state.keyring_looked = now
        keyring.refresh()
    return keyring


REVOKED_CHECK_S = 1.0
"""How often an open event stream or socket looks whether its token was revoked."""


def still_held(conn: HTTPConnection, holder: Identity) -> bool:
    """Whether ``holder``'s token is still accepted (an open stream ends once it is not):
    a set lookup, however many tokens and streams."""
    return keyring_of(conn).holds(holder.key)


async def identify(conn: HTTPConnection, token: str) -> Identity | None:
    """Who holds ``token``; a tokens-file token not seen yet is checked (scrypt) in a
    thread, off the event loop."""
    keyring = keyring_of(conn)
    if keyring.needs_hashing(token):
        return await run_in_threadpool(keyring.identify, token)
    return keyring.identify(token)


def cookie_holder(conn: HTTPConnection) -> Identity | None:
    """Who holds the connection's session cookie, if it is a valid one."""
    state = conn.app.state
    value = conn.cookies.get(SESSION_COOKIE)
    return session_holder(value, state.session_key, keyring_of(conn), state.signed_out)


def same_origin(conn: HTTPConnection) -> bool:
    """Whether the browser's ``Origin`` (when it sends one) is this gateway's own, and
    its ``Sec-Fetch-Site`` (when it sends one) says so too."""
    origin = conn.headers.get("origin")
    host = conn.headers.get("host", "")
    if origin is not None and origin.split("://", 1)[-1] != host:
        return False
    return conn.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def scoped_key(request: Request, key: str | None) -> str | None:
    """An ``Idempotency-Key`` as the engine stores it: per tenant, so two tenants' keys
    never meet (one tenant's clients share theirs)."""
    if key is None:
        return None
    return f"{identity_of(request).tenant}:{key}"


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (the tokens file's, or FRAMEFLEET_API_TOKENS), sent as "
    "Authorization: Bearer <token>.",
)
"""Declares the bearer token in the OpenAPI schema (``require_token`` checks it)."""


async def require_token(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
) -> None:
    """FastAPI dependency for /v1 routes: a bearer token, or the page's session (with its
    cross-site checks for anything but reads). Records who called (:func:`identity_of`)."""
    given = bearer(request.headers.get("authorization"))
    if given is not None:
        holder = await identify(request, given)
        if holder is None:
            raise UNAUTHORIZED
        request.state.identity = holder
        return
    holder = cookie_holder(request)
    if holder is None:
        raise UNAUTHORIZED
    if request.method not in SAFE_METHODS and (
        request.headers.get(UI_HEADER) != "1" or not same_origin(request)
    ):
        raise CROSS_SITE
    request.state.identity = holder


def needs(role: Role) -> Callable[[Request], None]:
    """A dependency: the caller's role is ``role`` or above, else a 403 naming it."""

    def check(request: Request) -> None:
        holder = identity_of(request)
        if not holder.may(role):
            raise HTTPException(
                status_code=403,
                detail=f"this needs the {role} role; the token {holder.name} is a "
                f"{holder.role} (ask an admin for a token with that role)",
            )

    check.__name__ = f"needs_{role}"
    return check


VIEWER = Depends(needs(Role.VIEWER))
SUBMITTER = Depends(needs(Role.SUBMITTER))
OPERATOR = Depends(needs(Role.OPERATOR))
ADMIN = Depends(needs(Role.ADMIN))


def identity_of(request: HTTPConnection) -> Identity:
    """Who made this request, once :func:`require_token` let it through."""
    holder: Identity | None = getattr(request.state, "identity", None)
    if holder is None:  # a route without require_token: a bug, never an open door
        raise UNAUTHORIZED
    return holder


def caller_of(request: HTTPConnection) -> Caller:
    """The engine's view of who made this request."""
    return identity_of(request).caller


def owner_of(request: HTTPConnection) -> str:
    """The key of the token this request came with (per-token bounds count by it)."""
    return identity_of(request).key
