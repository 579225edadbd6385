"""Admitting jobs, all or none: every spec confined (paths inside the media roots, URLs
inside the object roots, callbacks on allowed hosts), then checked against what the
nodes report and, for outputs in object storage, against what the store already holds
(a HEAD each, a few at a time, in threads). Also lists a batch's inputs under an
``s3://`` prefix, confined the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cluster.config import CoordinatorConfig
from cluster.errors import ConfigError, FramefleetError, OutputError
from cluster.media.confine import check_destination, confine
from cluster.media.encoders import Encoder
from cluster.media.manifests import MASTER, MPD
from cluster.media.paths import OVERWRITE_HINT
from cluster.model.jobs import JobKind, JobSpec
from cluster.model.tenancy import Tenant
from cluster.scheduling.admission import (
    check_callback,
    check_metrics,
    check_spec,
    numbered,
    refuse_shared_outputs,
)
from cluster.storage import objects
from cluster.storage.urls import (
    ObjectURL,
    confine_object,
    is_object_url,
    parse_object_roots,
    parse_object_url,
)
from cluster.watch import VIDEO_EXTENSIONS

HEADS_AT_ONCE = 16


def tenant_confines(config: CoordinatorConfig, tenant: Tenant) -> CoordinatorConfig:
    """``config`` with ``tenant``'s media roots in place of the farm's (each must lie in
    one of the farm's); the farm's when the tenant has none of its own."""
    if not tenant.media_roots:
        return config
    folders, objects_at = [], []
    farm_buckets = parse_object_roots(config.object_roots)
    for raw in tenant.media_roots:
        if is_object_url(raw):
            try:
                confine_object(raw, farm_buckets, what="tenant root", prefix=True)
            except FramefleetError as exc:
                raise ConfigError(f"tenant {tenant.name}: {exc}") from None
            objects_at.append(raw)
            continue
        folder = Path(raw).resolve()
        if config.media_roots and not any(folder.is_relative_to(r) for r in config.media_roots):
            raise ConfigError(
                f"tenant {tenant.name}: media root {raw} is outside the farm's media roots "
                f"({', '.join(map(str, config.media_roots))}); pick a folder inside them"
            )
        folders.append(folder)
    return replace(config, media_roots=tuple(folders), object_roots=tuple(objects_at))


def confine_all(specs: list[JobSpec], config: CoordinatorConfig, *, batch: bool) -> list[JobSpec]:
    """Each spec's callback on an allowed host, and its media confined
    (:func:`~cluster.media.confine.confine`); the first refusal names its job."""
    roots, hooks = config.media_roots, config.webhook_hosts
    buckets = parse_object_roots(config.object_roots)

    def confined(spec: JobSpec) -> JobSpec:
        check_callback(spec.callback_url, hooks)
        return confine(spec, roots, buckets)

    return [numbered(i, specs, batch, confined, spec) for i, spec in enumerate(specs)]


async def check_all(
    confined: list[JobSpec],
    encoders: tuple[Encoder, ...] | None,
    config: CoordinatorConfig,
    *,
    batch: bool,
    where: Callable[[str], str | None] = lambda path: path,
    metrics: frozenset[str] | None = None,
) -> None:
    """Everything knowable before the inputs are probed; the first refusal is raised.
    ``where``: where this machine sees a local path (``None``: it does not); ``metrics``:
    what some node's quality ffmpeg computes (``None``: not known yet)."""
    for i, spec in enumerate(confined):
        numbered(i, confined, batch, check_spec, spec, encoders)
        numbered(i, confined, batch, check_metrics, spec, metrics)
        numbered(i, confined, batch, check_destination, spec, where)
    if batch:
        refuse_shared_outputs(confined)
    targets = [
        (i, url)
        for i, spec in enumerate(confined)
        if spec.output is not None and is_object_url(spec.output) and not spec.overwrite
        for url in _published(spec)
    ]
    slots = asyncio.Semaphore(HEADS_AT_ONCE)

    async def exists(url: ObjectURL) -> bool:
        async with slots:
            return await asyncio.to_thread(objects.head, config.store, url) is not None

    found = await asyncio.gather(*(exists(url) for _, url in targets))
    for (i, url), there in zip(targets, found, strict=True):
        if there:
            numbered(i, confined, batch, _refuse, url)


def _published(spec: JobSpec) -> list[ObjectURL]:
    """What must not exist yet for ``spec`` (a transcode's object; a package's playlist
    and MPD under its prefix)."""
    if spec.output is None:
        return []
    if spec.kind is JobKind.TRANSCODE:
        return [parse_object_url(spec.output, what="output")]
    if spec.kind is JobKind.PACKAGE:
        prefix = parse_object_url(spec.output, what="output", prefix=True)
        return [prefix.child(MASTER), prefix.child(MPD)]
    return []


def _refuse(url: ObjectURL) -> None:
    raise OutputError(f"{url} already exists; {OVERWRITE_HINT}")


async def list_inputs(prefix: str, config: CoordinatorConfig, limit: int) -> list[str]:
    """The video objects under ``prefix`` (an ``s3://`` URL inside the object roots), in
    key order, at most ``limit``."""
    buckets = parse_object_roots(config.object_roots)
    url = confine_object(prefix, buckets, what="input prefix", prefix=True)
    suffixes = tuple(f".{ext}" for ext in VIDEO_EXTENSIONS)
    found = await asyncio.to_thread(objects.list_objects, config.store, url, suffixes, limit)
    return [str(u) for u in found]
