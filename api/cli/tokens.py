"""``framefleet token add|list|revoke`` (the tokens file, on the gateway's machine) and
``framefleet audit`` (the audit trail, through a gateway).

The tokens file is ``--file``, else ``FRAMEFLEET_TOKENS_FILE``, else
``<data dir>/tokens.toml`` (which ``serve`` reads when FRAMEFLEET_TOKENS_FILE is unset).
``token add`` prints the new token once: the file keeps a salted hash of it only. Each
change is written to the audit trail in the data dir (``audit.sqlite3``, beside the
coordinator's records), naming the local user who made it.
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from api.access import Role, add_token, read_tokens_file, revoke_token
from api.cli.jobs import DEFAULT_API, Api, AsJson, GatewayClient, Token, err, out
from api.cli.options import DataDir
from api.paths import TOKENS_FILE_NAME
from cluster import AuditLog

token_app = typer.Typer(help="Tokens with a tenant and a role, in the tokens file.",
                        no_args_is_help=True)  # fmt: skip
TokensFile = Annotated[
    Path | None,
    typer.Option("--file", help="The tokens file [FRAMEFLEET_TOKENS_FILE, else "
                 "<data dir>/tokens.toml]."),
]  # fmt: skip


def _where(file: Path | None, data_dir: Path | None) -> tuple[Path, Path]:
    """The tokens file and the data dir (for the audit trail)."""
    from api.settings import Settings

    settings = Settings.load(data_dir=data_dir)
    path = file or settings.tokens_file or settings.data_dir / TOKENS_FILE_NAME
    return path, settings.data_dir


def _audit(data_dir: Path, action: str, name: str, tenant: str, detail: dict[str, Any]) -> None:
    log = AuditLog.of(data_dir)
    try:
        log.add(f"cli:{getpass.getuser()}", tenant, action, name, detail=detail)
    finally:
        log.close()


@token_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The token's name (who holds it).")],
    tenant: Annotated[str, typer.Option("--tenant", help="Its tenant.")] = "default",
    role: Annotated[
        str, typer.Option("--role", help="viewer, submitter, operator or admin.")
    ] = "submitter",
    file: TokensFile = None,
    data_dir: DataDir = None,
) -> None:
    """Make a token for NAME and print it (once: only its hash is kept)."""
    path, data = _where(file, data_dir)
    try:
        parsed = Role.parse(role)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role") from None
    token = add_token(path, name, tenant, parsed)
    _audit(data, "token-add", name, tenant, {"role": str(parsed), "file": str(path)})
    err.print(f"token {name} ({parsed} of {tenant}) added to {path}; it is shown once:")
    out.print(token)


@token_app.command("list")
def list_tokens(file: TokensFile = None, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """The tokens in the file: name, tenant, role (never a token or its hash)."""
    path, _ = _where(file, data_dir)
    content = read_tokens_file(path)
    rows = [{"name": e.identity.name, "tenant": e.identity.tenant, "role": str(e.identity.role),
             "created_at": e.created_at} for e in content.tokens]  # fmt: skip
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "tenant", "role", "created")
    for row in rows:
        table.add_row(row["name"], row["tenant"], row["role"], row["created_at"])
    out.print(table)


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    file: TokensFile = None,
    data_dir: DataDir = None,
) -> None:
    """Remove NAME's token: a running gateway refuses it within a second."""
    path, data = _where(file, data_dir)
    entry = revoke_token(path, name)
    _audit(data, "token-revoke", name, entry.identity.tenant, {"file": str(path)})
    out.print(f"token {name} revoked")


speeds_app = typer.Typer(help="What the farm learned of its speeds (through the gateway).",
                         invoke_without_command=True)  # fmt: skip
IMPORT_BATCH = 2000
"""Samples per import request (each request stays under the gateway's body limit)."""


@speeds_app.callback()
def speeds(
    ctx: typer.Context,
    api: Api = DEFAULT_API,
    token: Token = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Each device's learned speed over the static table, and its runs."""
    if ctx.invoked_subcommand is not None:
        return
    found = GatewayClient(api, token, data_dir).call("GET", "/v1/speeds")
    if as_json:
        out.print_json(json.dumps(found["devices"]))
        return
    table = Table("device", "x the table", "runs")
    for d in found["devices"]:
        table.add_row(d["device"], f"{d['factor']:.2f}", str(d["runs"]))
    out.print(table)
    out.print(f"{found['runs']} runs learned")


@speeds_app.command("export")
def export_speeds(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="A file (JSON lines) [stdout].")
    ] = None,
    api: Api = DEFAULT_API,
    token: Token = None,
    data_dir: DataDir = None,
) -> None:
    """Every kept run (JSON lines), for `framefleet speeds import` on another farm."""
    client, after, lines = GatewayClient(api, token, data_dir), 0, []
    while True:  # a page at a time
        page = client.call("GET", "/v1/speeds", params={"samples": True, "after": after})
        if not page["samples"]:
            break
        after = page["samples"][-1]["seq"]
        lines += [json.dumps({k: v for k, v in s.items() if k != "seq"}, sort_keys=True)
                  for s in page["samples"]]  # fmt: skip
    text = "".join(line + "\n" for line in lines)
    if output is None:
        out.file.write(text)
    else:
        output.write_text(text)
        err.print(f"{len(lines)} runs written to {output}")


@speeds_app.command("import")
def import_speeds(
    source: Annotated[Path, typer.Argument(help="A file `speeds export` wrote.")],
    api: Api = DEFAULT_API,
    token: Token = None,
    data_dir: DataDir = None,
) -> None:
    """Teach this farm another's runs (a new farm starts warm)."""
    try:
        samples = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{source}: {exc}", param_hint="SOURCE") from None
    client, added = GatewayClient(api, token, data_dir), 0
    for i in range(0, len(samples), IMPORT_BATCH):
        batch = samples[i : i + IMPORT_BATCH]
        added += client.call("POST", "/v1/speeds", json={"samples": batch})["imported"]
    out.print(f"{added} of {len(samples)} runs were new")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.add_typer(speeds_app, name="speeds")

    @app.command()
    def audit(
        after: Annotated[int, typer.Option("--after", help="Entries after this seq.")] = 0,
        limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
        tenant: Annotated[str | None, typer.Option("--tenant")] = None,
        action: Annotated[str | None, typer.Option("--action")] = None,
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
        as_json: AsJson = False,
    ) -> None:
        """The audit trail: who did what, and when (operators and admins)."""
        client = GatewayClient(api, token, data_dir)
        params: dict[str, Any] = {"after": after, "limit": limit}
        params |= {k: v for k, v in (("tenant", tenant), ("action", action)) if v}
        page = client.call("GET", "/v1/audit", params=params)
        if as_json:
            out.print_json(json.dumps(page))
            return
        table = Table("seq", "when", "who", "tenant", "action", "target")
        for e in page["entries"]:
            when = datetime.fromtimestamp(e["at"]).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(str(e["seq"]), when, e["actor"], e["tenant"], e["action"], e["target"])
        out.print(table)
