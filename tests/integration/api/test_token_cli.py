"""``framefleet token add|list|revoke`` as an admin runs it: real processes, a real
tokens file, the change in the audit trail, and bad input in one line."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
from pathlib import Path

from api.access import Keyring
from tests.helpers import env_without_ray
from tests.integration.api.test_cli import FRAMEFLEET, one_line_error


def run(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = env_without_ray() | {"FRAMEFLEET_DATA_DIR": str(data)}
    env.pop("FRAMEFLEET_TOKENS_FILE", None)
    return subprocess.run([*FRAMEFLEET, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)  # fmt: skip


def test_a_token_is_printed_once_kept_as_a_hash_listed_by_name_and_revoked(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    added = run("token", "add", "alice", "--tenant", "team-a", "--role", "operator", data=data)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("ff_") and "shown once" in added.stderr
    path = data / "tokens.toml"  # the default file, which `serve` reads
    assert token not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    holder = Keyring([], path).identify(token)
    assert holder is not None and (holder.tenant, str(holder.role)) == ("team-a", "operator")

    listed = json.loads(run("token", "list", "--json", data=data).stdout)
    assert [(t["name"], t["tenant"], t["role"]) for t in listed] == [
        ("alice", "team-a", "operator")]  # fmt: skip
    assert token not in json.dumps(listed)

    again = run("token", "add", "alice", data=data)
    assert again.returncode != 0
    assert "a token named alice exists" in one_line_error(again)
    bad = run("token", "add", "bob", "--role", "king", data=data)
    assert bad.returncode != 0 and "viewer, submitter, operator, admin" in bad.stderr
    assert "Traceback" not in bad.stderr

    revoked = run("token", "revoke", "alice", data=data)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert Keyring([], path).identify(token) is None
    missing = run("token", "revoke", "alice", data=data)
    assert "no token named alice" in one_line_error(missing)

    rows = (
        sqlite3.connect(data / "audit.sqlite3")
        .execute("SELECT actor, tenant, action, target, detail FROM audit ORDER BY seq")
        .fetchall()
    )
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("team-a", "token-add", "alice"), ("team-a", "token-revoke", "alice")]  # fmt: skip
    assert all(r[0].startswith("cli:") and token not in r[4] for r in rows)
