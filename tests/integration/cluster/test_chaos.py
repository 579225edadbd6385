"""Chaos on a real farm: a multi-node Ray ``Cluster``, `framefleet serve` as a process, a
batch of short jobs followed by one SSE client each, and, while they run, a bounded loop
that SIGKILLs ffmpeg processes and encoder actors, removes a worker node (and adds one
back), kills the coordinator once and the gateway once. One worker's ffmpeg hangs on
every encode (as on a wedged NFS read).

At the end every job succeeded exactly once (each output present once, with its input's
frame count), nothing partial is left, no ffmpeg or hung wrapper runs, the hanging node
is quarantined, and every SSE client saw its job's terminal event. It prints the figures.
``make test-chaos`` runs it five times.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray.cluster_utils import Cluster

from api.cli.jobs import GatewayClient
from cluster.storage.roots import IDENTITY_NAME
from tests.helpers import (
    count_frames,
    ffmpeg_processes,
    free_port,
    leftovers,
    make_clip,
    processes_matching,
    wait_until,
)
from tests.integration.conftest import private_cluster

pytestmark = [pytest.mark.multinode, pytest.mark.chaos, pytest.mark.timeout(900)]
FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))
TOKEN = "chaos-token-0123456789"  # noqa: S105
JOBS = int(os.environ.get("CHAOS_JOBS", "120"))
FRAMES = 75  # 3 s at 25 fps
STALL_S = 8
SCHEDULE = (
    "ffmpeg", "node", "actor", "coordinator", "ffmpeg", "gateway", "actor", "ffmpeg",
    "ffmpeg", "actor", "ffmpeg",
)  # fmt: skip
"""The faults, in order, one every ``STEP_S`` once jobs are flowing."""
STEP_S = 1.5
HANG = """\
import os, sys, time
if "-progress" in sys.argv:  # an encode: hang without a word, as on a wedged NFS read
    time.sleep(3600)
os.execvp("ffmpeg", ["ffmpeg", *sys.argv[1:]])  # -version, -encoders: the real answers
"""


@dataclass
class Farm:
    cluster: Cluster
    temp: Path
    media: Path
    out: Path
    hang: Path
    """The hanging ffmpeg wrapper."""
    nodes: dict[str, Any]
    port: int
    env: dict[str, str]
    log: Path
    gateway: subprocess.Popen[bytes] | None = None
    hit: set[str] = field(default_factory=set)
    """Outputs whose encode a fault was aimed at (one fault per job at most)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_worker(self, name: str, ffmpeg: str = "ffmpeg") -> None:
        self.nodes[name] = self.cluster.add_node(
            num_cpus=1, num_gpus=0, env_vars={"FRAMEFLEET_FFMPEG": ffmpeg}
        )

    def start_gateway(self) -> None:
        with self.log.open("ab") as log:
            self.gateway = subprocess.Popen(
                [FRAMEFLEET, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.ready, timeout=120, step=0.3)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def running_encodes(self) -> dict[int, str]:
        """Live ffmpeg pids writing into the output folder -> the output they write."""
        found = {}
        for pid in ffmpeg_processes(str(self.out)):
            # Partial outputs are .<name>.<job id>.partial files in the output folder.
            names = [Path(f).name for f in open_files(pid) if Path(f).parent == self.out]
            partial = [n for n in names if n.startswith(".") and n.endswith("partial")]
            if partial:
                found[pid] = partial[0].split(".")[1]
        return found


def open_files(pid: int) -> list[str]:
    files = []
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                files.append(os.readlink(fd))
            except OSError:
                continue
    except OSError:
        pass
    return files


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1].split()[1])


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    with private_cluster("ffc-") as (cluster, temp):
        yield from _farm(cluster, temp, tmp_path)
    # No Ray process of this farm outlives it (raylets, workers, the removed node's).
    deadline = time.monotonic() + 30
    while processes_matching(str(temp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_matching(str(temp)) == []


def _farm(cluster: Cluster, temp: Path, tmp_path: Path) -> Iterator[Farm]:
    media, out = tmp_path / "media", tmp_path / "out"
    media.mkdir()
    out.mkdir()
    hang = tmp_path / "hang" / "ffmpeg"
    hang.parent.mkdir()
    hang.write_text(f"#!{sys.executable}\n{HANG}")
    hang.chmod(0o755)
    env = dict(os.environ) | {
        "FRAMEFLEET_RAY_ADDRESS": cluster.address,
        "FRAMEFLEET_DATA_DIR": str(tmp_path / "data"),
        "FRAMEFLEET_API_TOKENS": TOKEN,
        "FRAMEFLEET_MEDIA_ROOTS": f"{media},{out}",
        "FRAMEFLEET_STALL_S": str(STALL_S),
        "FRAMEFLEET_QUARANTINE_S": "600",
    }
    farm = Farm(cluster, temp, media, out, hang, {}, free_port(), env, tmp_path / "serve.log")
    farm.add_worker("w1")
    farm.add_worker("w2")
    farm.add_worker("hang", ffmpeg=str(hang))
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="framefleet", log_to_driver=False)
    try:
        yield farm
    finally:
        if farm.gateway is not None:
            farm.gateway.send_signal(signal.SIGTERM)
            try:
                farm.gateway.wait(timeout=60)
            except subprocess.TimeoutExpired:
                farm.gateway.kill()
        ray.shutdown()


class Chaos:
    """The bounded fault loop: each fault in ``SCHEDULE`` once, ``STEP_S`` apart."""

    def __init__(self, farm: Farm, rng: random.Random) -> None:
        self.farm, self.rng = farm, rng
        self.injected: Counter[str] = Counter()
        self.removed: Any = None

    def run(self, done: Callable[[], bool]) -> None:
        todo = list(SCHEDULE)
        while todo and not done():
            if self.removed is not None and self.injected["node"] and todo[0] != "node":
                self.farm.add_worker("w3")  # the node comes back (a new Ray node)
                self.removed = None
            if getattr(self, todo[0])():
                self.injected[todo.pop(0)] += 1
                time.sleep(STEP_S)
            else:
                time.sleep(0.1)  # nothing to aim at yet

    def _victim(self) -> tuple[int, str] | None:
        encodes = [(p, o) for p, o in self.farm.running_encodes().items() if o not in self.farm.hit]
        if not encodes:
            return None
        pid, output = self.rng.choice(encodes)
        self.farm.hit.add(output)
        return pid, output

    def ffmpeg(self) -> bool:
        victim = self._victim()
        if victim is None:
            return False
        os.kill(victim[0], signal.SIGKILL)
        return True

    def actor(self) -> bool:
        """SIGKILL the encoder actor (the Ray worker process) running an ffmpeg."""
        victim = self._victim()
        if victim is None:
            return False
        worker = parent_of(victim[0])
        cmdline = Path(f"/proc/{worker}/cmdline").read_bytes()
        assert b"ray::" in cmdline or b"default_worker" in cmdline, cmdline
        os.kill(worker, signal.SIGKILL)
        return True

    def node(self) -> bool:
        self.removed = self.farm.nodes.pop("w2")
        self.farm.cluster.remove_node(self.removed)
        return True

    def coordinator(self) -> bool:
        ray.kill(ray.get_actor("framefleet-coordinator"), no_restart=False)
        return True

    def gateway(self) -> bool:
        assert self.farm.gateway is not None
        self.farm.gateway.kill()  # SIGKILL: no graceful anything
        self.farm.gateway.wait()
        self.farm.start_gateway()
        return True


def follow(farm: Farm, job_id: str, seen: dict[str, list[str]]) -> None:
    client = GatewayClient(farm.url, TOKEN, farm.temp)
    try:
        for event in client.events(job_id, reconnect_s=180):
            seen.setdefault(job_id, []).append(event["status"])
    except Exception as exc:  # the assertion below names what happened
        seen.setdefault(job_id, []).append(f"error: {exc}")
    finally:
        client.http.close()


def test_a_batch_survives_killed_encoders_nodes_coordinator_and_gateway(farm: Farm) -> None:
    seed = int(os.environ.get("CHAOS_SEED", time.time()))
    rng = random.Random(seed)
    started = time.monotonic()
    make_clip(farm.media / "clip.mp4", seconds=3, size="320x240")
    for i in range(JOBS):
        shutil.copy(farm.media / "clip.mp4", farm.media / f"c{i:03d}.mp4")
    farm.start_gateway()
    api = httpx.Client(base_url=farm.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    inputs = [str(farm.media / f"c{i:03d}.mp4") for i in range(JOBS)]
    spec = {"hardware": "cpu"}
    batch = api.post(
        "/v1/jobs/batch", json={"spec": spec, "inputs": inputs, "output_dir": str(farm.out)}
    )
    assert batch.status_code == 201, batch.text
    ids: list[str] = batch.json()["ids"]
    seen: dict[str, list[str]] = {}
    followers = [
        threading.Thread(target=follow, args=(farm, job_id, seen), daemon=True) for job_id in ids
    ]
    for thread in followers:
        thread.start()

    def jobs() -> list[dict[str, Any]]:
        found, cursor = [], 0
        while True:
            try:
                page = api.get("/v1/jobs", params={"cursor": cursor, "limit": 500}).json()
            except httpx.TransportError:
                return []  # the gateway is restarting
            found += page["jobs"]
            if page["next_cursor"] is None:
                return found
            cursor = page["next_cursor"]

    def all_ended() -> bool:
        listed = jobs()
        return len(listed) == JOBS and all(
            j["status"] in ("succeeded", "failed", "cancelled") for j in listed
        )

    wait_until(lambda: len(list(farm.out.glob("*.mp4"))) >= 3, timeout=120, step=0.2)
    chaos = Chaos(farm, rng)
    chaos.run(all_ended)
    wait_until(all_ended, timeout=600, step=1.0)
    for thread in followers:
        thread.join(timeout=240)
    wall = time.monotonic() - started

    ended = jobs()
    log = farm.log.read_text(errors="replace")[-3000:]
    statuses = Counter(j["status"] for j in ended)
    assert statuses == {"succeeded": JOBS}, (
        [(j["id"], j["status"], j["reason"]) for j in ended if j["status"] != "succeeded"],
        log,
    )
    # Each output present once, whole, with its input's frames; nothing partial (beside
    # the root's identity file, which serve writes).
    outputs = sorted(p.name for p in farm.out.iterdir() if p.name != IDENTITY_NAME)
    assert outputs == sorted(f"c{i:03d}.mp4" for i in range(JOBS)), outputs
    assert leftovers(farm.out) == []
    bad = [name for name in outputs if count_frames(farm.out / name) != FRAMES]
    assert bad == []
    # Every SSE client saw its job's terminal event (reconnecting across the restarts).
    assert all(not t.is_alive() for t in followers)
    missed = {i: seen.get(i) for i in ids if (seen.get(i) or ["?"])[-1] != "succeeded"}
    assert missed == {}
    # No ffmpeg, no hung wrapper left; the hanging node quarantined.
    wait_until(lambda: not ffmpeg_processes(str(farm.out)), timeout=30)
    wait_until(lambda: not processes_matching(str(farm.hang)), timeout=30)
    nodes = {n["node_id"]: n for n in api.get("/v1/nodes").json()}
    hang = nodes[farm.nodes["hang"].node_id]
    assert hang["state"] == "quarantined", hang
    assert "stalled: no progress" in hang["quarantine"]["reason"], hang
    assert set(chaos.injected) == set(SCHEDULE), chaos.injected  # every fault happened

    attempts = sum(j["attempts"] for j in ended)
    hang_id = farm.nodes["hang"].node_id
    stalled = [f["node_id"] for j in ended for f in j["failures"] if f["code"] == "stalled"]
    stalls = (
        f"{stalled.count(hang_id)} stalls on it, {len(stalled) - stalled.count(hang_id)} elsewhere"
    )
    print(
        f"\nchaos (seed {seed}): {JOBS} jobs, all succeeded once in {wall:.0f} s; "
        f"faults injected: {dict(chaos.injected)} + a hanging ffmpeg on one node "
        f"({stalls}); {attempts} attempts "
        f"({attempts - JOBS} retries); {sum(len(s) for s in seen.values())} SSE events to "
        f"{len(seen)} clients"
    )
    api.close()
