"""The status page's session cookie: made for a token, never containing it."""

from __future__ import annotations

from pathlib import Path

from api.access import Keyring, plain_key
from api.gateway.auth import SESSION_S, new_session, session_holder
from api.gateway.sessions import SignedOut

KEY = b"k" * 32
ONE, TWO = "token-one-0123456789", "token-two-0123456789"
KEYRING = Keyring([ONE, TWO])


def ok(value: str | None, keyring: Keyring = KEYRING, signed_out: SignedOut | None = None,
       now: float = 1000.0, key: bytes = KEY) -> bool:  # fmt: skip
    return session_holder(value, key, keyring, signed_out, now=now) is not None


def test_a_session_made_for_a_token_is_valid_until_it_expires_and_names_its_holder() -> None:
    value = new_session(KEY, plain_key(TWO), now=1000.0)
    assert "token" not in value and "0123456789" not in value
    holder = session_holder(value, KEY, KEYRING, now=1000.0 + SESSION_S - 1)
    assert holder is not None and holder.name == "token-2"
    assert not ok(value, now=1000.0 + SESSION_S + 1)


def test_a_tampered_session_one_of_another_gateway_or_of_a_removed_token_is_refused() -> None:
    value = new_session(KEY, plain_key(ONE), now=1000.0)
    stamp, rest = value.split(".", 1)
    assert not ok(f"{int(stamp) + 10**6}.{rest}")  # pushed expiry: the MAC no longer matches
    nonce, _, mac = rest.split(".")
    assert not ok(f"{stamp}.{nonce}.{plain_key(TWO)}.{mac}")  # another token's key
    assert not ok(value, key=b"x" * 32)  # another gateway's session key
    assert not ok(value, Keyring([TWO]))  # its token removed
    for junk in ("", ".", "abc.def", "1.2.3", "123", "x" * 100, None):
        assert not ok(junk)
    assert not ok(value, Keyring())


def test_a_signed_out_session_is_refused_across_reopening_and_pruned_once_expired(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    path = tmp_path / "ui-sessions.sqlite3"
    signed_out = SignedOut(path, now=lambda: now[0])
    gone, kept = (new_session(KEY, plain_key(ONE), now=1000.0) for _ in range(2))
    assert gone != kept  # two sign-ins in the same second are two sessions
    signed_out.add(gone, 1000 + SESSION_S)
    assert not ok(gone, signed_out=signed_out)
    assert ok(kept, signed_out=signed_out)
    reopened = SignedOut(path, now=lambda: now[0])  # a gateway restart
    assert not ok(gone, signed_out=reopened) and len(reopened) == 1
    now[0] = 1000.0 + SESSION_S + 1  # expired: no longer kept
    assert len(SignedOut(path, now=lambda: now[0])) == 0
