"""Farms without a shared mount, on a fake backend: which node a job goes to, how its
input is probed, and what its work order says, from what the nodes' agents report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cluster import CoordinatorConfig, CostModel, Job, JobKind, JobSpec
from cluster.control.coordinator import Coordinator
from cluster.control.fakes import Behaviour, FakeBackend, fake_node, fake_probe
from cluster.media.work import WorkOrder
from cluster.nodes.agent import NodeInfo
from cluster.storage.roots import Sight
from cluster.storage.scratch import human
from tests.helpers import until_true
from tests.unit.control.test_coordinator import in_status

T = TypeVar("T")
TERMINAL = {"succeeded", "failed", "cancelled"}
ROOT_ID = "4f1d"


def seen(root: Path, at: Path | None = None) -> tuple[Sight, ...]:
    return (Sight(str(root), str(at or root), True),)


def unseen(root: Path) -> tuple[Sight, ...]:
    return (Sight(str(root), str(root), False, f"no .framefleet-root in {root}; mount it"),)


def one_of_each(root: Path, *, blind_cpus: float = 1, seer_cpus: float = 1) -> list[NodeInfo]:
    """A head that sees the root (no CPUs: it serves), a worker that does not, one that does."""
    return [
        fake_node("head", cpus=0, head=True, media=seen(root)),
        fake_node("blind", cpus=blind_cpus, media=unseen(root)),
        fake_node("seer", cpus=seer_cpus, media=seen(root)),
    ]


def run(
    tmp_path: Path,
    nodes: list[NodeInfo],
    test: Callable[[Coordinator, FakeBackend, Path], Awaitable[T]],
    **config: Any,
) -> T:
    root = tmp_path / "media"
    root.mkdir(exist_ok=True)
    (root / "in.mp4").write_bytes(b"fake")

    async def main() -> T:
        backend = FakeBackend(nodes, lambda order: Behaviour.SUCCEED)
        cfg = CoordinatorConfig(
            data_dir=tmp_path / "data",
            media_roots=(root,),
            root_ids=((str(root), ROOT_ID),),
            node_refresh_s=0.02,
            retry_backoff_s=0.01,
            **config,
        )
        coordinator = Coordinator(cfg, backend, probe=fake_probe)
        coordinator.start()
        try:
            return await test(coordinator, backend, root)
        finally:
            await coordinator.shutdown()

    return asyncio.run(main())


async def until(coordinator: Coordinator, job_id: str, status: set[str]) -> Job:
    table = coordinator.table
    return await until_true(lambda: in_status(table.get(job_id), status))


async def finished(coordinator: Coordinator, job_id: str) -> Job:
    return await until(coordinator, job_id, TERMINAL)


async def settled(coordinator: Coordinator, job_id: str) -> Job:
    """The job once probed, after one more dispatch round (what could start has)."""
    await until_true(lambda: coordinator.table.get(job_id).input_media is not None)
    coordinator.dispatch_now()
    return await coordinator.get(job_id)


def spec(root: Path, output: str = "out.mp4") -> JobSpec:
    return JobSpec(kind=JobKind.TRANSCODE, input=str(root / "in.mp4"), output=str(root / output))


def order_of(backend: FakeBackend, job_id: str) -> WorkOrder:
    return next(o for e in backend.encoders for o in e.orders if o.job_id == job_id)


def test_a_job_goes_to_a_node_that_sees_its_media(tmp_path: Path) -> None:
    root = tmp_path / "media"
    nodes = one_of_each(root, blind_cpus=8, seer_cpus=2)

    async def test(c: Coordinator, backend: FakeBackend, root: Path) -> None:
        job = await finished(c, (await c.submit(spec(root))).id)
        assert job.status == "succeeded", job.reason
        assert job.placement.node_id == "seer"  # not the roomier node that cannot see it
        order = order_of(backend, job.id)
        assert order.stage is None and order.spec.input == str(root / "in.mp4")
        assert backend.probed_on == []  # the head sees the root: probed there

    run(tmp_path, nodes, test)


def test_when_the_seeing_nodes_are_full_a_blind_node_fetches_the_media(tmp_path: Path) -> None:
    root = tmp_path / "media"
    nodes = one_of_each(root)

    async def test(c: Coordinator, backend: FakeBackend, root: Path) -> None:
        backend.script = lambda order: Behaviour.HANG if order.stage is None else Behaviour.SUCCEED
        first = await c.submit(spec(root, "a.mp4"))
        second = await c.submit(spec(root, "b.mp4"))
        job = await finished(c, second.id)
        assert job.status == "succeeded", job.reason
        assert job.placement.node_id == "blind"
        head = nodes[0].address
        why = f"input read over the network from {head}: {human(1e6)}, output sent back there"
        assert why in (job.placement.reason or "")
        order = order_of(backend, job.id)
        assert order.stage is not None and order.stage.peer == "head"  # no CPUs: it serves
        assert order.stage.fetch == ((str(root / "in.mp4"), order.spec.input),)
        assert order.stage.push == ((str(root / "b.mp4"), order.spec.output),)
        assert order.spec.input.startswith(order.stage.folder)
        assert (await c.get(first.id)).placement.node_id == "seer"
        await c.cancel(first.id)

    run(tmp_path, nodes, test)


def test_a_blind_node_waits_when_moving_costs_more_than_encoding(tmp_path: Path) -> None:
    root = tmp_path / "media"
    nodes = one_of_each(root)

    async def test(c: Coordinator, backend: FakeBackend, root: Path) -> None:
        backend.script = lambda order: Behaviour.HANG
        first = await c.submit(spec(root, "a.mp4"))
        second = await c.submit(spec(root, "b.mp4"))
        assert (await settled(c, second.id)).status == "queued"
        await c.cancel(first.id)  # the seer frees up: the second runs there
        running = await until(c, second.id, {"running"})
        assert running.placement is not None and running.placement.node_id == "seer"
        await c.cancel(second.id)

    # 10 kB/s: moving the 1 MB input and its output takes longer than encoding 10 s.
    run(tmp_path, nodes, test, costs=CostModel(network_mib_s=0.01))


def test_a_node_that_mounts_the_root_elsewhere_gets_its_own_paths(tmp_path: Path) -> None:
    root = tmp_path / "media"
    there = tmp_path / "mnt" / "nas"
    nodes = [
        fake_node("head", cpus=0, head=True, media=unseen(root)),
        fake_node("mapped", cpus=2, media=seen(root, there)),
    ]

    async def test(c: Coordinator, backend: FakeBackend, root: Path) -> None:
        job = await finished(c, (await c.submit(spec(root))).id)
        assert job.status == "succeeded", job.reason
        order = order_of(backend, job.id)
        assert order.stage is None
        assert (order.spec.input, order.spec.output) == (
            str(there / "in.mp4"),
            str(there / "out.mp4"),
        )
        assert str(there) in order.roots and order.media_map == ((str(root), str(there)),)
        assert f"media through this node's own mount ({root} at {there})" in job.placement.reason
        # The head does not see the root: the input was probed where it is seen.
        assert backend.probed_on == [("mapped", str(root / "in.mp4"))]

    run(tmp_path, nodes, test)


def test_no_node_seeing_the_root_fails_the_job_saying_why_and_what_to_do(tmp_path: Path) -> None:
    root = tmp_path / "media"
    nodes = [
        fake_node("head", cpus=0, head=True, media=unseen(root)),
        fake_node("blind", cpus=2, media=unseen(root)),
    ]

    async def test(c: Coordinator, backend: FakeBackend, root: Path) -> None:
        job = await finished(c, (await c.submit(spec(root))).id)
        assert (job.status, job.error_code) == ("failed", "input_missing")
        reason = job.reason or ""
        assert f"no node sees its media root {root}" in reason
        assert "no .framefleet-root" in reason
        assert f"framefleet node start --media-map {root}=PATH" in reason
        assert backend.encoders == []

    run(tmp_path, nodes, test)


def test_admission_checks_outputs_only_where_the_head_sees_them(tmp_path: Path) -> None:
    root = tmp_path / "media"
    nodes = [
        fake_node("head", cpus=0, head=True, media=unseen(root)),
        fake_node("mapped", cpus=2, media=seen(root, tmp_path / "elsewhere")),
    ]

    async def test(c: Coordinator, backend: FakeBackend, root: Path) -> None:
        # The folder does not exist on the head; the node that runs it judges.
        job = await c.submit(spec(root, "new/out.mp4"))
        assert job.status == "queued"
        await c.cancel(job.id)

    run(tmp_path, nodes, test)
