"""When will it be done: the queue played forward on a copy of the planner.

:func:`forecast` takes the farm as the planner sees it, what runs (with when each is
predicted to end) and the queue in the order it will be offered, and replays the
dispatcher: each job that fits starts, the earliest predicted end frees its room, the
queue is offered again, and so on. Durations come from the learned speeds (a job's
media seconds over its predicted speed on the node it lands on), so a job that lands on
a GPU and one that lands on a 64-core box get their own times.

It is list scheduling with the dispatcher's own placement, so the forecast is as good
as the speeds: the bench (``bench/eta.py``) measures how good, after a warm-up. The
first :data:`HORIZON` queued jobs are played; the rest are given the average rate at
which the played ones finished (a farm's throughput), so a queue of 100,000 jobs is
answered in milliseconds, more roughly past the horizon.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cluster.scheduling.planner import Demand, Placement, Planner

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


class Placer(Protocol[K_contra]):
    """How the dispatcher places a job (placement by finish time), replayed."""

    def moved(self, clock: float, running: list[tuple[str, float]]) -> None:
        """The replay's clock, and what runs then: each node's encodes' predicted ends."""

    def place(self, planner: Planner, key: K_contra, demand: Demand) -> Placement | None: ...

    def released(self, placement: Placement) -> None:
        """Room the replay gave back."""


HORIZON = 2000
"""Queued jobs played one by one; the rest are extrapolated."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """A queued job's predicted start and finish (seconds since the epoch), and where it
    is predicted to run."""

    start_at: float
    finish_at: float
    node_id: str | None = None


def forecast(
    planner: Planner,
    running: Sequence[tuple[Placement, float]],
    queue: Sequence[tuple[K, Demand]],
    seconds: Callable[[K, Placement], float],
    now: float,
    *,
    horizon: int = HORIZON,
    place: Placer[K] | None = None,
) -> dict[K, Forecast]:
    """Each of ``queue``'s predicted start and finish. ``planner``: the farm now (it is
    changed: pass one built for this); ``running``: each running encode's placement and
    predicted end; ``seconds``: how long a job takes where it was placed. A job that
    could never be placed on this farm gets no forecast. ``place``: how the dispatcher
    places a job (default: best fit), told the clock and what runs as they change."""
    steps = forecast_steps(planner, running, queue, seconds, now, horizon=horizon, place=place)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


STEP = 200
"""Jobs offered (or encodes queued to end) between two of :func:`forecast_steps`' pauses."""


def forecast_steps(
    planner: Planner,
    running: Sequence[tuple[Placement, float]],
    queue: Sequence[tuple[K, Demand]],
    seconds: Callable[[K, Placement], float],
    now: float,
    *,
    horizon: int = HORIZON,
    place: Placer[K] | None = None,
) -> Generator[None, None, dict[K, Forecast]]:
    """:func:`forecast` in steps: it pauses (yields) every :data:`STEP` jobs offered or
    encodes queued, so that a caller on an event loop can let other work run between
    steps; what it returns is the forecast."""
    ends: list[tuple[float, int, Placement]] = []
    tie = 0
    for placement, end_at in running:
        heapq.heappush(ends, (max(end_at, now), tie, placement))
        tie += 1
        if tie % STEP == 0:
            yield
    waiting = list(queue[:horizon])
    found: dict[K, Forecast] = {}
    clock = now
    offered = 0
    while waiting:
        if place is not None:
            place.moved(clock, [(p.node_id, end) for end, _, p in ends])
            offered += len(ends) // 10
        left = []
        for i, (key, demand) in enumerate(waiting):
            offered += 1
            if offered >= STEP:
                offered = 0
                yield
            if planner.exhausted():
                left.extend(waiting[i:])
                break
            placed = place.place(planner, key, demand) if place else planner.place(demand)
            if placed is None:
                left.append((key, demand))
                continue
            finish = clock + max(seconds(key, placed), 0.0)
            found[key] = Forecast(clock, finish, placed.node_id)
            heapq.heappush(ends, (finish, tie, placed))
            tie += 1
        waiting = left
        if not waiting:
            break
        if not ends:  # nothing runs and nothing fits: these never will (here)
            break
        clock, _, freed = heapq.heappop(ends)
        freeing = [freed]
        while ends and ends[0][0] <= clock:
            freeing.append(heapq.heappop(ends)[2])
        for room in freeing:
            planner.release(room)
            if place is not None:
                place.released(room)
    rest = queue[horizon:]
    if rest and found:
        _extrapolate(found, rest, now)
    return found


def _extrapolate(found: dict[K, Forecast], rest: Sequence[tuple[K, Demand]], now: float) -> None:
    """Past the horizon: the played jobs' finishing rate, kept up."""
    last = max(f.finish_at for f in found.values())
    mean = sum(f.finish_at - f.start_at for f in found.values()) / len(found)
    rate = len(found) / max(last - now, 1e-6)  # jobs finished per second
    for i, (key, _) in enumerate(rest, start=1):
        start = last + (i - 1) / rate
        found[key] = Forecast(start, start + mean)
