"""Webhook rules without a network: signatures, back-off, allowed hosts, the outbox in
SQLite, and the settings that turn webhooks on."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from api.settings import Settings
from cluster import ConfigError, CoordinatorConfig, SpecError, sign_webhook, verify_webhook
from cluster.config import config_differences
from cluster.control.records.jobtable import JobTable, Move
from cluster.control.records.store import JobStore
from cluster.control.records.webhooks import MAX_BACKOFF_S, backoff
from cluster.model.jobs import JobKind, JobSpec, JobStatus
from cluster.scheduling.admission import check_callback

SECRET = "whsec-unit"  # noqa: S105
BODY = b'{"id":"abc","status":"succeeded"}'


def test_the_signature_is_stripes_scheme() -> None:
    header = sign_webhook(SECRET, BODY, 1_700_000_000)
    mac = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"


def test_verify_accepts_only_the_same_body_secret_and_a_fresh_time() -> None:
    t = 1_700_000_000
    header = sign_webhook(SECRET, BODY, t)
    assert verify_webhook(SECRET, BODY, header, now=t + 10)
    assert not verify_webhook(SECRET, BODY + b" ", header, now=t)
    assert not verify_webhook("another", BODY, header, now=t)
    assert not verify_webhook(SECRET, BODY, header, now=t + 301)  # a replay, too late
    assert not verify_webhook(SECRET, BODY, "v1=deadbeef", now=t)
    assert not verify_webhook(SECRET, BODY, "t=x,v1=deadbeef", now=t)
    rotated = f"{header},v1={'0' * 64}"  # a receiver may see two signatures while rotating
    assert verify_webhook(SECRET, BODY, rotated, now=t)


def test_backoff_doubles_to_an_hour() -> None:
    assert [backoff(n, 10) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff(30, 10) == MAX_BACKOFF_S


@pytest.mark.parametrize(
    ("url", "hosts", "allowed"),
    [
        ("https://hooks.example.com/x", ("hooks.example.com",), True),
        ("https://HOOKS.example.com:8443/x", ("hooks.example.com",), True),
        ("http://127.0.0.1:9000/x", ("127.0.0.1:9000",), True),
        ("http://127.0.0.1:9001/x", ("127.0.0.1:9000",), False),
        ("https://hooks.example.com/x", ("hooks.example.com:80",), False),
        ("https://evil.example.com/x", ("hooks.example.com",), False),
        ("https://hooks.example.com.evil.net/x", ("hooks.example.com",), False),
        ("http://169.254.169.254/latest", ("hooks.example.com",), False),
        ("https://hooks.example.com/x", (), False),
    ],
)
def test_callbacks_go_only_to_allowed_hosts(
    url: str, hosts: tuple[str, ...], allowed: bool
) -> None:
    if allowed:
        check_callback(url, hosts)
        return
    with pytest.raises(SpecError) as refused:
        check_callback(url, hosts)
    assert "FRAMEFLEET_WEBHOOK_HOSTS" in str(refused.value)
    assert refused.value.code == "callback_refused"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///etc/passwd", "not an http:// or https:// URL"),
        ("http:///nohost", "not an http:// or https:// URL"),
        ("https://u:p@hooks.example.com/", "must not carry credentials"),
        ("https://hooks.example.com/a b", "no spaces"),
        ("https://hooks.example.com/" + "a" * 3000, "at most 2048"),
    ],
)
def test_a_malformed_callback_is_refused_in_the_spec(url: str, says: str) -> None:
    with pytest.raises(SpecError, match=says):
        JobSpec(kind=JobKind.PROBE, input="/m/a.mp4", callback_url=url)


def test_an_ending_and_its_webhook_are_written_together_and_outlive_a_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.sqlite3"
    table = JobTable(JobStore(db), max_attempts=3, retention_s=600, idempotency_ttl_s=60)
    spec = JobSpec(kind=JobKind.PROBE, input="/m/a.mp4", callback_url="http://127.0.0.1/h")
    plain = JobSpec(kind=JobKind.PROBE, input="/m/b.mp4")
    job, other = table.add([spec, plain])
    table.move(Move(job, JobStatus.RUNNING, "started"))
    table.move(Move(job, JobStatus.FAILED, "bad input"))
    table.move(Move(other, JobStatus.CANCELLED, "cancelled by user"))
    assert job.webhook is not None and job.webhook.state == "pending"
    assert other.webhook is None  # no callback_url, no delivery
    table.store.close()

    again = JobTable(JobStore(db), max_attempts=3, retention_s=600, idempotency_ttl_s=60)
    (left,) = again.store.outbox()
    assert left.job_id == job.id and left.id == job.webhook.id
    assert again.webhooks.pending == 1
    sent = json.loads(left.body)
    assert sent["id"] == job.id and sent["status"] == "failed"
    assert sent["reason"] == "bad input" and "webhook" not in sent
    assert again.recover() == [] and again.get(job.id).webhook == job.webhook
    again.store.close()


def settings_secret(settings: Settings) -> str:
    assert settings.webhook_secret is not None
    return settings.webhook_secret.get_secret_value()


def test_webhooks_need_a_secret_and_a_joining_client_never_prints_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FRAMEFLEET_WEBHOOK_HOSTS", "hooks.example.com, 127.0.0.1:9000")
    with pytest.raises(ConfigError, match="set FRAMEFLEET_WEBHOOK_SECRET"):
        Settings.load()
    monkeypatch.setenv("FRAMEFLEET_WEBHOOK_SECRET", "s3cr3t-value")
    settings = Settings.load()
    assert settings.webhook_hosts == ["hooks.example.com", "127.0.0.1:9000"]
    assert "s3cr3t-value" not in repr(settings)
    running = CoordinatorConfig(data_dir=tmp_path, webhook_secret=settings_secret(settings))
    asked = CoordinatorConfig(data_dir=tmp_path, webhook_secret=SECRET)
    differences = config_differences(asked, running)
    assert differences == ["webhook_secret differs (not shown)"]
    assert "s3cr3t-value" not in repr(running)
