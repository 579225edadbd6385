"""The house rules, checked: the engine's public surface, which room may import which,
only ``cluster.ray_edge`` imports ray, and importing the engine does not start Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cluster

ROOT = Path(__file__).resolve().parents[2]
LAYERS = (
    ("cluster.errors",),
    ("cluster.model",),
    ("cluster.storage",),
    ("cluster.media",),
    ("cluster.scheduling",),
    ("cluster.config", "cluster.watch"),
    ("cluster.nodes",),
    ("cluster.control.rules",),
    ("cluster.control.records",),
    ("cluster.control.farm",),
    ("cluster.control.running",),
    ("cluster.control.graphs",),
    ("cluster.control",),
    ("cluster.ray_edge",),
)
"""Bottom to top: a module may import its own layer and those below, never above."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(folder: Path) -> list[tuple[str, str]]:
    """(importing module, imported module) for every import, function-level ones too."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        me = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(me, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((me, node.module))
    return found


def layer(module: str) -> int | None:
    for n, rooms in enumerate(LAYERS):
        if any(module == room or module.startswith(room + ".") for room in rooms):
            return n
    return None


def test_all_names_exist_and_are_sorted() -> None:
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert cluster.__all__ == sorted(cluster.__all__, key=kind)
    for name in cluster.__all__:
        assert hasattr(cluster, name), name


def test_every_module_of_the_engine_is_in_a_room() -> None:
    loose = [m for m, _ in imports(ROOT / "cluster") if m != "cluster" and layer(m) is None]
    assert loose == []


def test_rooms_import_only_their_own_layer_and_those_below() -> None:
    bad = []
    for me, other in imports(ROOT / "cluster"):
        mine, theirs = layer(me), layer(other)
        if me != "cluster" and mine is not None and theirs is not None and theirs > mine:
            bad.append(f"{me} imports {other}")
    assert bad == []


def test_only_ray_edge_imports_ray() -> None:
    bad = [
        f"{me} imports {other}"
        for folder in ("cluster", "api")
        for me, other in imports(ROOT / folder)
        if (other == "ray" or other.startswith("ray.")) and not me.startswith("cluster.ray_edge")
    ]
    assert bad == []


def test_cluster_never_imports_api() -> None:
    bad = [f"{me}: {other}" for me, other in imports(ROOT / "cluster")
           if other == "api" or other.startswith("api.")]  # fmt: skip
    assert bad == []


def test_api_uses_only_the_public_names_of_cluster() -> None:
    bad = [f"{me}: {other}" for me, other in imports(ROOT / "api") if other.startswith("cluster.")]
    assert bad == []


def test_importing_the_engine_and_the_cli_does_not_import_ray() -> None:
    rooms = ", ".join(
        module_name(p)
        for room in ("model", "media", "scheduling", "nodes", "control")
        for p in sorted((ROOT / "cluster" / room).rglob("*.py"))
    )
    code = (
        f"import sys, cluster, api.cli, api.gateway.app, {rooms}; "
        "from cluster import JobSpec, ErrorCode, CostModel, check_spec; "
        "sys.exit('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "ray was imported"


def test_the_lazy_public_names_match_what_type_checkers_see() -> None:
    """``cluster/__init__.py`` lists each public name twice: in the ``TYPE_CHECKING``
    imports (for mypy) and in ``_WHERE`` (loaded on first use); they must agree."""
    tree = ast.parse((ROOT / "cluster" / "__init__.py").read_text())
    typed = {
        alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == cluster._WHERE
    assert sorted(typed) == sorted(cluster.__all__)


IMPURE = ("asyncio", "time", "os", "sqlite3", "subprocess", "socket", "threading", "shutil",
          "pathlib", "httpx", "boto3", "cluster.storage.objects", "cluster.media.probe",
          "cluster.media.runner")  # fmt: skip
"""What a pure room may not import: no clock, no loop, no files, no processes, no network."""


@pytest.mark.parametrize("room", ["rules", "graphs"])
def test_the_rules_of_the_head_and_the_kinds_of_job_graphs_are_pure(room: str) -> None:
    """``cluster/control/rules/`` and ``graphs/`` decide and never act: the clock is
    passed in."""
    bad = [
        f"{me} imports {other}"
        for me, other in imports(ROOT / "cluster" / "control" / room)
        if any(other == m or other.startswith(m + ".") for m in IMPURE)
    ]
    assert bad == []
