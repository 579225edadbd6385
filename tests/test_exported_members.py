"""The engine's public surface, and the one direction of imports (api → cluster)."""

from __future__ import annotations

import ast
from pathlib import Path

import cluster

ROOT = Path(__file__).resolve().parents[1]


def test_all_names_exist_and_are_sorted() -> None:
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert cluster.__all__ == sorted(cluster.__all__, key=kind)
    for name in cluster.__all__:
        assert hasattr(cluster, name), name


def imported_modules(folder: Path) -> list[tuple[Path, str]]:
    found = []
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.append((path, node.module))
    return found


def test_cluster_never_imports_api() -> None:
    bad = [
        f"{p.relative_to(ROOT)}: {m}"
        for p, m in imported_modules(ROOT / "cluster")
        if m == "api" or m.startswith("api.")
    ]
    assert bad == []


def test_api_uses_only_the_public_names_of_cluster() -> None:
    bad = [
        f"{p.relative_to(ROOT)}: {m}"
        for p, m in imported_modules(ROOT / "api")
        if m.startswith("cluster.")
    ]
    assert bad == []
