"""GET /metrics: the cluster in Prometheus' text format, built at each scrape from one
coordinator call (job counters and histograms, the queue, running encodes, and the
node view with each node agent's GPU readings).

GPU series carry ``UUID`` (the label name NVIDIA's dcgm-exporter uses, so dashboards
can join the two), ``gpu`` (index), ``model`` and ``node``. Fields a GPU cannot report
(a declared GPU has no live readings) have no series rather than a made-up value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from api.gateway.auth import OPERATOR, require_token
from cluster import (
    CATALOG,
    COUNTER_HELP,
    EncodeRate,
    JobCounter,
    JobMetrics,
    MetricsSnapshot,
    NodeRecord,
)

MIB = 1024 * 1024
P = "framefleet_"
OUTCOMES = ("succeeded", "failed", "cancelled")
log = logging.getLogger("framefleet.api.metrics")


class ClusterCollector(Collector):
    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            P + "coordinator_up", "1 when this scrape reached the coordinator, else 0."
        )
        try:
            snap = self._snapshot()
        except Exception as exc:  # the coordinator is away: say so, and nothing else
            log.warning("metrics: the coordinator did not answer: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from _job_metrics(snap.jobs)
        yield from _queue_metrics(snap)
        yield from _tenant_metrics(snap)
        nodes = snap.nodes
        names = _node_names(nodes)
        yield from _node_metrics(nodes, names)
        yield from _gpu_metrics(nodes, names)


def _tenant_metrics(snap: MetricsSnapshot) -> Iterator[Metric]:
    """Per tenant: queue, running encodes, oldest wait, share and usage, resources held."""
    gauges = (
        ("tenant_queued_jobs", "Jobs of the tenant waiting.", "queued"),
        ("tenant_running_jobs", "Encodes of the tenant's jobs running.", "running"),
        ("tenant_oldest_queued_seconds",
         "How long the tenant's oldest queued job has waited (0: none queued).",
         "oldest_queued_s"),
        ("tenant_weight_share",
         "The tenant's fair share: its weight over the sum of the tenants' weights (0-1).",
         "weight_share"),
        ("tenant_usage_share",
         "The dominant share (GPUs or cores) of the farm the tenant's encodes hold (0-1).",
         "usage_share"),
        ("tenant_backlog_seconds",
         "The predicted run time of the tenant's queued jobs, summed (learned speeds).",
         "backlog_s"),
        ("tenant_drain_seconds",
         "How long until the tenant's last queued job is predicted to finish.", "drain_s"),
    )  # fmt: skip
    for name, doc, attr in gauges:
        family = GaugeMetricFamily(P + name, doc, labels=["tenant"])
        for t in snap.tenants:
            family.add_metric([t.name], float(getattr(t, attr)))
        yield family
    for name, doc, attr in (
        ("tenant_gpu_seconds", "GPU-seconds the tenant's encodes held.", "gpu_seconds"),
        ("tenant_core_seconds", "Core-seconds the tenant's encodes held.", "core_seconds"),
    ):
        counter = CounterMetricFamily(P + name, doc, labels=["tenant"])
        for t in snap.tenants:
            counter.add_metric([t.name], float(getattr(t, attr)))
        yield counter
    finished = CounterMetricFamily(
        P + "tenant_jobs_finished", "The tenant's jobs that ended, by outcome.",
        labels=["tenant", "outcome"],
    )  # fmt: skip
    counts = snap.jobs.tenant_finished
    for t in snap.tenants:
        for outcome in OUTCOMES:
            finished.add_metric([t.name, outcome], counts.get((t.name, outcome), 0))
    yield finished
    yield GaugeMetricFamily(
        P + "queue_drain_seconds",
        "How long until the last queued job is predicted to finish (learned speeds).",
        value=max((t.drain_s for t in snap.tenants), default=0.0),
    )


def _job_metrics(jobs: JobMetrics) -> Iterator[Metric]:
    submitted = CounterMetricFamily(
        P + "jobs_submitted", "Jobs submitted.", labels=["kind", "codec"]
    )
    for (kind, codec), n in jobs.submitted.items():
        submitted.add_metric([kind, codec], n)
    yield submitted
    finished = CounterMetricFamily(
        P + "jobs_finished",
        "Jobs that ended, by outcome (succeeded, failed, cancelled).",
        labels=["kind", "codec", "encoder", "outcome"],
    )
    for (kind, codec, encoder, outcome), n in jobs.finished.items():
        finished.add_metric([kind, codec, encoder, outcome], n)
    yield finished
    for counter in JobCounter:
        yield CounterMetricFamily(P + counter, COUNTER_HELP[counter], value=jobs[counter])
    frames = CounterMetricFamily(P + "frames_encoded", "Frames written.", labels=["encoder"])
    for encoder, n in sorted(jobs.frames.items()):
        frames.add_metric([encoder], n)
    yield frames
    written = CounterMetricFamily(P + "output_bytes", "Bytes of finished outputs.", labels=["kind"])
    for kind, n in sorted(jobs.bytes_written.items()):
        written.add_metric([kind], n)
    yield written
    for histograms, name, doc in (
        (jobs.queue_wait, "queue_wait_seconds", "Time from queued to running."),
        (jobs.duration, "job_duration_seconds", "Time from running to the end."),
    ):
        hist = HistogramMetricFamily(P + name, doc, labels=["kind"])
        for kind, h in sorted(histograms.items()):
            bounds = [str(b) for b in h.buckets] + ["+Inf"]
            hist.add_metric([kind], list(zip(bounds, h.cumulative(), strict=True)), h.total)
        yield hist


def _queue_metrics(snap: MetricsSnapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        P + "webhooks_pending",
        "Job endings waiting in the webhook outbox.",
        value=snap.webhooks_pending,
    )
    depth = GaugeMetricFamily(P + "queue_depth", "Jobs waiting, by priority.", labels=["priority"])
    queue = {0: 0} | snap.queue
    for priority, n in sorted(queue.items()):
        depth.add_metric([str(priority)], n)
    yield depth
    fps = GaugeMetricFamily(
        P + "encode_fps", "Frames per second of running encodes.", labels=["encoder"]
    )
    speed = GaugeMetricFamily(
        P + "encode_speed_ratio",
        "Mean speed of running encodes (1 = real time).",
        labels=["encoder"],
    )
    by_encoder: dict[str, list[EncodeRate]] = {e.name: [] for e in CATALOG}
    for e in snap.encodes:
        by_encoder.setdefault(e.encoder, []).append(e)
    for name, runs in sorted(by_encoder.items()):
        fps.add_metric([name], sum(r.fps for r in runs))
        speed.add_metric([name], sum(r.speed for r in runs) / len(runs) if runs else 0.0)
    yield fps
    yield speed
    running = GaugeMetricFamily(P + "jobs_running", "Jobs running now.")
    running.add_metric([], len(snap.encodes))
    yield running


def _node_names(nodes: tuple[NodeRecord, ...]) -> dict[str, str]:
    hosts = [n.hostname or n.address for n in nodes]
    return {
        n.node_id: host if hosts.count(host) == 1 else f"{host}-{n.node_id[:8]}"
        for n, host in zip(nodes, hosts, strict=True)
    }


def _node_metrics(nodes: tuple[NodeRecord, ...], names: dict[str, str]) -> Iterator[Metric]:
    cpus = GaugeMetricFamily(P + "node_cpus", "Cores a node offers.", labels=["node"])
    used = GaugeMetricFamily(
        P + "node_cpus_allocated", "Cores given to running jobs.", labels=["node"]
    )
    running = GaugeMetricFamily(P + "node_running_jobs", "Jobs running on a node.", labels=["node"])
    agent = GaugeMetricFamily(
        P + "node_agent_up", "1 while the node's agent reports, else 0.", labels=["node"]
    )
    state = GaugeMetricFamily(
        P + "node_state",
        "1 for the state a node is in (ready, draining, drained, quarantined, trial).",
        labels=["node", "state"],
    )
    for n in nodes:
        label = [names[n.node_id]]
        cpus.add_metric(label, n.cpus)
        used.add_metric(label, n.cpus_used)
        running.add_metric(label, len(n.running_jobs))
        agent.add_metric(label, 1.0 if n.agent_error is None and n.ready else 0.0)
        for name in NODE_STATES:
            state.add_metric([*label, name], 1.0 if n.state == name else 0.0)
    yield from (cpus, used, running, agent, state)


NODE_STATES = ("ready", "draining", "drained", "quarantined", "trial")


GPU_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    # (reading key, metric name, help, scale)
    ("utilization_gpu", "gpu_utilization_ratio", "GPU utilization (0-1).", 0.01),
    ("utilization_encoder", "gpu_encoder_utilization_ratio", "NVENC utilization (0-1).", 0.01),
    ("utilization_decoder", "gpu_decoder_utilization_ratio", "NVDEC utilization (0-1).", 0.01),
    ("memory_used_mb", "gpu_memory_used_bytes", "GPU memory used.", MIB),
    ("memory_free_mb", "gpu_memory_free_bytes", "GPU memory free.", MIB),
    ("memory_total_mb", "gpu_memory_total_bytes", "GPU memory.", MIB),
    ("encoder_fps", "gpu_encoder_fps", "NVENC frames per second (all processes).", 1.0),
)


def _gpu_metrics(nodes: tuple[NodeRecord, ...], names: dict[str, str]) -> Iterator[Metric]:
    labels = ["UUID", "gpu", "model", "node"]
    families = {
        key: GaugeMetricFamily(P + name, doc, labels=labels) for key, name, doc, _ in GPU_GAUGES
    }
    sessions = GaugeMetricFamily(
        P + "gpu_encoder_sessions",
        "NVENC sessions open (all processes where NVML reports them, else framefleet's).",
        labels=labels,
    )
    reserved = GaugeMetricFamily(
        P + "gpu_memory_reserved_bytes",
        "GPU memory framefleet's jobs are accounted.",
        labels=labels,
    )
    quarantined = GaugeMetricFamily(
        P + "gpu_quarantined",
        "1 while a GPU is quarantined (no new work) or on trial, else 0.",
        labels=labels,
    )
    for n in nodes:
        for g in n.gpus:
            r = g.reading
            label = [r.uuid, str(r.index), r.name, names[n.node_id]]
            out = (g.quarantine or {}).get("state") in ("quarantined", "trial")
            quarantined.add_metric(label, 1.0 if out else 0.0)
            for key, _, _, scale in GPU_GAUGES:
                value = getattr(r, key)
                if value is not None:
                    families[key].add_metric(label, value * scale)
            live = r.encoder_sessions
            sessions.add_metric(label, live if live is not None else g.sessions)
            reserved.add_metric(label, g.memory_reserved_mb * MIB)
    yield from families.values()
    yield sessions
    yield reserved
    yield quarantined


def metrics_router(public: bool) -> APIRouter:
    """``/metrics``, open (Prometheus scrapes it) unless ``public`` is false."""
    # Not public: operators and admins only (it names every tenant and its queue).
    secured = [Depends(require_token), OPERATOR]
    router = APIRouter(tags=["metrics"], dependencies=[] if public else secured)

    @router.get("/metrics", response_class=Response)
    def metrics(request: Request) -> Response:
        registry: CollectorRegistry = request.app.state.metrics
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def registry_for(snapshot: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(snapshot))
    return registry
