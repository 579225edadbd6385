"""The HTTP gateway as clients use it: a real uvicorn server on 127.0.0.1, real Ray, ffmpeg."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.helpers import (
    count_frames,
    env_without_ray,
    ffmpeg_processes,
    free_port,
    leftovers,
    serving,
    streams,
    wait_until,
)
from tests.integration.api.conftest import AUTH, TOKEN, Gateway

FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))


def follow(gw: Gateway, job_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Read the job's SSE stream to its end."""
    events = []
    with gw.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def test_health_needs_no_token_and_ready_sees_the_coordinator(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_every_v1_route_needs_a_valid_token_and_a_401_reveals_nothing(gateway: Gateway) -> None:
    job = gateway.http.post(
        "/v1/jobs", json={"kind": "probe", "input": str(gateway.media / "clip.mp4")}
    )
    assert job.status_code == 201
    answers = []
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for path in (f"/v1/jobs/{job.json()['id']}", "/v1/jobs/0000000000000000", "/v1/nodes"):
            r = httpx.get(f"{gateway.url}{path}", headers=headers)
            answers.append((r.status_code, r.json()))
    assert {status for status, _ in answers} == {401}
    assert len({json.dumps(body) for _, body in answers}) == 1  # same body, job or not
    other = httpx.get(f"{gateway.url}/v1/nodes", headers={"Authorization": "Bearer another-token"})
    assert other.status_code == 200


def test_transcode_streams_live_progress_and_writes_a_real_file(gateway: Gateway) -> None:
    dst = gateway.out / "live.mp4"
    r = gateway.http.post(
        "/v1/jobs",
        json={
            "input": str(gateway.media / "clip.mp4"),
            "output": str(dst),
            "codec": "hevc",
            "speed": "fast",
            "hardware": "cpu",
            "labels": {"show": "demo"},
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" and job["status"] == "queued"
    events = follow(gateway, job["id"])
    assert events[-1]["status"] == "succeeded"
    assert [e["status"] for e in events].count("succeeded") == 1
    done = gateway.http.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["progress"]["percent"] == pytest.approx(100)
    assert done["placement"]["encoder"] == "libx265" and done["result"]["output"] == str(dst)
    assert done["spec"]["labels"] == {"show": "demo"} and done["error"] is None
    assert [s["codec_name"] for s in streams(dst, "video")] == ["hevc"]
    assert count_frames(dst) == 50


def test_a_split_job_is_one_job_with_its_chunks_and_a_bad_split_is_refused(
    gateway: Gateway,
) -> None:
    body = {"input": str(gateway.media / "clip.mp4"), "output": str(gateway.out / "s.mkv")}
    bad = gateway.http.post("/v1/jobs", json={**body, "split": "fast"})
    assert bad.status_code == 422
    assert "split 'fast' is not auto, off or a chunk length in seconds" in bad.text
    r = gateway.http.post("/v1/jobs", json={**body, "split": 1})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    events = follow(gateway, job_id)
    assert events[-1]["status"] == "succeeded"
    done = gateway.http.get(f"/v1/jobs/{job_id}").json()
    split = done["split"]
    assert split["mode"] == "chunks" and len(split["chunks"]) == 2, split
    assert [c["status"] for c in split["chunks"]] == ["succeeded", "succeeded"]
    assert done["progress"]["percent"] == pytest.approx(100)
    assert done["result"]["split"]["chunks"] == 2
    assert count_frames(gateway.out / "s.mkv") == 50
    listed = [j["id"] for j in gateway.http.get("/v1/jobs").json()["jobs"]]
    assert job_id in listed and not [i for i in listed if i.startswith(f"{job_id}-c")]
    assert not [p.name for p in gateway.out.iterdir() if ".chunk." in p.name]


def test_idempotency_key_returns_the_same_job(gateway: Gateway) -> None:
    spec = {"kind": "probe", "input": str(gateway.media / "clip.mp4")}
    headers = {"Idempotency-Key": "order-42"}
    first = gateway.http.post("/v1/jobs", json=spec, headers=headers).json()
    again = gateway.http.post("/v1/jobs", json=spec, headers=headers).json()
    other = gateway.http.post("/v1/jobs", json=spec).json()
    assert first["id"] == again["id"] != other["id"]
    # The same key for a different request is a conflict, not the first job silently.
    changed = gateway.http.post("/v1/jobs", json={**spec, "priority": 5}, headers=headers)
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_conflict"
    # Keys belong to the tenant: another token of the same tenant (both plain tokens are
    # the default tenant's admins) gets the same job; another tenant's key is its own
    # (tests/integration/api/test_tenants.py).
    same_tenant = gateway.http.post(
        "/v1/jobs", json=spec, headers={**headers, "Authorization": "Bearer another-token"}
    ).json()
    assert same_tenant["id"] == first["id"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"input": "/etc/passwd", "output": "OUT/o.mp4"}, "resolves outside the media roots"),
        ({"input": "MEDIA/../../../etc/hosts", "output": "OUT/o.mp4"}, "outside the media roots"),
        ({"input": "http://example.com/a.mp4", "output": "OUT/o.mp4"}, "looks like a URL"),
        ({"input": "concat:MEDIA/clip.mp4", "output": "OUT/o.mp4"}, "looks like a URL"),
        ({"input": "MEDIA/clip.mp4", "output": "OUT/o.webm"}, "cannot hold h264"),
        ({"input": "MEDIA/missing.mp4", "output": "OUT/o.mp4"}, None),
    ],
)
def test_bad_paths_are_refused_with_422_naming_the_rule(
    gateway: Gateway, spec: dict[str, str], message: str | None
) -> None:
    body = {k: v.replace("MEDIA", str(gateway.media)).replace("OUT", str(gateway.out))
            for k, v in spec.items()}  # fmt: skip
    r = gateway.http.post("/v1/jobs", json=body)
    if message is None:  # a missing input is found by the probe: the job fails, with why
        job = r.json()
        assert r.status_code == 201
        events = follow(gateway, job["id"])
        assert events[-1]["status"] == "failed" and events[-1]["error_code"] == "input_missing"
        return
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]["message"]
    assert "\n" not in r.json()["error"]["message"]


def test_an_encoder_no_nodes_ffmpeg_has_is_refused_naming_it(gateway: Gateway) -> None:
    # Debian's ffmpeg 5.1 (every node here) has no av1_nvenc.
    body = {"input": f"{gateway.media}/clip.mp4", "output": f"{gateway.out}/a.mp4",
            "codec": "av1", "hardware": "gpu"}  # fmt: skip
    r = gateway.http.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "encoder_missing"
    assert r.json()["error"]["message"].startswith(
        "no node in the cluster has an ffmpeg with av1_nvenc (av1, --hardware gpu)"
    )


def test_names_longer_than_the_filesystem_allows_are_refused_at_submit(gateway: Gateway) -> None:
    long_name = "a" * 300 + ".mp4"
    bodies = [
        {"kind": "probe", "input": f"{gateway.media}/{long_name}"},
        {"input": f"{gateway.media}/clip.mp4", "output": f"{gateway.out}/{long_name}"},
        # relative: under the first root, which makes the whole path too long
        {"input": f"{gateway.media}/clip.mp4", "output": "d/" * 2030 + "o.mp4"},
    ]
    for body in bodies:
        r = gateway.http.post("/v1/jobs", json=body)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "name_too_long" and "shorten it" in error["message"]
    assert (
        "a name in it is 304 bytes; the filesystem allows 255"
        in gateway.http.post("/v1/jobs", json=bodies[0]).json()["error"]["message"]
    )
    batch = {"spec": {"kind": "probe"},
             "inputs": [f"{gateway.media}/clip.mp4", f"{gateway.media}/{long_name}"]}  # fmt: skip
    r = gateway.http.post("/v1/jobs/batch", json=batch)
    assert r.status_code == 422 and r.json()["error"]["code"] == "name_too_long"


def test_malformed_and_mistyped_requests_get_422_with_the_field_never_500(gateway: Gateway) -> None:
    cases = [
        ("{not json", "body"),
        (json.dumps({"input": 5}), "input"),
        (json.dumps({"input": "x", "quality": "best"}), "quality"),
        (json.dumps({"input": "x", "ffmpeg_args": ["-i", "x"]}), "ffmpeg_args"),
        (json.dumps({"input": "x", "kind": "reboot"}), "kind"),
        (json.dumps([1, 2]), "body"),
    ]
    for raw, field in cases:
        r = gateway.http.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (raw, r.text)
        assert r.json()["error"]["message"].startswith(field), (raw, r.json())
    huge = gateway.http.post("/v1/jobs", json={"input": "x" * 100_000})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"
    assert gateway.http.get("/v1/jobs/0000000000000000").status_code == 404
    assert gateway.http.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_batch_of_fifty_probes_and_cursor_pagination(gateway: Gateway) -> None:
    inputs = [str(gateway.media / "clip.mp4")] * 50
    r = gateway.http.post("/v1/jobs/batch", json={"spec": {"kind": "probe"}, "inputs": inputs})
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert len(ids) == 50 and len(set(ids)) == 50

    def all_done() -> bool:
        return all(gateway.http.get(f"/v1/jobs/{i}").json()["status"] == "succeeded" for i in ids)

    wait_until(all_done, timeout=120, step=0.5)
    seen: list[str] = []
    cursor = 0
    while True:
        page = gateway.http.get(
            "/v1/jobs", params={"kind": "probe", "cursor": cursor, "limit": 20}
        ).json()
        seen += [j["id"] for j in page["jobs"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    bad = gateway.http.post(
        "/v1/jobs/batch",
        json={"spec": {"kind": "transcode"}, "inputs": inputs[:2], "outputs": ["/tmp/a.mp4"]},
    )
    assert bad.status_code == 422 and "give one per input" in bad.json()["error"]["message"]


def test_batch_to_an_output_folder_is_all_or_nothing(gateway: Gateway) -> None:
    folder = gateway.out / "batch"
    folder.mkdir()
    (folder / "b.mp4").write_text("exists")
    src = gateway.media / "b.mp4"
    src.write_bytes((gateway.media / "clip.mp4").read_bytes())
    r = gateway.http.post(
        "/v1/jobs/batch",
        json={
            "spec": {"hardware": "cpu"},
            "inputs": [str(gateway.media / "clip.mp4"), str(src)],
            "output_dir": str(folder),
        },
    )
    assert r.status_code == 422 and "job 2 of 2" in r.json()["error"]["message"]
    assert sorted(p.name for p in folder.iterdir()) == ["b.mp4"]  # nothing queued


def test_cancel_kills_the_encode_and_is_idempotent(gateway: Gateway) -> None:
    dst = gateway.out / "cancelled.mkv"
    job = gateway.http.post(
        "/v1/jobs",
        json={
            "input": str(gateway.media / "long.mp4"),
            "output": str(dst),
            "codec": "hevc",
            "speed": "slow",
            "hardware": "cpu",
        },
    ).json()

    def running() -> bool:
        j = gateway.http.get(f"/v1/jobs/{job['id']}").json()
        return j["status"] == "running" and (j["progress"] or {}).get("percent", 0) > 0

    wait_until(running, timeout=60)
    first = gateway.http.delete(f"/v1/jobs/{job['id']}")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    assert first.json()["error"] == {"code": "cancelled", "message": "cancelled by user"}
    assert gateway.http.delete(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert not dst.exists() and leftovers(gateway.out) == []
    wait_until(lambda: ffmpeg_processes(str(gateway.out)) == [], timeout=10)
    retried = gateway.http.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    gateway.http.delete(f"/v1/jobs/{job['id']}")


def test_nodes_and_presets(gateway: Gateway) -> None:
    nodes = gateway.http.get("/v1/nodes").json()
    assert len(nodes) == 1 and nodes[0]["cpus"] == 2 and nodes[0]["gpus"] == []
    presets = gateway.http.get("/v1/presets").json()
    assert presets["codecs"] == ["h264", "hevc", "av1"]
    names = {e["name"]: e["available"] for e in presets["encoders"]}
    assert names["libx264"] is True and names.get("h264_nvenc") is False  # no GPU here
    [node] = nodes
    assert node["ready"] and node["ffmpeg"]["path"] and "libx265" in node["ffmpeg"]["encoders"]
    libx264 = next(e for e in presets["encoders"] if e["name"] == "libx264")
    assert libx264["nodes"] == [node["address"]]
    assert set(presets["containers"]) == {"mp4", "mov", "mkv", "webm"}
    docs = httpx.get(f"{gateway.url}/openapi.json").json()
    assert "/v1/jobs/{job_id}/events" in docs["paths"]


def test_websocket_streams_events_for_the_chosen_jobs_after_auth(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/ws"
    with connect(url) as ws:  # no token: one message to give it, else closed with 4401
        ws.send(json.dumps({"token": "wrong"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    # The followed job fails first (a damaged file), then is fixed and retried while
    # followed: no race with how fast a probe finishes.
    damaged = gateway.media / "ws-damaged.mp4"
    damaged.write_bytes(b"not a video" * 100)
    with connect(url, additional_headers=AUTH) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
        mine = gateway.http.post("/v1/jobs", json={"kind": "probe", "input": str(damaged)}).json()
        wait_until(lambda: _status(gateway, mine["id"]) == "failed", timeout=30)
        ws.send(json.dumps({"subscribe": [mine["id"]]}))
        while json.loads(ws.recv(timeout=10))["type"] != "subscribed":
            pass  # events for every job until the subscription is narrowed
        other = gateway.http.post(
            "/v1/jobs", json={"kind": "probe", "input": str(gateway.media / "clip.mp4")}
        ).json()
        wait_until(lambda: _status(gateway, other["id"]) == "succeeded", timeout=30)
        damaged.write_bytes((gateway.media / "clip.mp4").read_bytes())
        assert gateway.http.post(f"/v1/jobs/{mine['id']}/retry").status_code == 200
        seen: list[Any] = []
        ids: set[str] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not seen or seen[-1]["status"] != "succeeded"):
            event = json.loads(ws.recv(timeout=30))
            ids.add(event.get("job_id"))
            if event.get("job_id") == mine["id"]:
                seen.append(event)
        assert seen[0]["status"] == "queued" and seen[-1]["status"] == "succeeded"
        assert ids == {mine["id"]}  # nothing of the other job, which ran meanwhile


def _status(gateway: Gateway, job_id: str) -> str:
    return str(gateway.http.get(f"/v1/jobs/{job_id}").json()["status"])


def test_a_watch_folder_on_serve_submits_each_new_file(gateway: Gateway) -> None:
    (gateway.media / "inbox" / "ingest.mp4").write_bytes((gateway.media / "clip.mp4").read_bytes())
    out = gateway.out / "watched" / "ingest.mkv"
    wait_until(out.exists, timeout=60, step=0.25)
    jobs = gateway.http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
    [job] = [j for j in jobs if j["input"] == str(gateway.media / "inbox" / "ingest.mp4")]
    assert job["status"] == "succeeded" and count_frames(out) == 50


def test_a_symlink_out_of_the_media_root_is_refused(gateway: Gateway, tmp_path: Path) -> None:
    outside = tmp_path / "secret.mp4"
    outside.write_bytes((gateway.media / "clip.mp4").read_bytes())
    link = gateway.media / "innocent.mp4"
    link.symlink_to(outside)
    r = gateway.http.post(
        "/v1/jobs", json={"input": str(link), "output": str(gateway.out / "s.mp4")}
    )
    assert (
        r.status_code == 422 and "resolves outside the media roots" in r.json()["error"]["message"]
    )
    out_link = gateway.out / "elsewhere"
    out_link.symlink_to(tmp_path, target_is_directory=True)
    r = gateway.http.post(
        "/v1/jobs",
        json={"input": str(gateway.media / "clip.mp4"), "output": str(out_link / "o.mp4")},
    )
    assert r.status_code == 422 and "output" in r.json()["error"]["message"]
    assert list(tmp_path.glob("*.mp4")) == [outside]


def test_metrics_are_open_cluster_wide_and_count_what_happened(gateway: Gateway) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    job = gateway.http.post(
        "/v1/jobs",
        json={"input": str(gateway.media / "clip.mp4"), "output": str(gateway.out / "m.mp4"),
              "hardware": "cpu"},
    ).json()  # fmt: skip
    assert follow(gateway, job["id"])[-1]["status"] == "succeeded"
    r = httpx.get(f"{gateway.url}/metrics")  # no token: Prometheus scrapes it
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    names = {name for name, _ in samples}
    assert all(name.startswith("framefleet_") for name in names)
    finished = {labels: v for (n, labels), v in samples.items() if n.endswith("finished_total")}
    done = [v for labels, v in finished.items() if ("encoder", "libx264") in labels
            and ("outcome", "succeeded") in labels]  # fmt: skip
    assert done and done[0] >= 1
    # Every label set exists from start-up, zero or not.
    hevc_failed = ("framefleet_jobs_finished_total", (("codec", "hevc"), ("encoder", "libx265"),
                   ("kind", "transcode"), ("outcome", "failed")))  # fmt: skip
    assert hevc_failed in samples
    assert samples[("framefleet_frames_encoded_total", (("encoder", "libx264"),))] >= 50
    assert ("framefleet_queue_depth", (("priority", "0"),)) in samples
    assert any(n == "framefleet_queue_wait_seconds_bucket" for n, _ in samples)
    assert any(n == "framefleet_node_cpus" and v == 2 for (n, _), v in samples.items())
    assert not any(job["id"] in str(labels) for _, labels in samples)  # no job ids as labels


def test_cancel_against_a_frozen_encoder_answers_in_bounded_time(gateway: Gateway) -> None:
    dst = gateway.out / "frozen.mkv"
    body = {"input": str(gateway.media / "long.mp4"), "output": str(dst), "codec": "hevc",
            "speed": "slow", "hardware": "cpu"}  # fmt: skip
    job = gateway.http.post("/v1/jobs", json=body).json()

    def running() -> bool:
        j = gateway.http.get(f"/v1/jobs/{job['id']}").json()
        return j["status"] == "running" and (j["progress"] or {}).get("percent", 0) > 0

    wait_until(running, timeout=60)
    (ffmpeg,) = wait_until(lambda: ffmpeg_processes(str(dst.parent / ".frozen")), timeout=10)
    actor = int(Path(f"/proc/{ffmpeg}/stat").read_text().rsplit(") ", 1)[1].split()[1])
    os.kill(actor, signal.SIGSTOP)  # the encoder actor freezes; its ffmpeg runs on
    try:
        started = time.monotonic()
        r = gateway.http.delete(f"/v1/jobs/{job['id']}")
        took = time.monotonic() - started
        assert r.status_code == 202 and r.json()["status"] == "running", r.text
        assert took < 14, took  # the gateway's limit (10 s), not the engine's (15 s)
        events = follow(gateway, job["id"], timeout=60)
        assert events[-1]["status"] == "cancelled"
        wait_until(lambda: ffmpeg_processes(str(gateway.out)) == [], timeout=10)
        assert not dst.exists() and leftovers(gateway.out) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(actor, signal.SIGCONT)


def test_small_things_said_right(gateway: Gateway) -> None:
    missing = gateway.http.get("/v1/jobs/abc")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no job with id 'abc'; list jobs to find its id"
    nan = gateway.http.post(
        "/v1/jobs",
        content=f'{{"kind": "thumbnail", "input": "{gateway.media}/clip.mp4", '
        f'"output": "{gateway.out}/t", "thumbnail_at": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    assert nan.status_code == 422 and "finite number" in nan.text, nan.text
    (gateway.out / "exists.mp4").write_bytes(b"x")
    body = {"input": str(gateway.media / "clip.mp4"), "output": str(gateway.out / "exists.mp4")}
    exists = gateway.http.post("/v1/jobs", json=body)
    message = exists.json()["error"]["message"]
    assert exists.status_code == 422 and "overwrite: true" in message
    assert "pass --overwrite" not in message
    twice = gateway.http.post("/v1/jobs/batch", json={
        "inputs": [str(gateway.media / "clip.mp4"), str(gateway.media / "long.mp4")],
        "outputs": [str(gateway.out / "same.mp4"), str(gateway.out / "./same.mp4")]})  # fmt: skip
    assert twice.status_code == 422 and twice.json()["error"]["code"] == "duplicate_output"
    huge = gateway.http.post("/v1/jobs", json={
        "kind": "thumbnail", "input": str(gateway.media / "clip.mp4"), "output": str(gateway.out),
        "thumbnail_count": 100, "thumbnail_width": 7680})  # fmt: skip
    assert huge.status_code == 422 and huge.json()["error"]["code"] == "too_large"
    assert "jobs 1 and 2 of 2 both write" in twice.json()["error"]["message"]


def test_a_streamed_body_over_the_limit_gets_413(gateway: Gateway) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024  # 100 KiB in all, over the test gateway's 64 KiB

    r = gateway.http.post(
        "/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_next_cursor_only_when_more_follows(gateway: Gateway) -> None:
    everything = gateway.http.get("/v1/jobs", params={"limit": 500}).json()
    total = len(everything["jobs"])
    assert 2 <= total < 500 and everything["next_cursor"] is None
    exactly = gateway.http.get("/v1/jobs", params={"limit": total}).json()
    assert len(exactly["jobs"]) == total and exactly["next_cursor"] is None  # a full last page
    short = gateway.http.get("/v1/jobs", params={"limit": total - 1}).json()
    assert short["next_cursor"] is not None
    rest = gateway.http.get("/v1/jobs", params={"cursor": short["next_cursor"]}).json()
    assert [j["id"] for j in rest["jobs"]] == [everything["jobs"][-1]["id"]]


def test_a_binary_first_frame_closes_the_socket_with_4400(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/ws"
    with connect(url) as ws:
        ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


def test_sockets_waiting_for_a_token_are_capped(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/ws"
    with contextlib.ExitStack() as waiting:
        for _ in range(64):  # each may wait 5 s for its token message
            waiting.enter_context(connect(url))
        with pytest.raises(InvalidStatus, match="HTTP 403"):  # the 65th: turned away at once
            connect(url, open_timeout=5)
    with connect(url, additional_headers=AUTH) as ws:  # a token in the header needs no wait
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"


def test_signing_out_ends_that_session_on_the_gateway_also_after_a_restart(
    gateway: Gateway, fleet: Any, tmp_path: Path
) -> None:
    """A copy of a signed-out cookie (a stolen one) is refused on GET and POST, also by the
    next gateway on the same data dir; the browser's other sessions go on; removing the
    token from the configuration still ends every session made with it."""
    from api.gateway.app import create_app
    from api.settings import Settings

    def restarted(*tokens: str) -> Any:
        settings = Settings(api_tokens=list(tokens), data_dir=tmp_path / "gw",
                            media_roots=[str(gateway.media), str(gateway.out)])  # fmt: skip
        return create_app(settings, fleet)

    page = {"X-Framefleet-UI": "1"}
    probe = {"kind": "probe", "input": str(gateway.media / "clip.mp4")}

    def sign_in(url: str) -> dict[str, str]:
        r = httpx.post(f"{url}/ui/session", json={"token": TOKEN}, headers=page)
        assert r.status_code == 204
        return page | {"Cookie": f"framefleet_session={r.cookies['framefleet_session']}"}

    def answers(url: str, session: dict[str, str]) -> tuple[int, int]:
        read = httpx.get(f"{url}/v1/jobs", headers=session, timeout=30)
        change = httpx.post(f"{url}/v1/jobs", json=probe, headers=session, timeout=30)
        return read.status_code, change.status_code

    with serving(restarted(TOKEN, "another-token")) as url:
        gone, kept = sign_in(url), sign_in(url)  # two browsers, the same token
        assert gone != kept and answers(url, gone) == (200, 201)
        assert httpx.delete(f"{url}/ui/session", headers=gone).status_code == 204
        assert answers(url, gone) == (401, 401)
        assert httpx.get(f"{url}/ui/session", headers=gone).json() == {"signed_in": False}
        assert answers(url, kept) == (200, 201)
    with serving(restarted(TOKEN, "another-token")) as url:  # the same data dir
        assert answers(url, gone) == (401, 401)
        assert answers(url, kept) == (200, 201)
        again = sign_in(url)
        assert answers(url, again) == (200, 201)
    with serving(restarted("another-token")) as url:  # the token taken out: signed out
        assert answers(url, kept) == (401, 401) and answers(url, again) == (401, 401)


def test_drain_undrain_and_release_from_the_cli_through_the_gateway(gateway: Gateway) -> None:
    """An operator drains the only node: its running job goes on, a new job waits; the
    node shows draining, then drained (API, CLI, metrics); undrain lets the job run."""
    from prometheus_client.parser import text_string_to_metric_families

    def node_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FRAMEFLEET, "node", *args, "--api", gateway.url, "--token", TOKEN],
            capture_output=True, text=True, timeout=60, env=env_without_ray(), check=False,
        )  # fmt: skip

    def node_state() -> str:
        (node,) = gateway.http.get("/v1/nodes").json()
        return str(node["state"])

    (node,) = gateway.http.get("/v1/nodes").json()
    long = gateway.http.post(
        "/v1/jobs",
        json={"input": str(gateway.media / "long.mp4"), "output": str(gateway.out / "d1.mkv"),
              "codec": "hevc", "speed": "slow", "hardware": "cpu"},
    ).json()  # fmt: skip
    wait_until(lambda: gateway.http.get(f"/v1/jobs/{long['id']}").json()["status"] == "running")
    try:
        drained = node_cli("drain", node["address"])
        assert drained.returncode == 0, drained.stderr
        assert drained.stdout.strip() == (
            f"{node['node_id'][:12]} ({node['address']}): draining; 1 job still running"
        )
        waiting = gateway.http.post(
            "/v1/jobs",
            json={"input": str(gateway.media / "clip.mp4"), "output": str(gateway.out / "d2.mp4"),
                  "hardware": "cpu"},
        ).json()  # fmt: skip
        time.sleep(2)
        assert gateway.http.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "queued"
        assert gateway.http.get(f"/v1/jobs/{long['id']}").json()["status"] == "running"
        metrics = httpx.get(f"{gateway.url}/metrics").text
        states = {s.labels["state"]: s.value for f in text_string_to_metric_families(metrics)
                  for s in f.samples if s.name == "framefleet_node_state"}  # fmt: skip
        assert states == {"ready": 0, "draining": 1, "drained": 0, "quarantined": 0, "trial": 0}
        gateway.http.delete(f"/v1/jobs/{long['id']}")
        waited = node_cli("drain", node["node_id"], "--wait")  # returns once nothing runs
        assert waited.stdout.strip() == f"{node['node_id'][:12]} ({node['address']}): drained"
        assert node_state() == "drained"
        listed = subprocess.run(
            [FRAMEFLEET, "nodes", "--api", gateway.url, "--token", TOKEN],
            capture_output=True, text=True, timeout=60, env=env_without_ray(), check=False,
        )  # fmt: skip
        assert "drained" in listed.stdout
        assert f"{node['address']} scores psnr, ssim, vmaf, xpsnr" in listed.stdout
        undrained = node_cli("undrain", node["node_id"][:8])
        assert undrained.stdout.strip() == f"{node['node_id'][:12]} ({node['address']}): ready"
        assert follow(gateway, waiting["id"])[-1]["status"] == "succeeded"
        released = node_cli("release", node["node_id"])
        assert released.stdout.strip() == f"node:{node['node_id']} was not quarantined"
        unknown = node_cli("drain", "no-such-node")
        assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
        assert unknown.stderr.strip().startswith(
            "framefleet: no node 'no-such-node' in the cluster (give a node id, address or "
            "hostname, or a GPU UUID; see `framefleet nodes`)"
        )
        assert unknown.stderr.strip().endswith("(HTTP 404)")
        anonymous = httpx.post(f"{gateway.url}/v1/nodes/{node['node_id']}/drain")
        assert anonymous.status_code == 401
    finally:
        gateway.http.delete(f"/v1/nodes/{node['node_id']}/drain")
        gateway.http.delete(f"/v1/jobs/{long['id']}")
    assert node_state() == "ready"


def sse(lines: Any) -> Any:
    """(event, id, data) of each event of an SSE stream."""
    name, event_id, data = "message", None, None
    for line in lines:
        if not line:
            if data is not None:
                yield name, event_id, data
            name, event_id, data = "message", None, None
        elif line.startswith(("event:", "id:", "data:")):
            field, _, value = line.partition(":")
            value = value.strip()
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            else:
                data = json.loads(value)


def test_sse_resumes_from_last_event_id_across_a_gateway_restart_and_cli_watch_reconnects(
    gateway: Gateway, fleet: Any, tmp_path: Path
) -> None:
    from api.gateway.app import create_app
    from api.settings import Settings

    def restarted() -> Any:  # another gateway on the same coordinator: a restarted one
        settings = Settings(api_tokens=[TOKEN], media_roots=[str(gateway.media), str(gateway.out)],
                            data_dir=tmp_path / "gw")  # fmt: skip
        return create_app(settings, fleet)

    job = gateway.http.post(
        "/v1/jobs",
        json={"input": str(gateway.media / "long.mp4"), "output": str(gateway.out / "r.mkv"),
              "hardware": "cpu"},
    ).json()  # fmt: skip
    port = free_port()
    watch = subprocess.Popen(
        [FRAMEFLEET, "watch", job["id"], "--api", f"http://127.0.0.1:{port}", "--token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_without_ray(),
    )  # fmt: skip
    try:
        with serving(restarted(), port) as url:
            seen = []
            with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events", headers=AUTH,
                              timeout=60) as r:  # fmt: skip
                for name, event_id, data in sse(r.iter_lines()):
                    seen.append((name, int(event_id), data))
                    if (data.get("progress") or {}).get("percent", 0) > 0:
                        break  # the network is cut here
        cut_at = time.time()
        time.sleep(2)  # no gateway: events happen that nobody receives
        with serving(restarted(), port) as url:
            last_id = seen[-1][1]
            with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events",
                              headers={**AUTH, "Last-Event-ID": str(last_id)},
                              timeout=120) as r:  # fmt: skip
                resumed = [(n, int(i), d) for n, i, d in sse(r.iter_lines())]
            assert watch.wait(timeout=120) == 0, watch.stderr.read() if watch.stderr else ""
            # A cursor the coordinator no longer keeps: a gap, then the job as it is.
            with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events",
                              headers={**AUTH, "Last-Event-ID": "1"}, timeout=60) as r:  # fmt: skip
                gap = list(sse(r.iter_lines()))
    finally:
        watch.kill()
    ids = [i for _, i, _ in seen + resumed]
    assert ids == sorted(set(ids))  # every event once, in order
    assert resumed[0][1] > last_id and resumed[-1][2]["status"] == "succeeded"
    assert any(d["time"] < cut_at + 2 and d["type"] == "progress" for _, _, d in resumed)
    assert [n for n, _, _ in gap] == ["gap", "job"]
    assert gap[0][2]["type"] == "gap" and gap[1][2]["status"] == "succeeded"
    out = watch.stdout.read() if watch.stdout else ""
    assert f"{job['id']}  transcode succeeded" in out
    assert count_frames(gateway.out / "r.mkv") == 750


def test_a_websocket_that_reconnects_with_since_gets_what_it_missed(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/ws"
    damaged = gateway.media / "since-damaged.mp4"
    damaged.write_bytes(b"not a video" * 100)
    job = gateway.http.post("/v1/jobs", json={"kind": "probe", "input": str(damaged)}).json()
    assert follow(gateway, job["id"])[-1]["status"] == "failed"
    with gateway.http.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        (first_id,) = [int(i) for _, i, _ in sse(r.iter_lines())]  # already over: one event
    with connect(url, additional_headers=AUTH) as ws:  # a client that was away all along
        assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
        ws.send(json.dumps({"subscribe": [job["id"]], "since": 1}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        assert json.loads(ws.recv(timeout=10)) == {"type": "gap"}  # 1 is no longer kept
        damaged.write_bytes((gateway.media / "clip.mp4").read_bytes())
        retried = gateway.http.post(f"/v1/jobs/{job['id']}/retry").json()
        assert retried["status"] == "queued"
        wait_until(lambda: _status(gateway, job["id"]) == "succeeded", timeout=30)
    with connect(url, additional_headers=AUTH) as ws:  # back, with the seq it last saw
        assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
        ws.send(json.dumps({"subscribe": [job["id"]], "since": first_id}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        missed = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
        assert [e["status"] for e in missed] == ["queued", "running", "succeeded"]
        assert all(e["seq"] > first_id for e in missed)
        assert [e["seq"] for e in missed] == sorted(e["seq"] for e in missed)
        ws.send(json.dumps({"subscribe": "all", "since": "yesterday"}))
        assert json.loads(ws.recv(timeout=10)) == {
            "type": "error",
            "message": "since must be an event seq",
        }
