"""The CLI as an HTTP client of a running gateway: submit, status, watch, cancel, nodes.

``--api URL`` (``FRAMEFLEET_API``, default http://127.0.0.1:8000) and ``--token``
(``FRAMEFLEET_TOKEN``; else the token file ``framefleet serve`` made in the data dir,
``--data-dir`` / ``FRAMEFLEET_DATA_DIR`` or the default both use). ``--json`` prints
machine-readable output for scripts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api import paths
from api.cli.exits import ExitCode
from api.cli.livebar import live_bar
from api.cli.options import (
    Codec,
    DataDir,
    DeinterlaceOpt,
    HardwareOpt,
    Priority,
    Quality,
    SdrOpt,
    SpeedOpt,
    SplitOpt,
    TonemapOpt,
)
from api.paths import TOKEN_FILE_NAME
from cluster import (
    ClusterUnavailable,
    Deinterlace,
    ErrorCode,
    Hardware,
    Job,
    JobKind,
    JobPlacement,
    JobSpec,
    JobStatus,
    RemoteError,
    Speed,
    Split,
    Tonemap,
    is_object_url,
    is_url,
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Api = Annotated[str, typer.Option("--api", envvar="FRAMEFLEET_API", help="The gateway's URL.")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="FRAMEFLEET_TOKEN", help="An API token.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
DEFAULT_API = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
RECONNECT_S = 120.0
"""How long ``watch`` keeps trying to reach a gateway that went away."""
RECONNECT_WAIT_S = 1.0
STREAM_READ_TIMEOUT_S = 30.0
"""A stream waits this long to connect (and forever for its next event)."""


def _code(sent: str, status: int) -> ErrorCode:
    """The gateway's error code; a body without one is judged by its HTTP status."""
    if sent in ErrorCode._value2member_map_:
        return ErrorCode(sent)
    return ErrorCode.HTTP_ERROR if status < 500 else ErrorCode.INTERNAL


class GatewayClient:
    def __init__(self, url: str, token: str | None, data_dir: Path | None = None) -> None:
        self.token_file = paths.data_dir(data_dir) / TOKEN_FILE_NAME
        if token is None and self.token_file.is_file():
            token = self.token_file.read_text().strip() or None
        self.has_token = token is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        import httpx  # here: only commands that talk to a gateway pay for it (~0.1 s)

        self.url = url.rstrip("/")
        # Loading the CA bundle costs ~0.1 s of a one-shot command; plain HTTP needs none.
        tls = not self.url.startswith("http://")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=60, verify=tls)
        self._stream_timeout = httpx.Timeout(STREAM_READ_TIMEOUT_S, read=None)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ClusterUnavailable(
                f"cannot reach the gateway at {self.url} ({type(exc).__name__}); "
                "is `framefleet serve` running? (--api / FRAMEFLEET_API)"
            ) from exc
        if r.status_code >= 400:
            try:
                error = r.json()["error"]
                message, sent = str(error["message"]), str(error["code"])
            except (ValueError, KeyError, TypeError):
                message, sent = r.text.strip()[:200] or r.reason_phrase, ""
            if r.status_code == 401:
                message += (
                    "; pass --token or set FRAMEFLEET_TOKEN"
                    if self.has_token
                    else f"; no token given and none in {self.token_file}: pass --token, "
                    "set FRAMEFLEET_TOKEN, or --data-dir where `framefleet serve` keeps it"
                )
            raise RemoteError(
                f"{message} (HTTP {r.status_code})",
                code=_code(sent, r.status_code),
                status=r.status_code,
            )
        return r.json()

    def read(self, path: str, *, reconnect_s: float = RECONNECT_S) -> Any:
        """A GET, tried again while the gateway is away (restarting) for up to
        ``reconnect_s``: what a stream that just ended asks for next."""
        lost_at = time.monotonic()
        while True:
            try:
                return self.call("GET", path)
            except ClusterUnavailable:
                if time.monotonic() - lost_at > reconnect_s:
                    raise
                time.sleep(RECONNECT_WAIT_S)

    def events(self, job_id: str, *, reconnect_s: float = RECONNECT_S) -> Iterator[dict[str, Any]]:
        """The job's events until its terminal one. A lost connection (a network cut, a
        gateway restart) is resumed with ``Last-Event-ID``, so no event is missed; after
        ``reconnect_s`` without the gateway it is a :class:`ClusterUnavailable`."""
        import httpx

        last_id: str | None = None
        lost_at: float | None = None
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            why = "the stream ended"
            try:
                with self.http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    timeout=self._stream_timeout,
                ) as r:
                    if r.status_code == 429:  # the token's streams are all open: the
                        r.read()  # gateway is there; a slot frees as another stream ends
                        lost_at = None
                        time.sleep(RECONNECT_WAIT_S)
                        continue
                    if 400 <= r.status_code < 500:
                        r.read()
                        self.call("GET", f"/v1/jobs/{job_id}")  # raises the gateway's message
                    if r.status_code < 400:
                        lost_at = None
                        for name, event_id, data in _sse(r.iter_lines()):
                            last_id = event_id or last_id
                            if name == "job":
                                yield data
                                if data.get("status") in TERMINAL:
                                    return
                    why = f"HTTP {r.status_code}"
            except httpx.TransportError as exc:
                why = type(exc).__name__
            except ClusterUnavailable as exc:  # lost while asking why a stream was refused
                why = str(exc)
            lost_at = lost_at or time.monotonic()
            if time.monotonic() - lost_at > reconnect_s:
                raise ClusterUnavailable(
                    f"lost the gateway at {self.url} for {reconnect_s:g} s ({why}); "
                    f"`framefleet watch {job_id}` follows it again"
                )
            time.sleep(RECONNECT_WAIT_S)


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(event name, id, JSON data) of each event of a ``text/event-stream``."""
    name, event_id, data = "message", None, list[str]()
    for line in lines:
        if not line:
            if data:
                yield name, event_id, json.loads("\n".join(data))
            name, event_id, data = "message", None, list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)


def when(job: dict[str, Any]) -> str:
    """A queued or running job's predicted start and finish, in words:
    ``  starts ~14:02, done ~14:05 (on gpu-2)``; nothing for an ended job."""
    f = job.get("forecast") or {}
    if job["status"] not in ("queued", "running") or not f.get("finish_at"):
        return ""
    clock = "%H:%M"
    said = f"  done ~{time.strftime(clock, time.localtime(f['finish_at']))}"
    if job["status"] == "queued" and f.get("start_at"):
        said = f"  starts ~{time.strftime(clock, time.localtime(f['start_at']))}," + said[1:]
    return said + (f" (on {f['node']})" if f.get("node") else "")


def _print_job(job: dict[str, Any]) -> None:
    p = job.get("progress") or {}
    pct = f" {p['percent']:.0f}%" if p.get("percent") is not None else ""
    out.print(f"{job['id']}  {job['kind']:<9} {job['status']:<9}{pct}  {job['input']}"
              f"{when(job)}")  # fmt: skip
    if job.get("reason"):
        out.print(f"  {job['reason']}")


def job_from_view(view: dict[str, Any]) -> Job:
    """A gateway's job (its JSON view) as the engine's :class:`~cluster.Job`."""
    placement = view.get("placement")
    return Job(
        id=view["id"],
        spec=JobSpec.from_dict(view["spec"]),
        status=JobStatus(view["status"]),
        attempts=view["attempts"],
        reason=view.get("reason"),
        result=view.get("result"),
        notes=list(view.get("notes") or []),
        placement=JobPlacement.from_dict(placement) if placement else None,
        split=Split.from_dict(view["split"]) if view.get("split") else None,
        created_at=view["created_at"],
        updated_at=view["updated_at"],
        started_at=view.get("started_at"),
        finished_at=view.get("finished_at"),
    )


def watch_job(api: GatewayClient, job_id: str, label: str) -> dict[str, Any]:
    """Follow a job's SSE stream with a live bar; returns the final job."""
    with live_bar(label, err) as show:
        for event in api.events(job_id):
            show(event)
    job: dict[str, Any] = api.read(f"/v1/jobs/{job_id}")
    return job


def register(app: typer.Typer, fail: Any) -> None:
    """Add the client commands to ``app``; ``fail(code)`` ends the process with a code."""
    _register_submit(app, fail)
    _register_follow(app, fail)


def _register_submit(app: typer.Typer, fail: Any) -> None:
    @app.command()
    def submit(
        inputs: Annotated[
            list[str],
            typer.Argument(
                help="Input file(s), as the server sees them, or s3:// URLs; an s3:// prefix "
                "ending in / takes every video under it."
            ),
        ],
        output: Annotated[
            str | None,
            typer.Option("-o", "--output", help="Output file or s3:// URL (one input)."),
        ] = None,
        output_dir: Annotated[
            str | None,
            typer.Option("--output-dir", help="Output folder or s3:// prefix (many inputs)."),
        ] = None,
        ext: Annotated[
            str, typer.Option("--ext", help="Output extension with --output-dir.")
        ] = "mp4",
        kind: Annotated[JobKind, typer.Option(help="Job kind.")] = JobKind.TRANSCODE,
        codec: Codec = "h264",
        quality: Quality = None,
        speed: SpeedOpt = Speed.MEDIUM,
        hardware: HardwareOpt = Hardware.AUTO,
        priority: Priority = 0,
        split: SplitOpt = "auto",
        deinterlace: DeinterlaceOpt = Deinterlace.AUTO,
        sdr: SdrOpt = False,
        tonemap: TonemapOpt = Tonemap.HABLE,
        overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
        wait: Annotated[bool, typer.Option("--wait", help="Follow until done.")] = False,
        callback_url: Annotated[
            str | None,
            typer.Option("--callback-url", help="POST each job's view here when it ends (signed)."),
        ] = None,
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
        as_json: AsJson = False,
    ) -> None:
        """Submit jobs to a running gateway."""
        client = GatewayClient(api, token, data_dir)
        spec = {"kind": str(kind), "codec": codec, "quality": quality, "speed": str(speed),
                "hardware": str(hardware), "priority": priority, "split": split,
                "deinterlace": str(deinterlace), "sdr": sdr, "tonemap": str(tonemap),
                "overwrite": overwrite, "callback_url": callback_url}  # fmt: skip
        paths = [_absolute(p) for p in inputs]
        one = paths[0] if len(paths) == 1 else ""
        prefix = one if is_object_url(one) and one.endswith("/") else None
        if len(paths) == 1 and output_dir is None and prefix is None:
            body = {**spec, "input": paths[0], "output": _absolute(output) if output else None}
            jobs = [client.call("POST", "/v1/jobs", json=body)]
        else:
            if output is not None:
                raise typer.BadParameter("with several inputs, give --output-dir, not --output")
            batch = {"spec": spec, "inputs": [] if prefix else paths, "input_prefix": prefix,
                     "output_ext": ext,
                     "output_dir": _absolute(output_dir) if output_dir else None}  # fmt: skip
            jobs = client.call("POST", "/v1/jobs/batch", json=batch)["jobs"]
        if wait:
            jobs = [watch_job(client, j["id"], Path(j["input"]).name) for j in jobs]
        if as_json:
            out.print_json(json.dumps(jobs if len(jobs) > 1 else jobs[0]))
        else:
            for job in jobs:
                _print_job(job)
        if wait and any(j["status"] != "succeeded" for j in jobs):
            fail(ExitCode.JOB_FAILED)


def _absolute(raw: str) -> str:
    """A local path made absolute (the server resolves it); a URL as it is."""
    return raw if is_url(raw) else str(Path(raw).absolute())


def _register_follow(app: typer.Typer, fail: Any) -> None:
    @app.command()
    def status(
        job_id: Annotated[
            str | None, typer.Argument(help="A job id; all jobs if left out.")
        ] = None,
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
        as_json: AsJson = False,
    ) -> None:
        """Show one job, or list jobs."""
        client = GatewayClient(api, token, data_dir)
        if job_id:
            job = client.call("GET", f"/v1/jobs/{job_id}")
            if as_json:
                out.print_json(json.dumps(job))
            else:
                _print_job(job)
            return
        jobs = client.call("GET", "/v1/jobs", params={"limit": 500})["jobs"]
        if as_json:
            out.print_json(json.dumps(jobs))
            return
        for job in jobs:
            _print_job(job)

    @app.command()
    def watch(
        job_id: Annotated[str, typer.Argument(help="The job to follow.")],
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
    ) -> None:
        """Follow a job live (progress bar from the SSE stream) until it ends."""
        client = GatewayClient(api, token, data_dir)
        job = watch_job(client, job_id, job_id)
        _print_job(job)
        if job["status"] != "succeeded":
            fail(ExitCode.JOB_FAILED)

    @app.command()
    def cancel(
        job_id: Annotated[str, typer.Argument(help="The job to cancel.")],
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
    ) -> None:
        """Cancel a job (a running ffmpeg is killed; nothing partial is left)."""
        _print_job(GatewayClient(api, token, data_dir).call("DELETE", f"/v1/jobs/{job_id}"))

    @app.command()
    def nodes(
        api: Api = DEFAULT_API,
        token: Token = None,
        data_dir: DataDir = None,
        as_json: AsJson = False,
    ) -> None:
        """The cluster's nodes: cores, GPUs with NVENC codecs, ffmpeg, the quality metrics
        they compute, running jobs."""
        found = GatewayClient(api, token, data_dir).call("GET", "/v1/nodes")
        if as_json:
            out.print_json(json.dumps(found))
            return
        table = Table("node", "address", "state", "cores", "GPUs", "NVENC", "ffmpeg", "running",
                      "media roots")  # fmt: skip
        unseen: list[str] = []
        scoring: list[str] = []
        for n in found:
            gpus = ", ".join(f"{g['index']}: {g['name']}" for g in n["gpus"]) or "-"
            nvenc = sorted({c for g in n["gpus"] for c, v in g["nvenc"].items()
                            if v["state"] in ("verified", "declared")})  # fmt: skip
            ffmpeg = (n.get("ffmpeg") or {}).get("version") or "none"
            scores = ", ".join(n.get("metrics", [])) or "nothing"
            scorer = (n.get("quality") or {}).get("version")
            by = f" (ffmpeg {scorer})" if scorer and scorer != ffmpeg else ""
            scoring.append(f"{n['address']} scores {scores}{by}")
            state = n.get("state", "ready")
            for g in n["gpus"]:
                if (g.get("quarantine") or {}).get("state") in ("quarantined", "trial"):
                    state += f"; GPU {g['index']} {g['quarantine']['state']}"
            table.add_row(n["node_id"][:12], n["address"], state,
                          f"{n['cpus_used']:g}/{n['cpus']:g}",
                          gpus, ",".join(nvenc) or "-", ffmpeg,
                          str(len(n["running_jobs"])), _sights(n.get("media", [])))  # fmt: skip
            unseen += [f"{n['address']} does not see {m['root']}: {m['why']}"
                       for m in n.get("media", []) if not m["seen"]]  # fmt: skip
        out.print(table)
        for line in [*scoring, *unseen]:
            out.print(line, highlight=False)


def _sights(media: list[dict[str, Any]]) -> str:
    """Which media roots a node sees: ``/srv/media``, ``/srv/media at /mnt/nas``, or
    ``not /srv/media``."""
    if not media:
        return "-"
    return ", ".join(
        (m["root"] if m["path"] == m["root"] else f"{m['root']} at {m['path']}")
        if m["seen"]
        else f"not {m['root']}"
        for m in media
    )
