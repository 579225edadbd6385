"""Tenants, roles and tokens, against a real gateway (uvicorn) over the module's own
coordinator: who may call which route (:data:`ROUTE_ROLES`), what one tenant sees of
another's jobs (nothing: a 404, as a made-up id), events filtered per tenant,
idempotency keys, limits and media roots per tenant, the audit trail, revocation
without a restart, the page's session, and secrets at rest.

The tokens file holds two tenants: team-a with a token of each role, team-b with a
submitter and a viewer; team-b's paths are confined to its own folders.

The audit test comes first: it checks the whole trail of a fresh coordinator, so it must
run before the other tests of this module change anything (pytest runs a module's
tests in file order).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.access import Role, add_token, read_tokens_file, revoke_token, write_tokens_file
from api.gateway.app import create_app
from api.settings import Settings
from cluster import Fleet, Tenant, Tenants
from cluster.control.records.audit import FILE_NAME as AUDIT_FILE
from cluster.control.records.audit import AuditLog
from cluster.ray_edge.token import create_token
from tests.helpers import make_clip, serving, wait_until

PUBLIC = "public"
"""No token needed."""

ROUTE_ROLES: dict[tuple[str, str], str] = {
    # -- the OpenAPI schema's routes ------------------------------------------------------
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,  # FRAMEFLEET_METRICS_PUBLIC=false: operators and admins
    ("GET", "/v1/whoami"): "viewer",
    ("GET", "/v1/jobs"): "viewer",
    ("GET", "/v1/jobs/{job_id}"): "viewer",
    ("GET", "/v1/jobs/{job_id}/events"): "viewer",
    ("GET", "/v1/jobs/{job_id}/package/{path}"): "viewer",
    ("GET", "/v1/nodes"): "viewer",
    ("GET", "/v1/presets"): "viewer",
    ("POST", "/v1/jobs"): "submitter",
    ("POST", "/v1/jobs/batch"): "submitter",
    ("DELETE", "/v1/jobs/{job_id}"): "submitter",
    ("POST", "/v1/jobs/{job_id}/retry"): "submitter",
    ("POST", "/v1/nodes/{name}/drain"): "operator",
    ("DELETE", "/v1/nodes/{name}/drain"): "operator",
    ("POST", "/v1/nodes/{name}/release"): "operator",
    ("GET", "/v1/audit"): "operator",
    ("GET", "/v1/speeds"): "operator",  # what the farm learned of its speeds (export)
    ("POST", "/v1/speeds"): "admin",  # import another farm's
    ("GET", "/v1/tenants"): "admin",
    ("GET", "/v1/tokens"): "admin",
    # -- outside the schema ---------------------------------------------------------------
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/assets/{name}"): PUBLIC,
    ("GET", "/"): PUBLIC,  # a redirect to /ui
    ("GET", "/ui"): PUBLIC,
    ("GET", "/ui/assets/{name}"): PUBLIC,
    ("GET", "/ui/session"): PUBLIC,  # whether the browser is signed in
    ("POST", "/ui/session"): "viewer",  # trades any valid token for a session cookie
    ("DELETE", "/ui/session"): PUBLIC,  # signs out
    ("WEBSOCKET", "/v1/ws"): "viewer",  # events of the caller's tenant's jobs
}
"""Each route (method, path) and the least role that may call it (the release note
quotes this table). A route the OpenAPI schema lists and this table does not fails
:func:`test_every_route_answers_each_role_as_the_table_says`."""

OUTSIDE_SCHEMA = frozenset(
    {
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/assets/{name}"),
        ("GET", "/"),
        ("GET", "/ui"),
        ("GET", "/ui/assets/{name}"),
        ("GET", "/ui/session"),
        ("POST", "/ui/session"),
        ("DELETE", "/ui/session"),
        ("WEBSOCKET", "/v1/ws"),
    }
)

NORMAL_STATUS: dict[tuple[str, str], int] = {
    ("POST", "/v1/jobs"): 201,
    ("POST", "/v1/jobs/batch"): 201,
    ("GET", "/"): 307,
    ("POST", "/ui/session"): 204,
    ("DELETE", "/ui/session"): 204,
    ("WEBSOCKET", "/v1/ws"): 101,  # accepted, then {"type": "ready"}
}
"""What an allowed caller gets with the data the table test gives (else 200)."""

ROLES = ("viewer", "submitter", "operator", "admin")
TOKENS: dict[str, tuple[str, Role]] = {
    "a-viewer": ("team-a", Role.VIEWER),
    "a-submitter": ("team-a", Role.SUBMITTER),
    "a-operator": ("team-a", Role.OPERATOR),
    "a-admin": ("team-a", Role.ADMIN),
    "b-submitter": ("team-b", Role.SUBMITTER),
    "b-viewer": ("team-b", Role.VIEWER),
}
MADE_UP_ID = "feedfacefeedface"
UNAUTHORIZED = {
    "error": {
        "code": "unauthorized",
        "message": "a valid bearer token is required (Authorization: Bearer <token>)",
    }
}
PAGE = {"X-Framefleet-UI": "1"}
ENDED = ("succeeded", "failed", "cancelled")


def forbidden(need: str, name: str) -> dict[str, Any]:
    _, role = TOKENS[name]
    return {
        "error": {
            "code": "forbidden",
            "message": f"this needs the {need} role; the token {name} is a {role} "
            "(ask an admin for a token with that role)",
        }
    }


class Recorder(logging.Handler):
    """Every record of the ``framefleet`` loggers while the module's gateway runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(r) for r in self.records)


@dataclass
class Farm:
    url: str
    media: Path
    out: Path
    data_dir: Path
    tokens_file: Path
    audit_file: Path
    tokens: dict[str, str]
    log: Recorder
    clients: dict[str | None, httpx.Client] = field(default_factory=dict)

    @property
    def b_media(self) -> Path:
        return self.media / "team-b"

    @property
    def b_out(self) -> Path:
        return self.out / "team-b"

    def http(self, who: str | None = None) -> httpx.Client:
        """A client with ``who``'s token (``None``: none)."""
        if who not in self.clients:
            headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
            self.clients[who] = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        return self.clients[who]

    def submit(self, who: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        r = self.http(who).post("/v1/jobs", json=body, headers=headers)
        assert r.status_code == 201, r.text
        job: dict[str, Any] = r.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as an operator (who sees every tenant) reads it."""
        r = self.http("a-operator").get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        return job

    def finished(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in ENDED else None

        found: dict[str, Any] = wait_until(done, timeout=timeout, step=0.1)
        return found

    def node(self) -> dict[str, Any]:
        (node,) = self.http("a-operator").get("/v1/nodes").json()
        return dict(node)

    def undrain(self) -> None:
        """Put the node back in service, if it is not (an undrain is audited)."""
        node = self.node()
        if node["state"] != "ready":
            self.http("a-operator").delete(f"/v1/nodes/{node['node_id']}/drain")

    def tenants(self) -> dict[str, dict[str, Any]]:
        """The tenants the coordinator holds now."""
        listed = self.http("a-admin").get("/v1/tenants").json()["tenants"]
        return {t["name"]: t for t in listed}

    def set_tenant(self, name: str, **changes: Any) -> None:
        """Change a tenant in the tokens file; returns once the coordinator holds it."""
        content = read_tokens_file(self.tokens_file)
        known = tuple(replace(t, **changes) if t.name == name else t for t in content.tenants.known)
        write_tokens_file(self.tokens_file, replace(content, tenants=Tenants(known)))
        want = {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}
        wait_until(lambda: all(self.tenants()[name][k] == v for k, v in want.items()), timeout=15)

    def ws(self, who: str | None = None, **kw: Any) -> ClientConnection:
        headers = dict(kw.pop("additional_headers", {}))
        if who:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return connect(
            self.url.replace("http://", "ws://") + "/v1/ws",
            additional_headers=headers,
            open_timeout=10,
            **kw,
        )

    def audit(self, **params: Any) -> list[dict[str, Any]]:
        r = self.http("a-operator").get("/v1/audit", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        entries: list[dict[str, Any]] = r.json()["entries"]
        return entries


def probe(path: Path) -> dict[str, Any]:
    return {"kind": "probe", "input": str(path)}


def transcode(src: Path, dst: Path) -> dict[str, Any]:
    return {"input": str(src), "output": str(dst), "hardware": "cpu", "speed": "fast"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def farm(
    fleet: Fleet, roots: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    media, out = roots
    make_clip(media / "clip.mp4", seconds=1)
    (media / "damaged.mp4").write_bytes(b"not a video" * 100)
    for folder in (media / "team-b", out / "team-b"):
        folder.mkdir()
    for name in ("clip.mp4", "clip2.mp4"):
        (media / "team-b" / name).write_bytes((media / "clip.mp4").read_bytes())
    tokens_file = tmp_path_factory.mktemp("secrets") / "framefleet" / "tokens.toml"
    tokens = {
        name: add_token(tokens_file, name, tenant, role) for name, (tenant, role) in TOKENS.items()
    }
    tenants = Tenants(
        (
            Tenant("team-a", weight=2),
            Tenant("team-b", media_roots=(str(media / "team-b"), str(out / "team-b"))),
        )
    )
    write_tokens_file(tokens_file, replace(read_tokens_file(tokens_file), tenants=tenants))
    data_dir = tmp_path_factory.mktemp("gw-data")
    settings = Settings(
        tokens_file=tokens_file, media_roots=[str(media), str(out)], data_dir=data_dir
    )
    recorder = Recorder()
    logger = logging.getLogger("framefleet")
    level = logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.DEBUG)
    try:
        with serving(create_app(settings, fleet)) as url:
            f = Farm(
                url,
                media,
                out,
                data_dir,
                tokens_file,
                Path(fleet.coordinator_config.data_dir) / AUDIT_FILE,
                tokens,
                recorder,
            )
            wait_until(lambda: f.http().get("/readyz").status_code == 200, timeout=60)
            wait_until(lambda: set(f.tenants()) == {"team-a", "team-b"}, timeout=30)
            yield f
            for client in f.clients.values():
                client.close()
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)


# ---- the audit trail (first: it reads the fresh coordinator's whole trail) -------------


def test_the_audit_trail_lists_each_change_with_who_made_it_in_order(farm: Farm) -> None:
    op, sub, admin = farm.http("a-operator"), farm.http("a-submitter"), farm.http("a-admin")
    (start,) = wait_until(farm.audit, timeout=15)  # the gateway's push of the tenants
    assert {k: start[k] for k in ("actor", "tenant", "action", "target", "outcome")} == {
        "actor": "local",
        "tenant": "default",
        "action": "set-tenants",
        "target": "tenants",
        "outcome": "ok",
    }
    assert [t["name"] for t in start["detail"]["tenants"]] == ["team-a", "team-b"]
    node = farm.node()
    try:
        assert op.post(f"/v1/nodes/{node['node_id']}/drain").status_code == 200
        job = farm.submit("a-submitter", transcode(farm.media / "clip.mp4", farm.out / "audit.mp4"))
        cancelled = sub.delete(f"/v1/jobs/{job['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert sub.delete(f"/v1/jobs/{job['id']}").status_code == 200  # ended: not again
        retried = admin.post(f"/v1/jobs/{job['id']}/retry")
        assert retried.status_code == 200 and retried.json()["status"] == "queued"
        assert op.delete(f"/v1/nodes/{node['node_id']}/drain").status_code == 200
        assert farm.finished(job["id"])["status"] == "succeeded"
        released = op.post(f"/v1/nodes/{node['node_id']}/release")
        assert released.json() == {"released": f"node:{node['node_id']} was not quarantined"}
        batch = farm.http("b-submitter").post(
            "/v1/jobs/batch",
            json={
                "spec": {"kind": "probe"},
                "inputs": [str(farm.b_media / "clip.mp4"), str(farm.b_media / "clip2.mp4")],
            },
        )
        assert batch.status_code == 201, batch.text
        # Refused changes are not in the trail: a role too low, a path outside the tenant's
        # roots, another tenant's job.
        assert (
            farm.http("a-viewer").post("/v1/jobs", json=probe(farm.media / "clip.mp4")).status_code
            == 403
        )
        assert (
            farm.http("b-submitter")
            .post("/v1/jobs", json=probe(farm.media / "clip.mp4"))
            .status_code
            == 422
        )
        assert farm.http("b-submitter").delete(f"/v1/jobs/{job['id']}").status_code == 404
        assert (
            farm.http("a-submitter").post(f"/v1/nodes/{node['node_id']}/drain").status_code == 403
        )
    finally:
        farm.undrain()
    entries = farm.audit()
    got = [
        (e["actor"], e["tenant"], e["action"], e["target"], e["outcome"], e["detail"])
        for e in entries
    ]
    nid, address = node["node_id"], node["address"]
    assert got == [
        ("local", "default", "set-tenants", "tenants", "ok", start["detail"]),
        ("a-operator", "team-a", "drain", address, "ok", {"node_id": nid}),
        ("a-submitter", "team-a", "submit", job["id"], "ok", {"kind": "transcode"}),
        ("a-submitter", "team-a", "cancel", job["id"], "ok", {"was": "queued", "now": "cancelled"}),
        ("a-admin", "team-a", "retry", job["id"], "ok", {"was": "cancelled"}),
        ("a-operator", "team-a", "undrain", address, "ok", {"node_id": nid}),
        (
            "a-operator",
            "team-a",
            "release",
            f"node:{nid} was not quarantined",
            "ok",
            {"asked": nid},
        ),
        (
            "b-submitter",
            "team-b",
            "submit",
            "batch of 2",
            "ok",
            {"jobs": 2, "ids": batch.json()["ids"]},
        ),
    ]
    seqs, times = [e["seq"] for e in entries], [e["at"] for e in entries]
    assert seqs == sorted(set(seqs)) and times == sorted(times)
    # Filters, and who may read it.
    assert [e["seq"] for e in farm.audit(tenant="team-b")] == [entries[-1]["seq"]]
    assert [e["target"] for e in farm.audit(action="submit")] == [job["id"], "batch of 2"]
    assert [e["seq"] for e in farm.audit(after=entries[-2]["seq"])] == [entries[-1]["seq"]]
    for who, status in (("a-submitter", 403), ("b-viewer", 403), (None, 401), ("a-admin", 200)):
        r = farm.http(who).get("/v1/audit")
        assert r.status_code == status
        if status == 403:
            assert r.json() == forbidden("operator", who)  # type: ignore[arg-type]
    # The trail is a file of the coordinator's data dir: read again, the same rows; and
    # append-only, whoever opens it.
    again = AuditLog(farm.audit_file)
    try:
        assert [e.to_dict() for e in again.read(limit=1000)] == entries
    finally:
        again.close()
    db = sqlite3.connect(farm.audit_file)
    try:
        for sql in ("DELETE FROM audit", "UPDATE audit SET actor = 'someone-else'"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)
    finally:
        db.close()
    assert farm.audit() == entries


# ---- routes and roles ------------------------------------------------------------------


@pytest.fixture(scope="module")
def a_jobs(farm: Farm) -> dict[str, str]:
    """Team-a's jobs the route tests use: a finished probe, a failed probe (retried by
    each submitter and up) and a finished package."""
    done = farm.submit("a-submitter", probe(farm.media / "clip.mp4"))
    failed = farm.submit("a-submitter", probe(farm.media / "damaged.mp4"))
    package = farm.submit(
        "a-submitter",
        {
            "kind": "package",
            "input": str(farm.media / "clip.mp4"),
            "output": str(farm.out / "package"),
            "hardware": "cpu",
            "speed": "fast",
            "package": {"ladder": [{"height": 144}], "segment_s": 2},
        },
    )
    ids = {"done": done["id"], "failed": failed["id"], "package": package["id"]}
    for key, status in (("done", "succeeded"), ("failed", "failed"), ("package", "succeeded")):
        job = farm.finished(ids[key], timeout=90)
        assert job["status"] == status, job
    return ids


def call(farm: Farm, key: tuple[str, str], who: str | None, ids: dict[str, str]) -> Any:
    """Call ``key``'s route as ``who`` with data that makes it succeed for a caller of
    enough role: (status, JSON error body or None); a WebSocket: 101 once ready, else
    the code it was closed with."""
    method, path = key
    if method == "WEBSOCKET":
        return socket_answer(farm, who)
    url = (
        path.replace("{job_id}/package/{path}", f"{ids['package']}/package/master.m3u8")
        .replace("{job_id}/retry", f"{ids['failed']}/retry")
        .replace("{job_id}", ids["done"])
        .replace("/ui/assets/{name}", "/ui/assets/app.js")
        .replace("/docs/assets/{name}", "/docs/assets/docs.js")
        .replace("{name}", farm.node()["node_id"])
    )
    body = {
        ("POST", "/v1/jobs"): probe(farm.media / "clip.mp4"),
        ("POST", "/v1/jobs/batch"): {
            "spec": {"kind": "probe"},
            "inputs": [str(farm.media / "clip.mp4")],
        },
        ("POST", "/ui/session"): {"token": farm.tokens[who] if who else ""},
        ("POST", "/v1/speeds"): {"samples": []},
    }.get(key)
    if path == "/ui/session":  # a browser of its own (it keeps a cookie)
        with httpx.Client(base_url=farm.url, timeout=30) as browser:
            r = browser.request(method, url, json=body, headers=PAGE)
    elif path.endswith("/events"):
        with farm.http(who).stream(method, url) as r:
            r.read()
    else:
        r = farm.http(who).request(method, url, json=body)
    if r.status_code == 401 and path != "/ui/session":
        assert r.headers.get("www-authenticate") == "Bearer"
    if r.status_code < 400:
        check_answer(farm, key, who, r, ids)
    return r.status_code, r.json() if r.status_code >= 400 else None


def socket_answer(farm: Farm, who: str | None) -> tuple[int, None]:
    with farm.ws(who) as ws:
        if who is not None:
            assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
            return 101, None
        ws.send(json.dumps({}))  # no token in the first message either
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, None


def check_answer(
    farm: Farm, key: tuple[str, str], who: str | None, r: httpx.Response, ids: dict[str, str]
) -> None:
    """What an allowed call answered, where it says more than its status."""
    if key == ("POST", "/v1/jobs/{job_id}/retry"):
        assert farm.finished(ids["failed"])["status"] == "failed"  # ready for the next
    elif key == ("GET", "/v1/whoami"):
        tenant, role = TOKENS[who or ""]
        assert r.json() == {"name": who, "tenant": tenant, "role": str(role)}
    elif key == ("GET", "/v1/tokens"):
        listed = r.json()["tokens"]
        assert {t["name"] for t in listed} == set(TOKENS)
        assert all(set(t) == {"name", "tenant", "role", "source", "created_at"} for t in listed)
    elif key == ("GET", "/v1/jobs/{job_id}/package/{path}"):
        assert r.text.startswith("#EXTM3U")
    elif key == ("GET", "/v1/jobs/{job_id}/events"):
        assert '"status":"succeeded"' in r.text


def test_every_route_answers_each_role_as_the_table_says(
    farm: Farm, a_jobs: dict[str, str]
) -> None:
    schema = farm.http("a-admin").get("/openapi.json").json()
    listed = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    in_table = set(ROUTE_ROLES) - OUTSIDE_SCHEMA
    assert not listed - in_table, f"routes without roles in ROUTE_ROLES: {listed - in_table}"
    assert not in_table - listed, f"ROUTE_ROLES names routes that are gone: {in_table - listed}"
    assert set(ROUTE_ROLES) >= OUTSIDE_SCHEMA
    wrong: list[str] = []
    try:
        for key, need in ROUTE_ROLES.items():
            for role in (None, *ROLES):
                who = f"a-{role}" if role else None
                status, error = call(farm, key, who, a_jobs)
                allowed = need == PUBLIC or (
                    role is not None and ROLES.index(role) >= ROLES.index(need)
                )
                if allowed:
                    want, body = NORMAL_STATUS.get(key, 200), None
                elif role is None:  # no token at all
                    want, body = 401, UNAUTHORIZED
                    if key == ("POST", "/ui/session"):
                        body = {
                            "error": {
                                "code": "unauthorized",
                                "message": "that token is not valid for this gateway",
                            }
                        }
                    elif key[0] == "WEBSOCKET":
                        want, body = 4401, None
                else:
                    want, body = 403, forbidden(need, who)  # type: ignore[arg-type]
                if (status, error) != (want, body):
                    wrong.append(
                        f"{key[0]} {key[1]} as {who}: {status} {error}, want {want} {body}"
                    )
    finally:
        farm.undrain()
    assert not wrong, "\n".join(wrong)


def test_another_tenants_job_is_a_404_like_a_made_up_id_on_every_job_route(
    farm: Farm, a_jobs: dict[str, str]
) -> None:
    routes = [
        ("GET", "/v1/jobs/{}"),
        ("DELETE", "/v1/jobs/{}"),
        ("POST", "/v1/jobs/{}/retry"),
        ("GET", "/v1/jobs/{}/events"),
        ("GET", "/v1/jobs/{}/package/master.m3u8"),
    ]

    def answer(who: str, method: str, path: str, job_id: str) -> tuple[int, str]:
        with farm.http(who).stream(method, path.format(job_id)) as r:
            return r.status_code, r.read().decode().replace(job_id, "<id>")

    node = farm.node()
    # One of team-a's jobs queued (the node drained), one cancelled: a cancel or a retry
    # that got through would show.
    farm.http("a-operator").post(f"/v1/nodes/{node['node_id']}/drain")
    try:
        queued = farm.submit(
            "a-submitter", transcode(farm.media / "clip.mp4", farm.out / "iso.mp4")
        )
        cancelled = farm.submit(
            "a-submitter", transcode(farm.media / "clip.mp4", farm.out / "iso2.mp4")
        )
        farm.http("a-submitter").delete(f"/v1/jobs/{cancelled['id']}")
        theirs = [*a_jobs.values(), queued["id"], cancelled["id"]]
        for who in ("b-submitter", "b-viewer"):
            for method, path in routes:
                made_up = answer(who, method, path, MADE_UP_ID)
                for job_id in theirs:
                    assert answer(who, method, path, job_id) == made_up, (who, method, path)
                if who == "b-submitter":
                    assert made_up[0] == 404, made_up
                    assert json.loads(made_up[1]) == {
                        "error": {
                            "code": "not_found",
                            "message": "no job with id '<id>'; list jobs to find its id",
                        }
                    }
                else:  # a viewer may not cancel or retry any job: the same 403 for all
                    assert made_up[0] == (404 if method == "GET" else 403), made_up
        assert farm.job(queued["id"])["status"] == "queued"
        assert farm.job(cancelled["id"])["status"] == "cancelled"
        farm.http("a-submitter").delete(f"/v1/jobs/{queued['id']}")
    finally:
        farm.undrain()
    # Listing: each tenant its own; an operator every tenant's (or one, if asked).
    b_job = farm.submit("b-submitter", probe(farm.b_media / "clip.mp4"))
    farm.finished(b_job["id"])

    def ids(who: str, **params: Any) -> set[str]:
        page = farm.http(who).get("/v1/jobs", params={"limit": 500, **params}).json()
        assert page["next_cursor"] is None
        return {j["id"] for j in page["jobs"]}

    everyone = ids("a-operator")
    team_a, team_b = ids("a-operator", tenant="team-a"), ids("a-operator", tenant="team-b")
    assert team_a | team_b == everyone and not team_a & team_b
    assert set(theirs) <= team_a and b_job["id"] in team_b
    assert ids("a-viewer") == ids("a-submitter") == team_a
    assert ids("b-viewer") == ids("b-submitter") == team_b
    assert ids("b-viewer", tenant="team-a") == team_b  # asking for another tenant: still its own
    assert ids("a-admin") == everyone
    assert farm.http("a-operator").get(f"/v1/jobs/{b_job['id']}").status_code == 200
    assert farm.http("a-viewer").get(f"/v1/jobs/{b_job['id']}").status_code == 404


# ---- events --------------------------------------------------------------------------


def drain_socket(ws: ClientConnection, quiet_s: float = 1.0) -> list[dict[str, Any]]:
    """What the socket receives until it has been quiet for ``quiet_s``."""
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(json.loads(ws.recv(timeout=quiet_s)))
    return got


def test_a_websocket_sees_its_tenants_events_only_and_an_operator_every_tenants(
    farm: Farm,
) -> None:
    with farm.ws() as viewer, farm.ws("a-operator") as operator:
        viewer.send(json.dumps({"token": farm.tokens["b-viewer"]}))  # a browser's way
        assert json.loads(viewer.recv(timeout=10)) == {"type": "ready"}
        assert json.loads(operator.recv(timeout=10)) == {"type": "ready"}
        a_job = farm.submit("a-submitter", probe(farm.media / "clip.mp4"))
        b_job = farm.submit("b-submitter", probe(farm.b_media / "clip.mp4"))
        farm.finished(a_job["id"])
        farm.finished(b_job["id"])
        # The operator's socket gets both jobs' ends; the hub offered every event to both
        # sockets at once, so the viewer's has had its share by then.
        ended: set[str] = set()
        seen_by_operator: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while ended != {a_job["id"], b_job["id"]} and time.monotonic() < deadline:
            event = json.loads(operator.recv(timeout=30))
            seen_by_operator.append(event)
            if event.get("status") in ENDED and event["job_id"] in (a_job["id"], b_job["id"]):
                ended.add(event["job_id"])
        assert ended == {a_job["id"], b_job["id"]}
        seen = drain_socket(viewer)
        # Asking for team-a's job by id, with what it missed: still nothing of it.
        viewer.send(json.dumps({"subscribe": [a_job["id"]], "since": 0}))
        asked = drain_socket(viewer)
    of_b = [e for e in seen if e.get("job_id") == b_job["id"]]
    assert [e["status"] for e in of_b][-1] == "succeeded"
    assert a_job["id"] not in {e.get("job_id") for e in seen}
    for job_id in {e["job_id"] for e in seen if "job_id" in e}:  # every one is team-b's
        assert farm.http("b-viewer").get(f"/v1/jobs/{job_id}").status_code == 200
    assert asked[0] == {"type": "subscribed", "jobs": [a_job["id"]]}
    assert all(e.get("job_id") != a_job["id"] for e in asked), asked
    assert {e.get("job_id") for e in seen_by_operator} >= {a_job["id"], b_job["id"]}


# ---- idempotency, batches, limits, media roots -----------------------------------------


def test_idempotency_keys_are_per_tenant(farm: Farm) -> None:
    body = probe(farm.b_media / "clip.mp4")  # the same request from both tenants
    a1 = farm.submit("a-submitter", body, key="nightly-1")
    b1 = farm.submit("b-submitter", body, key="nightly-1")
    assert a1["id"] != b1["id"]
    assert farm.submit("a-submitter", body, key="nightly-1")["id"] == a1["id"]
    # One tenant's clients share its keys.
    assert farm.submit("a-admin", body, key="nightly-1")["id"] == a1["id"]
    assert farm.submit("b-submitter", body, key="nightly-1")["id"] == b1["id"]
    assert farm.http("b-viewer").get(f"/v1/jobs/{b1['id']}").status_code == 200
    assert farm.http("b-viewer").get(f"/v1/jobs/{a1['id']}").status_code == 404


def test_a_batch_needs_the_submitter_role_and_belongs_to_its_tenant(farm: Farm) -> None:
    body = {
        "spec": {"kind": "probe"},
        "inputs": [str(farm.b_media / "clip.mp4"), str(farm.b_media / "clip2.mp4")],
    }
    r = farm.http("b-submitter").post("/v1/jobs/batch", json=body)
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert len(ids) == 2 and [j["id"] for j in r.json()["jobs"]] == ids
    for job_id in ids:
        assert farm.finished(job_id)["status"] == "succeeded"
        assert farm.http("b-viewer").get(f"/v1/jobs/{job_id}").status_code == 200
        assert farm.http("a-viewer").get(f"/v1/jobs/{job_id}").status_code == 404
    refused = farm.http("b-viewer").post("/v1/jobs/batch", json=body)
    assert refused.status_code == 403 and refused.json() == forbidden("submitter", "b-viewer")
    assert farm.http().post("/v1/jobs/batch", json=body).json() == UNAUTHORIZED


def test_a_tenant_past_its_max_queued_gets_429_queue_full(farm: Farm) -> None:
    """Set in the tokens file while the gateway runs: the coordinator holds it within
    seconds; past it, 429 naming the tenant; other tenants are not bound by it."""
    node = farm.node()
    op, bsub = farm.http("a-operator"), farm.http("b-submitter")
    farm.set_tenant("team-b", max_queued=2)
    op.post(f"/v1/nodes/{node['node_id']}/drain")  # nothing starts: queued jobs stay so
    jobs = []
    try:
        for i in range(2):
            jobs.append(
                farm.submit(
                    "b-submitter", transcode(farm.b_media / "clip.mp4", farm.b_out / f"q{i}.mp4")
                )
            )
        full = bsub.post(
            "/v1/jobs", json=transcode(farm.b_media / "clip.mp4", farm.b_out / "q2.mp4")
        )
        assert full.status_code == 429 and full.headers["retry-after"] == "30"
        assert full.json() == {
            "error": {
                "code": "queue_full",
                "message": (
                    "tenant team-b has 2 jobs queued and may have at most 2 (room for 0 more); "
                    "submit again once some have started, or ask an admin to raise the tenant's "
                    "max_queued"
                ),
            }
        }
        batch = bsub.post(
            "/v1/jobs/batch",
            json={"spec": {"kind": "probe"}, "inputs": [str(farm.b_media / "clip.mp4")]},
        )
        assert batch.status_code == 429 and batch.json()["error"]["code"] == "queue_full"
        other = farm.submit("a-submitter", transcode(farm.media / "clip.mp4", farm.out / "q.mp4"))
        jobs.append(other)  # team-a has no bound
        # A queued job cancelled frees its room.
        farm.http("b-submitter").delete(f"/v1/jobs/{jobs[0]['id']}")
        jobs.append(
            farm.submit("b-submitter", transcode(farm.b_media / "clip.mp4", farm.b_out / "q3.mp4"))
        )
    finally:
        farm.undrain()
        for job in jobs:
            farm.finished(job["id"])
        farm.set_tenant("team-b", max_queued=None)
    assert [farm.job(j["id"])["status"] for j in jobs] == ["cancelled", *["succeeded"] * 3]


def test_a_tenants_paths_must_lie_in_its_media_roots(farm: Farm) -> None:
    bsub = farm.http("b-submitter")
    outside = bsub.post("/v1/jobs", json=probe(farm.media / "clip.mp4"))
    assert outside.status_code == 422, outside.text
    error = outside.json()["error"]
    # The code is invalid_spec for a local path (outside_roots for an s3:// URL).
    roots = f"{farm.b_media}, {farm.b_out}"  # the tenant's own roots, not the farm's
    assert error == {
        "code": "invalid_spec",
        "message": (
            f"input '{farm.media / 'clip.mp4'}' resolves outside the media roots ({roots}); "
            "move the file under one of them"
        ),
    }
    out = bsub.post("/v1/jobs", json=transcode(farm.b_media / "clip.mp4", farm.out / "b.mp4"))
    assert out.status_code == 422 and out.json()["error"]["message"].startswith(
        f"output '{farm.out / 'b.mp4'}' resolves outside the media roots ({roots})"
    )
    (farm.b_media / "escape.mp4").symlink_to(farm.media / "clip.mp4")  # a link out of its root
    link = bsub.post("/v1/jobs", json=probe(farm.b_media / "escape.mp4"))
    assert link.status_code == 422 and link.json()["error"]["message"].startswith(
        f"input '{farm.b_media / 'escape.mp4'}' resolves outside the media roots ({roots})"
    )
    batch = bsub.post(
        "/v1/jobs/batch",
        json={
            "spec": {"kind": "probe"},
            "inputs": [str(farm.b_media / "clip.mp4"), str(farm.media / "clip.mp4")],
        },
    )
    assert batch.status_code == 422 and "resolves outside the media roots" in batch.text
    inside = bsub.post("/v1/jobs", json=transcode(farm.b_media / "clip.mp4", farm.b_out / "b.mp4"))
    assert inside.status_code == 201, inside.text
    assert farm.finished(inside.json()["id"])["status"] == "succeeded"
    assert (farm.b_out / "b.mp4").stat().st_size > 0
    # Team-a has no roots of its own: the farm's.
    farm.submit("a-submitter", probe(farm.media / "clip.mp4"))


# ---- tokens and sessions ---------------------------------------------------------------


def accepted(farm: Farm, token: str) -> dict[str, str]:
    """Its headers, once the gateway accepts ``token`` (just added to the file: it reads
    the file again within a second, without a restart)."""
    headers = {"Authorization": f"Bearer {token}"}
    wait_until(
        lambda: httpx.get(f"{farm.url}/v1/whoami", headers=headers, timeout=30).status_code == 200,
        timeout=5,
    )
    return headers


def test_a_revoked_token_is_refused_within_seconds_without_a_restart(farm: Farm) -> None:
    token = farm.tokens["b-temp"] = add_token(farm.tokens_file, "b-temp", "team-b", Role.VIEWER)
    headers = accepted(farm, token)  # a new token works without a restart...
    # ...and a revoked one stops as soon.
    revoke_token(farm.tokens_file, "b-temp")
    revoked = time.monotonic()
    wait_until(
        lambda: httpx.get(f"{farm.url}/v1/jobs", headers=headers, timeout=30).status_code == 401,
        timeout=5,
        step=0.05,
    )
    took = time.monotonic() - revoked
    assert took < 2.5, f"the revoked token worked for {took:.1f} s"
    r = httpx.get(f"{farm.url}/v1/jobs", headers=headers, timeout=30)
    assert r.json() == UNAUTHORIZED
    with farm.ws() as ws:  # nor on a WebSocket
        ws.send(json.dumps({"token": token}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    # The others' tokens go on working.
    assert farm.http("b-viewer").get("/v1/whoami").status_code == 200


def test_a_page_session_sees_its_tenant_only_and_ends_with_its_token(
    farm: Farm, a_jobs: dict[str, str]
) -> None:
    token = farm.tokens["b-page"] = add_token(farm.tokens_file, "b-page", "team-b", Role.VIEWER)
    page = PAGE | {"Origin": farm.url}
    with httpx.Client(base_url=farm.url, timeout=30) as browser:
        accepted(farm, token)
        signed = browser.post("/ui/session", json={"token": token}, headers=page)
        assert signed.status_code == 204
        cookie = signed.cookies["framefleet_session"]
        assert token not in signed.headers["set-cookie"]
        assert browser.get("/ui/session").json() == {"signed_in": True}
        assert browser.get("/v1/whoami").json() == {
            "name": "b-page",
            "tenant": "team-b",
            "role": "viewer",
        }
        theirs = browser.get(f"/v1/jobs/{a_jobs['done']}")
        made_up = browser.get(f"/v1/jobs/{MADE_UP_ID}")
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
        assert theirs.text.replace(a_jobs["done"], "<id>") == made_up.text.replace(
            MADE_UP_ID, "<id>"
        )
        listed = {j["id"] for j in browser.get("/v1/jobs", params={"limit": 500}).json()["jobs"]}
        team_b = {
            j["id"]
            for j in farm.http("a-operator")
            .get("/v1/jobs", params={"limit": 500, "tenant": "team-b"})
            .json()["jobs"]
        }
        assert listed == team_b and a_jobs["done"] not in listed
        # A viewer's session may not submit, even from the page.
        submit = browser.post("/v1/jobs", json=probe(farm.b_media / "clip.mp4"), headers=page)
        assert submit.status_code == 403 and submit.json() == {
            "error": {
                "code": "forbidden",
                "message": "this needs the submitter role; the token b-page is a viewer (ask an "
                "admin for a token with that role)",
            }
        }
        # The page's WebSocket: the session cookie, from the gateway's own origin.
        with farm.ws(
            additional_headers={"Cookie": f"framefleet_session={cookie}"}, origin=farm.url
        ) as ws:
            assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
        revoke_token(farm.tokens_file, "b-page")
        wait_until(lambda: browser.get("/v1/jobs").status_code == 401, timeout=5, step=0.05)
        assert browser.get("/v1/jobs").json() == UNAUTHORIZED
        assert browser.get("/ui/session").json() == {"signed_in": False}


def test_an_open_websocket_ends_when_its_token_is_revoked(farm: Farm) -> None:
    """README: "a revoked one (and every page session made with it) is refused at once".
    A socket opened before the revoke still gets the tenant's events after it (the
    gateway checks the token only when the socket opens), for as long as it stays open."""
    farm.tokens["b-socket"] = add_token(farm.tokens_file, "b-socket", "team-b", Role.VIEWER)
    headers = accepted(farm, farm.tokens["b-socket"])
    with farm.ws("b-socket") as ws:
        assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
        revoke_token(farm.tokens_file, "b-socket")
        wait_until(
            lambda: (
                httpx.get(f"{farm.url}/v1/whoami", headers=headers, timeout=30).status_code == 401
            ),
            timeout=5,
        )
        later = farm.submit("b-submitter", probe(farm.b_media / "clip.mp4"))
        farm.finished(later["id"])
        got: list[dict[str, Any]] = []
        code = None
        try:
            got = drain_socket(ws)
        except ConnectionClosed as closed:  # what should happen: closed with 4401
            code = closed.rcvd.code if closed.rcvd else None
    assert [e for e in got if e.get("job_id") == later["id"]] == [], "events after the revoke"
    assert code == 4401


# ---- secrets at rest, and nowhere else -------------------------------------------------


def test_secrets_are_private_at_rest_and_tokens_appear_nowhere(farm: Farm) -> None:
    assert mode(farm.data_dir / "session-key") == 0o600 and mode(farm.data_dir) == 0o700
    assert mode(farm.tokens_file) == 0o600 and mode(farm.tokens_file.parent) == 0o700
    assert mode(farm.audit_file) == 0o600
    ray_token = create_token(farm.data_dir.parent / "x" / "auth_token")
    assert mode(Path(ray_token.where)) == 0o600 and mode(Path(ray_token.where).parent) == 0o700
    assert len(ray_token.value) == 64
    # A broken edit of the tokens file: logged, the last good content kept (tokens work).
    good = farm.tokens_file.read_text()
    farm.tokens_file.write_text(good + "\n[tokens.broken\n")
    try:
        wait_until(lambda: "kept the tokens file's last good content" in farm.log.text(), timeout=5)
        assert farm.http("a-viewer").get("/v1/whoami").status_code == 200
    finally:
        farm.tokens_file.write_text(good)
    farm.http().get("/v1/jobs", headers={"Authorization": f"Bearer {farm.tokens['a-viewer']}x"})
    # Where a token must never appear: its secret part is enough to look for.
    secrets = {name: token.split("_", 2)[2] for name, token in farm.tokens.items()}
    op = farm.http("a-operator")
    jobs = op.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
    places = {
        "the audit trail (API)": json.dumps(farm.audit()),
        "the audit file": b"".join(
            p.read_bytes() for p in farm.audit_file.parent.glob(AUDIT_FILE + "*")
        ).decode("latin-1"),
        "/metrics": httpx.get(f"{farm.url}/metrics").text,
        "the job records": json.dumps([op.get(f"/v1/jobs/{j['id']}").json() for j in jobs]),
        "the gateway's log": farm.log.text(),
        "the tokens file": farm.tokens_file.read_text(),
        "/v1/tokens": farm.http("a-admin").get("/v1/tokens").text,
    }
    assert jobs and farm.log.records
    for where, text in places.items():
        for name, secret in secrets.items():
            assert secret not in text, f"{name}'s token appears in {where}"


def test_serve_writes_its_api_token_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``framefleet serve`` with no token configured makes one, mode 0600, and tightens
    a data dir others could read to 0700; it prints where, never the token."""
    result, data = run_serve(tmp_path, monkeypatch)
    token_file = data / "api-token"
    assert mode(token_file) == 0o600 and mode(data) == 0o700
    token = token_file.read_text().strip()
    assert len(token) >= 40 and token not in result.output
    assert f"using the token in {token_file}" in result.output


def test_serve_makes_no_api_token_when_a_tokens_file_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: "With none set [TOKENS_FILE, API_TOKENS, TOKEN_FILE], `serve` makes one in
    <data dir>/api-token". With only a tokens file set, it must not add a plain token (an
    admin of the default tenant) that nobody asked for."""
    tokens_file = tmp_path / "secrets" / "tokens.toml"
    add_token(tokens_file, "alice", "team-a", Role.SUBMITTER)
    monkeypatch.setenv("FRAMEFLEET_TOKENS_FILE", str(tokens_file))
    _, data = run_serve(tmp_path, monkeypatch)
    assert not (data / "api-token").exists()


class _Stop(Exception):
    pass


def run_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    """``framefleet serve`` on a data dir of mode 0755, stopped where it would start the
    cluster (after its token is made): (the CLI's result, the data dir)."""
    from typer.testing import CliRunner

    from api.cli.main import app

    for var in ("FRAMEFLEET_API_TOKENS", "FRAMEFLEET_TOKEN_FILE", "FRAMEFLEET_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)

    def stop(self: Settings, *, serving: bool) -> Fleet:
        raise _Stop

    monkeypatch.setattr(Settings, "connect", stop)
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    result = CliRunner().invoke(
        app, ["serve", "--data-dir", str(data), "--media-root", str(tmp_path)]
    )
    assert isinstance(result.exception, _Stop), result.output
    return result, data
