"""The status page's session cookie: made from a token, never containing it."""

from __future__ import annotations

from pathlib import Path

from api.gateway.auth import SESSION_S, new_session, session_ok
from api.gateway.sessions import SignedOut

TOKENS = (b"token-one-0123456789", b"token-two-0123456789")


def test_a_session_made_with_a_token_is_valid_until_it_expires() -> None:
    value = new_session("token-two-0123456789", now=1000.0)
    assert "token" not in value and "0123456789" not in value
    assert session_ok(value, TOKENS, now=1000.0 + SESSION_S - 1)
    assert not session_ok(value, TOKENS, now=1000.0 + SESSION_S + 1)


def test_a_tampered_session_or_one_of_a_removed_token_is_refused() -> None:
    value = new_session("token-one-0123456789", now=1000.0)
    stamp, _, mac = value.partition(".")
    later = f"{int(stamp) + 10**6}.{mac}"  # pushed expiry: the MAC no longer matches
    assert not session_ok(later, TOKENS, now=1000.0)
    assert not session_ok(value, (b"token-two-0123456789",), now=1000.0)  # token removed
    for junk in ("", ".", "abc.def", "123", "x" * 100, None):
        assert not session_ok(junk, TOKENS, now=1000.0)
    assert not session_ok(value, (), now=1000.0)


def test_a_signed_out_session_is_refused_across_reopening_and_pruned_once_expired(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    path = tmp_path / "ui-sessions.sqlite3"
    signed_out = SignedOut(path, now=lambda: now[0])
    gone, kept = (new_session("token-one-0123456789", now=1000.0) for _ in range(2))
    assert gone != kept  # two sign-ins in the same second are two sessions
    signed_out.add(gone, 1000 + SESSION_S)
    assert not session_ok(gone, TOKENS, signed_out, now=1000.0)
    assert session_ok(kept, TOKENS, signed_out, now=1000.0)
    reopened = SignedOut(path, now=lambda: now[0])  # a gateway restart
    assert not session_ok(gone, TOKENS, reopened, now=1000.0) and len(reopened) == 1
    now[0] = 1000.0 + SESSION_S + 1  # expired: no longer kept
    assert len(SignedOut(path, now=lambda: now[0])) == 0
