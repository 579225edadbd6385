"""The coordinator's API is declared once (``CoordinatorAPI``): mypy checks the coordinator
and the asyncio client against it; here, the blocking client (``Fleet``) is checked to
offer every call with the same parameters. Read from the source: no Ray imported."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from cluster.control.api import CoordinatorAPI

CLIENT = Path(__file__).resolve().parents[3] / "cluster" / "ray_edge" / "client.py"


def methods(class_name: str) -> dict[str, list[str]]:
    """Each public method of ``class_name`` in the client module: its parameters."""
    tree = ast.parse(CLIENT.read_text())
    found = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return {
        f.name: [a.arg for a in (*f.args.args[1:], *f.args.kwonlyargs)]
        for f in found.body
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and not f.name.startswith("_")
    }


def declared() -> dict[str, list[str]]:
    return {
        name: [p for p in inspect.signature(fn).parameters if p != "self"]
        for name, fn in inspect.getmembers(CoordinatorAPI, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


def test_both_clients_offer_every_declared_call_with_its_parameters() -> None:
    for client in ("Fleet", "AsyncFleet"):
        offered = methods(client)
        for name, params in declared().items():
            assert name in offered, f"{client} has no {name}()"
            # A client may add a trailing option of its own (cancel's timeout).
            assert offered[name][: len(params)] == params, (client, name, offered[name])


def test_the_clients_send_each_call_through_the_declaration_never_by_a_name() -> None:
    source = CLIENT.read_text()
    assert "getattr(self._coordinator" not in source
    assert '_read("' not in source and ".remote(spec" not in source
