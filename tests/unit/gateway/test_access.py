"""Tokens with a name, a tenant and a role: the tokens file keeps hashes only, a revoke or
an edit is seen without a restart, and a bad file says what is wrong."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from api.access import (
    Keyring,
    Role,
    add_token,
    read_tokens_file,
    revoke_token,
    token_id_of,
    verify_hash,
)
from cluster import ConfigError


def test_a_new_token_is_shown_once_and_only_its_salted_hash_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "tokens.toml"
    token = add_token(path, "alice", "team-a", Role.SUBMITTER)
    other = add_token(path, "bob", "team-b", Role.VIEWER)
    text = path.read_text()
    assert token not in text and token.split("_")[-1] not in text  # never the secret
    entries = read_tokens_file(path).tokens
    assert [e.identity.name for e in entries] == ["alice", "bob"]
    assert entries[0].hash != entries[1].hash and entries[0].hash.startswith("scrypt$")
    assert verify_hash(token, entries[0].hash) and not verify_hash(other, entries[0].hash)
    assert token_id_of(token) == entries[0].id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_keyring_names_each_holder_and_sees_a_revoke_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = add_token(path, "alice", "team-a", Role.OPERATOR)
    keyring = Keyring(["plain-admin-token"], path)
    alice = keyring.identify(token)
    assert alice is not None and (alice.name, alice.tenant, alice.role) == (
        "alice", "team-a", Role.OPERATOR)  # fmt: skip
    assert alice.caller.every_tenant and alice.caller.tenant == "team-a"
    plain = keyring.identify("plain-admin-token")
    assert plain is not None and plain.role is Role.ADMIN and plain.tenant == "default"
    assert keyring.identify(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    assert keyring.identify("ff_000000000000_nope") is None
    revoke_token(path, "alice")
    os.utime(path, ns=(1, 1))  # a revoke within the same clock tick still changes the file
    assert keyring.refresh()
    assert keyring.identify(token) is None and keyring.by_key(alice.key) is None


def test_a_bad_tokens_file_is_one_line_naming_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    with pytest.raises(ConfigError, match="does not exist; create it with"):
        read_tokens_file(path)
    path.write_text('[tokens.x]\nrole = "king"\nid = "a"\nhash = "b"\n')
    with pytest.raises(ConfigError, match="role 'king': use one of viewer, submitter"):
        read_tokens_file(path)
    path.write_text("[tenants.a]\nweight = 0\n")
    with pytest.raises(ConfigError, match="weight must be above 0"):
        read_tokens_file(path)
    path.write_text("[tenants.a]\nshare = 3\n")
    with pytest.raises(ConfigError, match="unknown setting share"):
        read_tokens_file(path)
    add_token(path.with_name("t2.toml"), "alice", "default", Role.ADMIN)
    with pytest.raises(ConfigError, match="no token named nobody"):
        revoke_token(path.with_name("t2.toml"), "nobody")


def test_a_broken_edit_keeps_the_last_good_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = add_token(path, "alice", "team-a", Role.SUBMITTER)
    keyring = Keyring([], path)
    path.write_text("this is [ not toml")
    assert not keyring.refresh()
    assert keyring.identify(token) is not None


def test_a_tenant_root_outside_the_farms_or_not_a_list_stops_the_gateway(tmp_path: Path) -> None:
    from api.settings import Settings

    farm = tmp_path / "media"
    (farm / "team-a").mkdir(parents=True)
    path = tmp_path / "tokens.toml"
    settings = Settings(media_roots=[str(farm)], data_dir=tmp_path / "data", tokens_file=path)
    path.write_text(f'[tenants.team-a]\nmedia_roots = ["{farm / "team-a"}"]\n')
    assert settings.keyring().tenants.get("team-a").media_roots == (str(farm / "team-a"),)
    path.write_text('[tenants.team-a]\nmedia_roots = ["/etc"]\n')
    with pytest.raises(ConfigError, match="tenant team-a's media root"):
        settings.keyring()
    path.write_text(f'[tenants.team-a]\nmedia_roots = "{farm}"\n')
    with pytest.raises(ConfigError, match="media_roots must be a list"):
        settings.keyring()
