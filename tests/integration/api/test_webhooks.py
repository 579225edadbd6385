"""Webhooks as a receiver sees them: a real HTTP receiver on 127.0.0.1, the gateway,
real Ray and ffmpeg; signatures checked as a receiver would check them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster import Fleet, JobKind, JobSpec, verify_webhook
from cluster.ray_edge.runtime import Runtime
from tests.helpers import Receiver, count_frames, free_port, make_clip, wait_until
from tests.integration.api.conftest import TOKEN, Gateway, finished
from tests.integration.conftest import start_fleet

SECRET = "whsec-test-0123456789abcdef"  # noqa: S105
HOOKS = {"webhook_hosts": ("127.0.0.1",), "webhook_secret": SECRET, "webhook_backoff_s": 0.3}
FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))


@pytest.fixture(scope="module")
def fleet(
    ray_runtime: Runtime, roots: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The gateway's coordinator, with webhooks to 127.0.0.1 allowed."""
    resolved = tuple(r.resolve() for r in roots)
    data = tmp_path_factory.mktemp("coordinator")
    f = start_fleet(data, "coordinator-webhooks", media_roots=resolved, **HOOKS)
    yield f
    f.shutdown_coordinator()


def delivered(gw: Gateway, job_id: str) -> dict[str, Any]:
    """The job once its webhook is delivered or given up."""

    def settled() -> dict[str, Any] | None:
        job: dict[str, Any] = gw.http.get(f"/v1/jobs/{job_id}").json()
        hook = job.get("webhook") or {}
        return job if hook.get("state") in ("delivered", "failed") else None

    result: dict[str, Any] = wait_until(settled, timeout=60, step=0.2)
    return result


def webhook_of(fleet: Fleet, job_id: str) -> dict[str, Any]:
    """The job's webhook delivery as the API shows it (``{}``: none yet)."""
    webhook = fleet.get(job_id).webhook
    return webhook.to_dict() if webhook else {}


def signed(headers: dict[str, str], body: bytes) -> bool:
    return verify_webhook(SECRET, body, headers["X-Framefleet-Signature"])


def test_a_callback_to_a_host_not_allowed_is_refused_with_the_rule(gateway: Gateway) -> None:
    clip = str(gateway.media / "clip.mp4")
    for url, says in (
        ("http://169.254.169.254/latest/meta-data", "is not allowed; use one of 127.0.0.1"),
        ("http://localhost:9/hook", "is not allowed"),
        ("ftp://127.0.0.1/hook", "not an http:// or https:// URL"),
        ("http://user:pw@127.0.0.1/hook", "must not carry credentials"),
    ):
        r = gateway.http.post(
            "/v1/jobs", json={"kind": "probe", "input": clip, "callback_url": url}
        )
        assert r.status_code == 422, (url, r.text)
        assert says in r.json()["error"]["message"], r.json()
    batch = {"spec": {"kind": "probe", "callback_url": "http://10.0.0.1/x"}, "inputs": [clip]}
    r = gateway.http.post("/v1/jobs/batch", json=batch)
    assert r.status_code == 422 and r.json()["error"]["code"] == "callback_refused"
    assert "FRAMEFLEET_WEBHOOK_HOSTS" in r.json()["error"]["message"]


def test_an_ending_is_posted_signed_and_retried_until_the_receiver_takes_it(
    gateway: Gateway,
) -> None:
    with Receiver(answers=[503, 500]) as receiver:
        body = {
            "input": str(gateway.media / "clip.mp4"),
            "output": str(gateway.out / "hooked.mp4"),
            "speed": "fast",
            "callback_url": receiver.url,
        }
        job_id = gateway.http.post("/v1/jobs", json=body).json()["id"]
        assert finished(gateway, job_id)["status"] == "succeeded"
        job = delivered(gateway, job_id)

    assert job["webhook"]["state"] == "delivered"
    assert [a.get("status") for a in job["webhook"]["attempts"]] == [503, 500, 200]
    assert len(receiver.received) == 3
    deliveries = {headers["X-Framefleet-Delivery"] for headers, _ in receiver.received}
    assert deliveries == {job["webhook"]["id"]}  # one delivery, tried three times
    for headers, raw in receiver.received:
        assert signed(headers, raw)
        assert not signed(headers, raw.replace(b"succeeded", b"failed"))  # tampering shows
        assert headers["X-Framefleet-Event"] == "job.succeeded"
    sent = json.loads(receiver.received[-1][1])
    view = {k: v for k, v in job.items() if k != "webhook"}
    assert sent == view  # the job's view, as GET shows it
    assert count_frames(Path(sent["output"])) == 50


def test_a_batch_callback_posts_each_jobs_ending(gateway: Gateway) -> None:
    (gateway.media / "broken.mp4").write_bytes(b"not a video at all")
    with Receiver() as receiver:
        inputs = [str(gateway.media / "clip.mp4"), str(gateway.media / "broken.mp4")]
        spec = {"kind": "probe", "callback_url": receiver.url}
        r = gateway.http.post("/v1/jobs/batch", json={"spec": spec, "inputs": inputs})
        assert r.status_code == 201, r.text
        ids = r.json()["ids"]
        for job_id in ids:
            delivered(gateway, job_id)
    by_id = {body["id"]: body for body in receiver.bodies()}
    assert sorted(by_id) == sorted(ids) and len(receiver.received) == 2
    assert by_id[ids[0]]["status"] == "succeeded"
    assert by_id[ids[1]]["status"] == "failed" and by_id[ids[1]]["error"]["code"]
    assert all(signed(h, b) for h, b in receiver.received)


def test_the_cli_submits_with_a_callback(gateway: Gateway) -> None:
    with Receiver() as receiver:
        done = subprocess.run(
            [FRAMEFLEET, "submit", str(gateway.media / "clip.mp4"), "--kind", "probe",
             "--callback-url", receiver.url, "--api", gateway.url, "--token", TOKEN,
             "--wait", "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["id"]
        delivered(gateway, job_id)
    assert [b["id"] for b in receiver.bodies()] == [job_id]


def test_a_delivery_outlives_a_receiver_outage_and_a_coordinator_crash(
    ray_runtime: Runtime, tmp_path: Path
) -> None:
    """The ending is in the outbox before the receiver is up; the coordinator dies and
    comes back; the receiver then gets it, once."""
    media = tmp_path / "media"
    media.mkdir()
    make_clip(media / "clip.mp4", seconds=1)
    name = "coordinator-webhook-crash"
    fleet = start_fleet(tmp_path / "data", name, media_roots=(media.resolve(),), **HOOKS)
    receiver = Receiver(port=free_port())  # not started: connections are refused
    try:
        clip = str(media / "clip.mp4")
        job = fleet.submit(JobSpec(kind=JobKind.PROBE, input=clip, callback_url=receiver.url))
        assert fleet.wait(job.id, timeout=60).status == "succeeded"
        tried = wait_until(lambda: webhook_of(fleet, job.id).get("attempts"), timeout=30)
        assert "error" in tried[0]  # refused: the receiver is down

        first_life = fleet.ping()["pid"]
        ray.kill(ray.get_actor(name, namespace="framefleet"), no_restart=False)
        wait_until(lambda: fleet.ping()["pid"] != first_life, timeout=60)

        receiver.start()
        wait_until(lambda: webhook_of(fleet, job.id).get("state") == "delivered", 60)
        assert [b["id"] for b in receiver.bodies()] == [job.id]
        assert signed(*receiver.received[0])
        attempts = webhook_of(fleet, job.id)["attempts"]
        assert "error" in attempts[0] and attempts[-1]["status"] == 200
    finally:
        receiver.stop()
        fleet.shutdown_coordinator()
