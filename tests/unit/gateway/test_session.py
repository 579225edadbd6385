"""The status page's session cookie: made from a token, never containing it."""

from __future__ import annotations

from api.gateway.auth import SESSION_S, new_session, session_ok

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
