"""The kinds of multi-task jobs: each a pure expansion into a small DAG of tasks, a
finishing summary and a view (:class:`~cluster.control.rules.graph.GraphKind`). The
graph engine (:mod:`cluster.control.graphrun`) runs any of them; the coordinator never
learns what a chunk or a stitch is.

A new kind is a module here and a line in :data:`KINDS` (the first kind whose
``plan`` claims a job plans it).
"""

from __future__ import annotations

from cluster.control.graphs.package import PackageKind
from cluster.control.graphs.quality import QualityKind
from cluster.control.graphs.search import SearchKind
from cluster.control.graphs.split import SplitKind
from cluster.control.rules.graph import GraphKind

KINDS: tuple[GraphKind, ...] = (SearchKind(), SplitKind(), PackageKind(), QualityKind())
