"""Bearer tokens on every /v1 route, compared in constant time.

A 401 is the same whatever the path, so it never reveals whether a job exists.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request

UNAUTHORIZED = HTTPException(
    status_code=401,
    detail="a valid bearer token is required (Authorization: Bearer <token>)",
    headers={"WWW-Authenticate": "Bearer"},
)


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


def scoped_key(request: Request, key: str | None) -> str | None:
    """An ``Idempotency-Key`` as the engine stores it: per token, so two clients' keys
    never meet (the token itself is never stored, only a digest of it)."""
    if key is None:
        return None
    token = bearer(request.headers.get("authorization")) or ""
    return f"{hashlib.sha256(token.encode()).hexdigest()[:16]}:{key}"


async def require_token(request: Request) -> None:
    """FastAPI dependency for /v1 routes."""
    tokens: tuple[bytes, ...] = request.app.state.tokens
    given = bearer(request.headers.get("authorization"))
    if given is None or not token_ok(given, tokens):
        raise UNAUTHORIZED
