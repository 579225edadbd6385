"""``framefleet node drain|undrain|release``: an operator's hands on a running farm,
through its gateway (``--api``, ``--token`` as for ``framefleet status``).

``drain`` lets a node's running jobs finish and places nothing new there (for
maintenance or a scale-down; it stays drained across restarts); ``undrain`` reverses
it. ``release`` lifts the quarantine framefleet put a failing node or GPU in.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any
from urllib.parse import quote

import typer

from api.cli.jobs import DEFAULT_API, Api, AsJson, GatewayClient, Token, out
from api.cli.options import DataDir

Node = Annotated[str, typer.Argument(help="The node: its id (or 6+ first characters), "
                                     "address or hostname.")]  # fmt: skip


def _show(node: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(node))
        return
    running = len(node["running_jobs"])
    jobs = f"; {running} job{'s' if running != 1 else ''} still running" if running else ""
    out.print(f"{node['node_id'][:12]} ({node['address']}): {node['state']}{jobs}")


def register(node_app: typer.Typer) -> None:
    @node_app.command()
    def drain(
        node: Node,
        wait: Annotated[
            bool, typer.Option("--wait", help="Return once its running jobs have finished.")
        ] = False,
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
        as_json: AsJson = False,
    ) -> None:
        """Drain a node: running jobs finish, nothing new is placed there."""
        client = GatewayClient(api, token, data_dir)
        found = client.call("POST", f"/v1/nodes/{quote(node, safe='')}/drain")
        while wait and found["state"] == "draining":
            time.sleep(1.0)
            nodes = client.call("GET", "/v1/nodes")
            fresh = next((n for n in nodes if n["node_id"] == found["node_id"]), None)
            if fresh is None:
                out.print(f"{found['node_id'][:12]} ({found['address']}): left the cluster")
                return
            found = fresh
        _show(found, as_json)

    @node_app.command()
    def undrain(
        node: Node,
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
        as_json: AsJson = False,
    ) -> None:
        """Put a drained node back in service."""
        client = GatewayClient(api, token, data_dir)
        _show(client.call("DELETE", f"/v1/nodes/{quote(node, safe='')}/drain"), as_json)

    @node_app.command()
    def release(
        target: Annotated[
            str, typer.Argument(help="A node (id, address, hostname) or a GPU (its UUID).")
        ],
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
    ) -> None:
        """Lift the quarantine of a node or GPU (it takes work again at once)."""
        client = GatewayClient(api, token, data_dir)
        out.print(client.call("POST", f"/v1/nodes/{quote(target, safe='')}/release")["released"])
