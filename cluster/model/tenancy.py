"""Who shares the farm: tenants (their weights, limits and media roots) and the caller of
each call, as the gateway tells the engine.

A job belongs to the tenant that submitted it, and so do its tasks. A caller sees its own
tenant's jobs only, unless its role reaches every tenant (an operator or an admin): any
other job is, to it, a job that does not exist. Jobs stored before tenants existed
belong to :data:`DEFAULT_TENANT`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.model.plain import as_dict

DEFAULT_TENANT = "default"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
"""A tenant's (and a token's) name: lowercase letters, digits, ``.``, ``_``, ``-``."""


def check_name(name: str, what: str = "tenant") -> str:
    """``name`` if it is a valid tenant or token name, else a ValueError saying why."""
    if not NAME.match(name):
        raise ValueError(
            f"{what} name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a call: a token's name, its tenant, and whether its role reaches every
    tenant's jobs. ``owner`` is a digest of its token (per-token bounds count by it)."""

    name: str
    tenant: str = DEFAULT_TENANT
    every_tenant: bool = False
    owner: str | None = None

    def sees(self, tenant: str | None) -> bool:
        """Whether a job of ``tenant`` exists for this caller."""
        return self.every_tenant or (tenant or DEFAULT_TENANT) == self.tenant

    def __str__(self) -> str:
        return f"{self.name} ({self.tenant})"


@dataclass(frozen=True, slots=True)
class Tenant:
    """One tenant's share of the farm and its bounds (``None``: no bound of its own)."""

    name: str
    weight: float = 1.0
    """Its share of the farm's GPUs and cores while several tenants wait, relative to
    the others' weights."""
    max_gpus: int | None = None
    max_cores: float | None = None
    max_running: int | None = None
    max_queued: int | None = None
    media_roots: tuple[str, ...] = ()
    """Folders and ``s3://`` roots its jobs' paths must lie in (inside the farm's own
    media roots); empty: the farm's roots."""

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.media_roots, tuple) or not all(
            isinstance(r, str) and r for r in self.media_roots
        ):
            raise ValueError(f"tenant {self.name}: media_roots must be a list of folders or "
                             's3:// roots, e.g. ["/srv/media/team-a"]')  # fmt: skip
        if not isinstance(self.weight, int | float) or not self.weight > 0:
            raise ValueError(f"tenant {self.name}: weight must be above 0 (got {self.weight})")
        for key in ("max_gpus", "max_cores", "max_running", "max_queued"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"tenant {self.name}: {key} cannot be negative")

    def to_dict(self) -> dict[str, Any]:
        data = as_dict(self)
        data["media_roots"] = list(self.media_roots)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tenant:
        fields = dict(data)
        roots = fields.get("media_roots") or ()
        fields["media_roots"] = tuple(roots) if isinstance(roots, list | tuple) else roots
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Tenants:
    """Every tenant the farm knows; one not listed has weight 1 and no bounds."""

    known: tuple[Tenant, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [t.name for t in self.known]
        if len(set(names)) != len(names):
            raise ValueError("a tenant is listed twice")

    def get(self, name: str | None) -> Tenant:
        name = name or DEFAULT_TENANT
        for tenant in self.known:
            if tenant.name == name:
                return tenant
        return Tenant(name)

    def names(self, also: Iterable[str | None] = ()) -> list[str]:
        """The known tenants' names, and any of ``also``'s, sorted."""
        return sorted({t.name for t in self.known} | {n or DEFAULT_TENANT for n in also})

    def weight_share(self, name: str | None, busy: Iterable[str | None] = ()) -> float:
        """``name``'s share of the farm among the tenants with work (``busy``: waiting or
        running; ``name`` counts as one): its weight over the sum of theirs. A tenant
        with nothing to do holds no share; with no work given, every known tenant's."""
        busy = list(busy)
        names = {n or DEFAULT_TENANT for n in (*busy, name)} if busy else set(self.names([name]))
        total = sum(self.get(n).weight for n in names)
        return self.get(name).weight / total if total else 1.0

    def to_list(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.known]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]]) -> Tenants:
        return cls(tuple(Tenant.from_dict(item) for item in items))


def tenant_of(job_tenant: str | None) -> str:
    """A job's tenant, :data:`DEFAULT_TENANT` for jobs stored before tenants existed."""
    return job_tenant or DEFAULT_TENANT
