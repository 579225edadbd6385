"""What clients cannot break through the real gateway (issue 33): cancels and retries of
one job fired at once from many clients never give it two live encodes, and nothing it
ran outlives its cancellation; a token flooding the queue is held at its bound (429, a
batch all or none) while other tokens still submit, and what it queued stays small on
disk however large its labels."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.gateway.app import create_app
from api.settings import Settings
from cluster.ray_edge.runtime import Runtime
from tests.helpers import ffmpeg_processes, leftovers, make_clip, serving, wait_until
from tests.integration.api.conftest import AUTH, TOKEN, Gateway, finished
from tests.integration.conftest import start_fleet

# ---- one live attempt per job ---------------------------------------------------------

EACH = 50
"""Cancels, and as many retries, fired at once in a round."""
ROUNDS = 3
OUTLIVES_S = 1.0
"""How long an ffmpeg may take to be gone after its job is reported cancelled."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the process table: the job's live ffmpegs, each with its attempt."""

    at: float
    """time.time() as the look began (the coordinator's clock: jobs' finished_at)."""
    encodes: tuple[tuple[int, int | None], ...]


def encodes_of(job_id: str, source: str) -> tuple[tuple[int, int | None], ...]:
    """The job's live ffmpegs as (pid, attempt). The encoder passes files as open
    descriptors: an ffmpeg's attempt is that of the partial output it holds,
    ``.<output>.<job>.<attempt>.partial``; ``None`` for one holding only the input."""
    partial = re.compile(rf"\.{job_id}\.(\d+)\.partial")
    found: list[tuple[int, int | None]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        proc = f"/proc/{entry.name}"
        try:
            # comm is the executable's name once nice has exec'ed ffmpeg (same pid)
            with open(f"{proc}/comm", "rb") as f:
                if f.read().strip() != b"ffmpeg":
                    continue
            with open(f"{proc}/stat", "rb") as f:
                if f.read().rsplit(b") ", 1)[-1][:1] == b"Z":
                    continue
            with open(f"{proc}/cmdline", "rb") as f:
                names = [f.read().replace(b"\0", b" ").decode(errors="replace")]
        except OSError:
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"{proc}/fd"):
                with contextlib.suppress(OSError):
                    names.append(os.readlink(fd.path))
        attempts = [int(m[1]) for n in names if (m := partial.search(n))]
        if attempts:
            found.append((int(entry.name), max(attempts)))
        elif any(source in n for n in names):
            found.append((int(entry.name), None))
    return tuple(found)


class Sampler(threading.Thread):
    """Looks at the job's ffmpegs every ~20 ms until stopped."""

    def __init__(self, job_id: str, source: str) -> None:
        super().__init__(daemon=True)
        self.job_id, self.source = job_id, source
        self.samples: list[Sample] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            at = time.time()
            self.samples.append(Sample(at, encodes_of(self.job_id, self.source)))
            self._done.wait(0.02)

    def stop(self) -> list[Sample]:
        self._done.set()
        self.join(timeout=10)
        return list(self.samples)


@dataclass(frozen=True, slots=True)
class Answer:
    verb: str
    """``cancel`` (DELETE) or ``retry``."""
    code: int
    body: dict[str, Any]

    @property
    def status(self) -> str | None:
        status: str | None = self.body.get("status")
        return status

    @property
    def label(self) -> str:
        error = self.body.get("error") if self.code >= 400 else None
        said = error["code"] if isinstance(error, dict) else self.status
        return f"{self.verb} {self.code} {said}"


async def race(url: str, job_id: str) -> list[Answer]:
    """``EACH`` cancels and ``EACH`` retries of the job, interleaved, all at once."""
    limits = httpx.Limits(max_connections=2 * EACH)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120, limits=limits) as http:

        async def call(verb: str) -> Answer:
            if verb == "cancel":
                r = await http.delete(f"/v1/jobs/{job_id}")
            else:
                r = await http.post(f"/v1/jobs/{job_id}/retry")
            return Answer(verb, r.status_code, r.json())

        verbs = [verb for _ in range(EACH) for verb in ("cancel", "retry")]
        return list(await asyncio.gather(*(call(verb) for verb in verbs)))


def encoding(gw: Gateway, job_id: str, source: str) -> dict[str, Any]:
    """The job once it runs again (retried if the race left it ended) with an ffmpeg up."""

    seen: list[dict[str, Any]] = []

    def up() -> dict[str, Any] | None:
        job: dict[str, Any] = gw.http.get(f"/v1/jobs/{job_id}").json()
        seen[:] = [job]
        assert job["status"] not in ("succeeded", "failed"), job
        if job["status"] == "cancelled":
            retried = gw.http.post(f"/v1/jobs/{job_id}/retry")  # 409 while still stopping
            assert retried.status_code in (200, 409), retried.text
        return job if job["status"] == "running" and encodes_of(job_id, source) else None

    try:
        job: dict[str, Any] = wait_until(up, timeout=90, step=0.2)
    except AssertionError:
        last = {k: seen[-1][k] for k in ("status", "attempts", "reason")} if seen else None
        raise AssertionError(f"the job did not run again within 90 s: {last}, its ffmpegs "
                             f"{encodes_of(job_id, source)}") from None  # fmt: skip
    return job


@pytest.mark.timeout(600)
def test_racing_cancels_and_retries_never_give_a_job_two_encodes(gateway: Gateway) -> None:
    """Old behaviour: two ffmpegs of one job encoded at once for seconds, and one kept
    running ≥ 24 s after the job showed cancelled."""
    name = f"race-{uuid.uuid4().hex[:8]}"
    source = str(make_clip(gateway.media / f"{name}.mp4", seconds=60, size="1280x720"))
    dst = gateway.out / f"{name}.mkv"
    made = gateway.http.post("/v1/jobs", json={
        "input": source, "output": str(dst), "codec": "hevc", "speed": "slow",
        "hardware": "cpu", "split": "off",
    })  # fmt: skip
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    encoding(gateway, job_id, source)
    assert [a for _, a in encodes_of(job_id, source)] == [1], "its partial names the attempt"

    sampler = Sampler(job_id, source)
    sampler.start()
    answers: list[Answer] = []
    try:
        for round_ in range(ROUNDS):
            answers += asyncio.run(race(gateway.url, job_id))
            if round_ < ROUNDS - 1:
                encoding(gateway, job_id, source)  # the next round races a live encode
        final = gateway.http.delete(f"/v1/jobs/{job_id}")
        assert final.status_code in (200, 202), final.text
        ended = finished(gateway, job_id)  # a 202 (or 200 still running) ends later
        assert ended["status"] == "cancelled", ended
        wait_until(lambda: sampler.samples[-1].at > ended["finished_at"] + 2 * OUTLIVES_S,
                   timeout=30)  # fmt: skip
    finally:
        samples = sampler.stop()

    # A user's retry starts the job afresh (attempts from 0 again, so every run writes
    # .<output>.<job>.1.partial): a run is told apart by its ffmpeg's pid.
    first_seen: dict[int, float] = {}
    for s in samples:
        for pid, _ in s.encodes:
            first_seen.setdefault(pid, s.at)
    last_seen = {pid: s.at for s in samples for pid, _ in s.encodes}
    # When the job became cancelled, as each answer saying so tells (the answers to the
    # cancels that followed, idempotent, tell the same moment).
    cancelled = sorted({a.body["finished_at"] for a in answers
                        if a.code == 200 and a.status == "cancelled"})  # fmt: skip
    ran_on = max([last_seen[pid] - at for at in cancelled for pid, seen in first_seen.items()
                  if seen <= at], default=float("nan"))  # fmt: skip
    most = max(len(s.encodes) for s in samples)
    by_label = Counter(a.label for a in answers)
    summary = (
        f"{len(samples)} samples over {samples[-1].at - samples[0].at:.1f} s, at most "
        f"{most} ffmpeg(s) of the job at once, {len(first_seen)} runs (ffmpeg pids) seen; "
        f"{len(answers)} answers in {ROUNDS} rounds: {dict(sorted(by_label.items()))}; "
        f"{len(cancelled)} cancellations; an ffmpeg last seen {ran_on:+.2f} s after its "
        "job became cancelled at the latest"
    )
    print(f"\nrace: {summary}")

    # (a) never two encodes of the job at once
    doubled = [s for s in samples if len(s.encodes) > 1]
    assert not doubled, f"two at once in {len(doubled)} samples: {doubled[:3]}; {summary}"
    assert len(first_seen) >= ROUNDS, f"the retries started no new runs; {summary}"
    # (b) once a cancel says cancelled, each ffmpeg of the job running at that moment is
    # gone within OUTLIVES_S (a later retry's are not)
    outlived: dict[int, float] = {}  # pid: how long it ran on after its job became cancelled
    for at in cancelled:
        for pid, seen in first_seen.items():
            if seen <= at and last_seen[pid] > at + OUTLIVES_S:
                outlived[pid] = round(max(outlived.get(pid, 0), last_seen[pid] - at), 2)
    assert not outlived, f"ffmpeg ran on after cancelled (pid: s): {outlived}; {summary}"
    # (c) after the final cancel: no ffmpeg of the job, no partial file, no output
    after = [s for s in samples if s.at > ended["finished_at"] + OUTLIVES_S and s.encodes]
    assert not after, f"ffmpeg left after the final cancel: {after[:3]}; {summary}"
    assert ffmpeg_processes(name) == []
    assert leftovers(gateway.out) == [] and not dst.exists()
    # (d) each answer is one a client can act on
    assert {a.code for a in answers} <= {200, 202, 409}, summary
    for a in answers:
        if a.code == 409:
            error = a.body["error"]
            assert error["code"] == "invalid_transition", a.body
            assert error["message"].startswith(f"job {job_id}") and "\n" not in error["message"]
        elif a.verb == "retry":
            assert a.status == "queued", a.body
        elif a.code == 200:  # a cancel done: its ffmpeg is gone
            assert a.status == "cancelled", a.body
        else:  # 202: still stopping (or still waiting its turn behind the other cancels)
            assert a.status in ("running", "queued", "cancelled"), a.body
    assert any(a.verb == "cancel" and a.status == "cancelled" for a in answers), summary
    assert any(a.verb == "retry" and a.code == 200 for a in answers), summary


# ---- a bounded queue per token --------------------------------------------------------

CAP = 300
"""The flood's coordinator: jobs one token may have queued."""
OTHER = "flood-other-token"
OTHER_AUTH = {"Authorization": f"Bearer {OTHER}"}
PER_JOB_BYTES = 3072
"""The bound on what a queued job adds to the SQLite file. Each flood job carries labels
at the caps (4096 characters). A batch's jobs share one stored spec, so a job's record
holds only what is its own (its paths, its probed input, its split plan): about 1.3 KB,
~1.7 KB a job with SQLite's pages. A record with its own copy of the labels, as the old
code kept (~59 KB a job with the probe's labels), would add over 4 KB more: past this."""


@dataclass(frozen=True, slots=True)
class Flood:
    gw: Gateway
    db: Path


@pytest.fixture
def flood(ray_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flood]:
    """A gateway over a coordinator of its own with a small queue per token, its only
    node drained so every job stays queued."""
    media, out = tmp_path_factory.mktemp("flood-media"), tmp_path_factory.mktemp("flood-out")
    make_clip(media / "clip.mp4", seconds=1)
    data = tmp_path_factory.mktemp("flood-coordinator")
    roots = (media.resolve(), out.resolve())
    fleet = start_fleet(data, "coordinator-hardening-flood", media_roots=roots, max_queued_jobs=CAP)
    try:
        settings = Settings(
            api_tokens=[TOKEN, OTHER],
            media_roots=[str(media), str(out)],
            data_dir=tmp_path_factory.mktemp("flood-gw-data"),
        )
        with serving(create_app(settings, fleet)) as url:
            gw = Gateway(url, media, out)
            nodes = wait_until(lambda: gw.http.get("/v1/nodes").json(), timeout=60)
            drained = gw.http.post(f"/v1/nodes/{nodes[0]['address']}/drain")
            assert drained.status_code == 200, drained.text
            yield Flood(gw, data / "jobs.sqlite3")
            gw.http.close()
    finally:
        fleet.shutdown_coordinator()
    assert ffmpeg_processes(str(out)) == [] and leftovers(out) == []


_outputs = count()
BIG_LABELS = {f"label-{i:02d}": f"{i:02d}" * 60 for i in range(32)}
"""At the caps: 32 keys, 8 + 120 characters each, 4096 in all."""


def batch(gw: Gateway, n: int, labels: dict[str, str] = BIG_LABELS) -> dict[str, Any]:
    """``n`` transcodes (a node's work: they wait while it is drained), each to a file of
    its own."""
    return {
        "spec": {"hardware": "cpu", "labels": labels},
        "inputs": [str(gw.media / "clip.mp4")] * n,
        "outputs": [str(gw.out / f"flood-{next(_outputs)}.mp4") for _ in range(n)],
    }


def queued(gw: Gateway) -> int:
    """Jobs queued on the coordinator (every page)."""
    total, cursor = 0, 0
    while True:
        page = gw.http.get("/v1/jobs", params={"status": "queued", "limit": 500,
                                               "cursor": cursor}).json()  # fmt: skip
        total += len(page["jobs"])
        if page["next_cursor"] is None:
            return total
        cursor = page["next_cursor"]


def db_bytes(db: Path) -> int:
    """The SQLite file and its WAL once the WAL is written back and truncated."""

    def checkpointed() -> bool:
        with contextlib.closing(sqlite3.connect(db)) as con:
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    wait_until(checkpointed, timeout=30, step=0.2)
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def one_line_error(r: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = r.json()["error"]
    assert "\n" not in error["message"], error
    return error


def test_a_flooding_token_is_held_at_its_queue_bound_and_stays_small_on_disk(
    flood: Flood,
) -> None:
    gw = flood.gw
    before = db_bytes(flood.db)
    accepted = 0
    for n in (50, 100, 100):
        r = gw.http.post("/v1/jobs/batch", json=batch(gw, n))
        assert r.status_code == 201, r.text
        accepted += n
    # A batch that would cross the bound is refused whole.
    crossing = gw.http.post("/v1/jobs/batch", json=batch(gw, 100))
    assert crossing.status_code == 429, crossing.text
    assert crossing.headers.get("retry-after", "").isdigit(), crossing.headers
    error = one_line_error(crossing)
    assert error["code"] == "queue_full" and f"at most {CAP}" in error["message"], error
    assert queued(gw) == accepted == 250
    filled = gw.http.post("/v1/jobs/batch", json=batch(gw, CAP - accepted))
    assert filled.status_code == 201, filled.text
    accepted = CAP
    for refused in (
        gw.http.post("/v1/jobs/batch", json=batch(gw, 1)),
        gw.http.post("/v1/jobs", json=batch(gw, 1)["spec"] | {
            "input": str(gw.media / "clip.mp4"), "output": str(gw.out / "one-more.mp4")}),
    ):  # fmt: skip
        assert refused.status_code == 429 and "retry-after" in refused.headers, refused.text
        assert one_line_error(refused)["code"] == "queue_full"
    # Another token is not held by this one's queue.
    other = gw.http.post("/v1/jobs/batch", json=batch(gw, 100), headers=OTHER_AUTH)
    assert other.status_code == 201, other.text
    accepted += 100
    assert queued(gw) == accepted
    # Labels past the caps (what the probe sent: 50 keys of 1000 characters) are refused.
    huge = {f"key-{i:02d}": "x" * 1000 for i in range(50)}
    for r in (
        gw.http.post("/v1/jobs/batch", json=batch(gw, 1, huge), headers=OTHER_AUTH),
        gw.http.post("/v1/jobs", json=batch(gw, 1, huge)["spec"] | {
            "input": str(gw.media / "clip.mp4"), "output": str(gw.out / "huge.mp4")},
            headers=OTHER_AUTH),
    ):  # fmt: skip
        assert r.status_code == 422, r.text
        # A batch's refusal names the job ("job 1 of 1: labels: ..."), a single one not.
        message = one_line_error(r)["message"].removeprefix("job 1 of 1: ")
        assert message.startswith("labels: at most 32, keys up to 64"), r.text
    assert queued(gw) == accepted

    grown = db_bytes(flood.db) - before
    per_job = grown / accepted
    chars = sum(len(k) + len(v) for k, v in BIG_LABELS.items())
    print(f"\nflood: {accepted} jobs queued with {chars} label characters each; the SQLite "
          f"file grew {grown} bytes, {per_job:.0f} a job; refused with 429 (Retry-After "
          f"{crossing.headers['retry-after']}): {error['message']!r}; over the label caps, "
          f"422: {r.json()['error']['message']!r}")  # fmt: skip
    assert per_job < PER_JOB_BYTES, f"{per_job:.0f} bytes a job ({grown} for {accepted})"
