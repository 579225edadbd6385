"""The ``framefleet`` command line (typer + rich).

Errors print as one line (``framefleet: …``) and a non-zero exit code from the one
table in :mod:`api.cli.exits`; only ``--debug`` shows a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from api import paths
from api.cli.discovery import running_gateway
from api.cli.early import AHEAD
from api.cli.exits import ExitCode, exit_code_for
from api.cli.jobs import GatewayClient, job_from_view, watch_job
from api.cli.jobs import register as register_client
from api.cli.livebar import live_bar
from api.cli.node import node_app
from api.cli.operate import register as register_operate
from api.cli.options import (
    Address,
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
from api.cli.serve import register as register_serve
from api.cli.tokens import register as register_tokens
from cluster import (
    Deinterlace,
    FolderWatcher,
    FramefleetError,
    Hardware,
    JobKind,
    JobSpec,
    JobStatus,
    PackageOptions,
    ScoreOptions,
    Speed,
    Tonemap,
    WatchRule,
    available,
    check_rule,
    check_spec,
    is_url,
    make_sample,
    probe,
)

if TYPE_CHECKING:
    from cluster import Fleet, Job, LocalFleet, MediaInfo

app = typer.Typer(
    name="framefleet",
    help="GPU-aware video transcoding on a Ray cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(node_app, name="node")
register_operate(node_app)
register_tokens(app)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    """framefleet: submit encodes to a Ray cluster (a local one by default)."""


def _fleet(data_dir: Path, address: str | None) -> Fleet:
    """The local cluster (or ``address``), configured as ``serve`` would be (FRAMEFLEET_*)."""
    if address is None:
        err.print("[dim]starting a local Ray cluster…[/dim]")
    from api.settings import Settings

    return Settings.load(data_dir=data_dir, ray_address=address).connect(serving=False)


_LOGS: dict[str, bool] = {"debug": False}
ENGINE_LOG_BYTES = 5 * 2**20


def _engine_log(data_dir: Path) -> None:
    """The engine running in this process logs to ``<data dir>/logs/framefleet.log``, as
    on a cluster it logs to its workers' files: the terminal shows the command's own
    lines (``--debug``: the engine's too)."""
    if _LOGS["debug"]:
        return
    from logging.handlers import RotatingFileHandler

    folder = data_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(folder / "framefleet.log", maxBytes=ENGINE_LOG_BYTES,
                                  backupCount=2)  # fmt: skip
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s "
                                           "%(message)s"))  # fmt: skip
    engine = logging.getLogger("framefleet")
    engine.addHandler(handler)
    engine.setLevel(logging.INFO)
    engine.propagate = False


def _wants_cluster(spec: JobSpec) -> bool:
    """A job that asks for a local cluster: one split in chunks of a given length."""
    return spec.split not in ("auto", "off")


def _run_on_gateway(client: GatewayClient, spec: JobSpec, label: str) -> Job:
    """Submit ``spec`` to a running gateway and follow it; Ctrl-C cancels the job. The
    request is the spec itself (a job request has the spec's fields: a test holds them
    equal), so the client does not import the gateway's schemas (80 ms)."""
    body = {k: v for k, v in spec.to_dict().items() if v is not None}
    job_id = client.call("POST", "/v1/jobs", json=body)["id"]
    try:
        return job_from_view(watch_job(client, job_id, label))
    except KeyboardInterrupt:
        err.print("interrupted: cancelling the job…")
        final = client.call("DELETE", f"/v1/jobs/{job_id}")
        err.print(f"job {job_id} {final['status']}; nothing was written")
        raise _Exit(ExitCode.INTERRUPTED) from None


def _run_job(fleet: Fleet | LocalFleet, spec: JobSpec, label: str) -> Job:
    """Submit ``spec`` and follow it with a live progress bar; Ctrl-C cancels the job."""
    job = fleet.submit(spec)
    with live_bar(label, err) as show:
        try:
            return fleet.wait(job.id, on_event=lambda event: show(event.to_dict()))
        except KeyboardInterrupt:
            err.print("interrupted: cancelling the job…")
            final = fleet.cancel(job.id)
            err.print(f"job {final.id} {final.status}; nothing was written")
            raise _Exit(ExitCode.INTERRUPTED) from None


def _report(job: Job) -> None:
    if job.status is not JobStatus.SUCCEEDED:
        _say(f"framefleet: job {job.id} {job.status}: {job.reason}")
        raise _Exit(ExitCode.JOB_FAILED)
    result = job.result or {}
    placed = job.placement
    if "renditions" in result:
        _report_package(result, job)
        if "ladder" in result:
            _report_ladder(result["ladder"])
    elif "reference" in result:
        _report_scores(result.get("metrics") or {})
        out.print(f"[green]✓[/green] {job.spec.input} against {result['reference']}: "
                  f"{job.reason}")  # fmt: skip
    elif "output" in result:
        out.print(
            f"[green]✓[/green] {result['output']}: {result['codec']} "
            f"{result['width']}x{result['height']}, {result['duration_s'] or 0:.2f} s, "
            f"{result['size_bytes'] / 1e6:.1f} MB "
            f"({placed.encoder if placed else result.get('encoder', '?')}"
            f"{' on ' + placed.address if placed else ''}; "
            f"{job.reason})"
        )
    elif "images" in result:
        for image in result["images"]:
            out.print(f"[green]✓[/green] {image}")
    elif "valid" in result:
        if result["valid"]:
            out.print(f"[green]✓[/green] {job.spec.input}: no errors")
        else:
            out.print(f"[red]✗[/red] {job.spec.input}: {len(result['errors'])} error(s)")
            for line in result["errors"]:
                out.print(f"  {line}")
            raise _Exit(ExitCode.JOB_FAILED)
    if "search" in result:  # encoded to a target
        search = result["search"]
        for p in search.get("probes", []):
            chosen = "  ← chosen" if p["crf"] == search.get("crf") else ""
            out.print(f"  round {p['round']}: CRF {p['crf']:>2}  score {p['score']:.2f}  "
                      f"predicted {p['predicted_bytes'] / 1e6:.1f} MB "
                      f"({p['predicted_percent']:.0f} %){chosen}")  # fmt: skip
        out.print(f"  {search.get('why')}")
    if "quality" in result:  # a transcode that was scored
        _report_scores(result["quality"].get("metrics") or {})
    for note in job.notes:
        err.print(f"note: {note}")


def _report_scores(metrics: dict[str, Any]) -> None:
    for name, m in metrics.items():
        if m.get("mean") is None:
            continue
        d = 5 if name == "ssim" else 2
        out.print(f"  {name:<6} mean {m['mean']:.{d}f}  harmonic {m['harmonic_mean']:.{d}f}"
                  f"  min {m['min']:.{d}f}  p1 {m['p1']:.{d}f}  p5 {m['p5']:.{d}f}"
                  f"  ({m['frames']} frames)")  # fmt: skip
        worst = ", ".join(f"{w['frame']} at {w['time_s']:.2f} s ({w['value']:.{d}f})"
                          for w in m.get("worst", [])[:3])  # fmt: skip
        if worst:
            out.print(f"         worst frames: {worst}")


def _report_ladder(ladder: dict[str, Any]) -> None:
    for rung in ladder.get("rungs", []):
        mark = "[green]kept[/green]" if rung["kept"] else "[dim]dropped[/dim]"
        out.print(f"  {rung['name']:<12} CRF {rung['crf']:>2}  score {rung['score']:.2f}  "
                  f"~{rung['predicted_kbps']} kb/s  {mark}: {rung['why']}")  # fmt: skip


def _report_package(result: dict[str, Any], job: Job) -> None:
    playlists = ", ".join(result.get("playlists", {}).values())
    out.print(f"[green]✓[/green] {result['output']}: {playlists}; {result['segments']} segments, "
              f"{result['size_bytes'] / 1e6:.1f} MB ({job.reason})")  # fmt: skip
    for r in result["renditions"]:
        if r["kind"] == "video":
            out.print(f"  {r['key']}: {r['width']}x{r['height']} {r['codecs']}, "
                      f"peak {r['peak_bps'] / 1e3:.0f} kb/s, average "
                      f"{r['average_bps'] / 1e3:.0f} kb/s")  # fmt: skip
        else:
            out.print(f"  {r['key']}: {r['kind']} {r.get('codecs') or r['codec']}"
                      + (f" ({r['language']})" if r.get("language") else ""))  # fmt: skip


def _submit_and_report(
    data_dir: Path | None, address: str | None, spec: JobSpec, label: str
) -> None:
    data_dir = _data_dir(data_dir)
    url = running_gateway(data_dir) if address is None else None
    here = address is None and url is None
    in_process = here and not _wants_cluster(spec)
    probed: dict[str, MediaInfo] = {}

    def build() -> None:
        with contextlib.suppress(FramefleetError, OSError):  # said again by the main thread
            available()

    def read() -> None:
        """This machine's ffmpeg (two runs of it) and, at the same time, the job's local
        files probed, while the settings and the engine are imported: the coordinator uses
        the probes if the files are unchanged."""
        building = threading.Thread(target=build, name="framefleet-build", daemon=True)
        building.start()
        for path in (spec.input, spec.reference) if in_process else ():
            if path and not is_url(path):
                with contextlib.suppress(FramefleetError, OSError):
                    probed[path] = AHEAD.probed(path) or probe(path)
        building.join()

    reading = threading.Thread(target=read, name="framefleet-read", daemon=True)
    if here:
        reading.start()
    if in_process:
        # No cluster named, no gateway running: the coordinator and the encoder run in
        # this process, without Ray (what a local Ray would cost is seconds of start-up).
        _engine_log(data_dir)
        gc.disable()  # the engine's imports and start-up: long-lived, frozen after
        try:
            from api.settings import Settings  # pydantic: imported while ffmpeg runs

            here_fleet = Settings.load(data_dir=data_dir).connect_here()
        finally:
            gc.freeze()
            gc.enable()
        try:
            reading.join()
            for path, media in probed.items():
                here_fleet.seed_probe(path, media)
            check_spec(spec, available())
            _report(_run_job(here_fleet, spec, label))
        finally:
            here_fleet.close()
        return
    # Refuse a bad request before starting a cluster; which encoders a farm has is the
    # coordinator's to judge (each node has its own ffmpeg).
    check_spec(spec, available() if here else None)
    if url is not None:  # a gateway serves this data dir: no second cluster, no start-up
        err.print(f"[dim]using the gateway running at {url}[/dim]")
        client = GatewayClient(url, os.environ.get("FRAMEFLEET_TOKEN"), data_dir)
        _report(_run_on_gateway(client, spec, label))
        return
    fleet: Fleet | LocalFleet = _fleet(data_dir, address)
    try:
        _report(_run_job(fleet, spec, label))
    finally:
        fleet.close()


@app.command()
def encode(
    input: Annotated[Path, typer.Argument(help="The video to transcode.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file (.mp4 .mkv …)")],
    codec: Codec = "h264",
    quality: Quality = None,
    speed: SpeedOpt = Speed.MEDIUM,
    hardware: HardwareOpt = Hardware.AUTO,
    priority: Priority = 0,
    keep_10bit: Annotated[bool, typer.Option(help="Keep 10-bit video (hevc/av1).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    split: SplitOpt = "auto",
    deinterlace: DeinterlaceOpt = Deinterlace.AUTO,
    sdr: SdrOpt = False,
    tonemap: TonemapOpt = Tonemap.HABLE,
    measure_quality: Annotated[
        bool, typer.Option(help="Score the output against INPUT (VMAF) before it is written.")
    ] = False,
    min_vmaf: Annotated[
        float | None,
        typer.Option(help="Fail, writing nothing, when the output's VMAF is lower (0-100)."),
    ] = None,
    target_vmaf: Annotated[
        float | None,
        typer.Option(help="As small as this VMAF allows: the CRF is searched on samples first."),
    ] = None,
    target_xpsnr: Annotated[
        float | None, typer.Option(help="As small as this XPSNR (dB) allows.")
    ] = None,
    max_encoded_percent: Annotated[
        float | None,
        typer.Option(help="With a target: give up when the output would exceed this % of INPUT."),
    ] = None,
    address: Address = None,
    data_dir: DataDir = None,
) -> None:
    """Transcode INPUT to OUTPUT through the cluster, with a live progress bar."""
    score = ScoreOptions.parse({"min_vmaf": min_vmaf}) \
        if measure_quality or min_vmaf is not None else None  # fmt: skip
    spec = JobSpec(
        kind=JobKind.TRANSCODE,
        input=str(input.absolute()),
        output=str(output.absolute()),
        codec=codec,
        quality=quality,
        speed=speed,
        hardware=hardware,
        priority=priority,
        keep_10bit=keep_10bit,
        overwrite=overwrite,
        split=split,
        deinterlace=deinterlace,
        sdr=sdr,
        tonemap=tonemap,
        score=score,
        target_vmaf=target_vmaf,
        target_xpsnr=target_xpsnr,
        max_encoded_percent=max_encoded_percent,
    )
    _submit_and_report(data_dir, address, spec, input.name)


@app.command()
def quality(
    input: Annotated[Path, typer.Argument(help="The distorted video (an encode) to score.")],
    reference: Annotated[
        Path, typer.Option("--reference", "-r", help="The reference it was made from.")
    ],
    metrics: Annotated[
        str, typer.Option(help="vmaf, psnr, ssim, xpsnr, comma-separated.")
    ] = "vmaf",
    model: Annotated[
        str, typer.Option(help="VMAF model: auto, 1080p, 4k or neg (no enhancement gain).")
    ] = "auto",
    subsample: Annotated[int, typer.Option(help="VMAF on every Nth frame.")] = 1,
    min_vmaf: Annotated[
        float | None, typer.Option(help="Exit 1 when the mean VMAF is lower (0-100).")
    ] = None,
    priority: Priority = 0,
    address: Address = None,
    data_dir: DataDir = None,
) -> None:
    """Score INPUT against a reference (VMAF, PSNR, SSIM, XPSNR), long files in parallel."""
    spec = JobSpec(
        kind=JobKind.QUALITY,
        input=str(input.absolute()),
        reference=str(reference.absolute()),
        priority=priority,
        score=ScoreOptions.parse(
            {"metrics": metrics, "model": model, "subsample": subsample, "min_vmaf": min_vmaf}
        ),
    )
    _submit_and_report(data_dir, address, spec, input.name)


@app.command()
def validate(
    input: Annotated[Path, typer.Argument(help="The file to decode in full.")],
    address: Address = None,
    data_dir: DataDir = None,
) -> None:
    """Decode INPUT in full and list every error (exit 1 if any)."""
    spec = JobSpec(kind=JobKind.VALIDATE, input=str(input.absolute()))
    _submit_and_report(data_dir, address, spec, input.name)


@app.command()
def thumbnail(
    input: Annotated[Path, typer.Argument(help="The video to take images from.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the JPEGs.")],
    at: Annotated[float | None, typer.Option(help="One image at this second.")] = None,
    count: Annotated[int | None, typer.Option(help="N images, evenly spaced.")] = None,
    width: Annotated[int | None, typer.Option(help="Scale to this width.")] = None,
    address: Address = None,
    data_dir: DataDir = None,
) -> None:
    """Write JPEG thumbnails of INPUT into a folder."""
    spec = JobSpec(
        kind=JobKind.THUMBNAIL,
        input=str(input.absolute()),
        output=str(output.absolute()),
        thumbnail_at=at,
        thumbnail_count=count,
        thumbnail_width=width,
    )
    _submit_and_report(data_dir, address, spec, input.name)


@app.command()
def package(
    input: Annotated[Path, typer.Argument(help="The master to package.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The package's folder.")],
    ladder: Annotated[
        str | None,
        typer.Option(help="Rungs as HEIGHT[:CODEC[:KBPS]],… (default: from the source)."),
    ] = None,
    codec: Annotated[
        str, typer.Option("--codec", help="Codecs of a derived ladder: h264,hevc,av1.")
    ] = "h264",
    segment: Annotated[float, typer.Option(help="Segment length in seconds.")] = 6.0,
    formats: Annotated[str, typer.Option("--format", help="hls, dash or hls,dash.")] = "hls,dash",
    split: SplitOpt = "auto",
    speed: SpeedOpt = Speed.MEDIUM,
    hardware: HardwareOpt = Hardware.AUTO,
    priority: Priority = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package.")] = False,
    deinterlace: DeinterlaceOpt = Deinterlace.AUTO,
    tonemap: TonemapOpt = Tonemap.HABLE,
    target_vmaf: Annotated[
        float | None,
        typer.Option(help="A per-title ladder: each rung's CRF searched for this VMAF."),
    ] = None,
    min_gain: Annotated[
        float, typer.Option(help="Per-title: drop a rung adding less VMAF than this.")
    ] = 1.0,
    min_step: Annotated[
        float, typer.Option(help="Per-title: each rung's bitrate this many times the one below's.")
    ] = 1.2,
    hdr: Annotated[
        bool,
        typer.Option("--hdr", help="From an HDR master, keep its HEVC/AV1 rungs HDR (10-bit)."),
    ] = False,
    address: Address = None,
    data_dir: DataDir = None,
) -> None:
    """Package INPUT as an ABR ladder (HLS and DASH on shared CMAF segments) in a folder."""
    spec = JobSpec(
        kind=JobKind.PACKAGE,
        input=str(input.absolute()),
        output=str(output.absolute()),
        speed=speed,
        hardware=hardware,
        priority=priority,
        overwrite=overwrite,
        split=split,
        deinterlace=deinterlace,
        tonemap=tonemap,
        package=PackageOptions.parse(
            {
                "ladder": ladder or "",
                "codecs": codec,
                "segment_s": segment,
                "formats": formats,
                "min_gain": min_gain,
                "min_step": min_step,
                "hdr": hdr,
            }
        ),
        target_vmaf=target_vmaf,
    )
    _submit_and_report(data_dir, address, spec, input.name)


@app.command("probe")
def probe_command(
    file: Annotated[Path, typer.Argument(help="A media file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full probe as JSON.")] = False,
) -> None:
    """Show what FILE holds (runs ffprobe here; no cluster needed)."""
    info = probe(file)
    if as_json:
        out.print_json(json.dumps(info.to_dict()))
        return
    out.print(f"{file}: {info.format_name}, {info.duration_s or 0:.3f} s, {info.size_bytes} bytes")
    if v := info.video:
        fps = f"{v.fps:.3f}" if v.fps else "?"
        count = f"{'~' if info.frame_count_estimated else ''}{info.frame_count or '?'}"
        out.print(
            f"  video #{v.index}: {v.codec} {v.width}x{v.height} {v.pix_fmt} "
            f"{v.bit_depth}-bit, {fps} fps, {count} frames"
            + (f", rotated {v.rotation}°" if v.rotation else "")
        )
        for line in _picture_lines(info):
            out.print(f"    {line}", markup=False)
    for a in info.audio:
        out.print(
            f"  audio #{a.index}: {a.codec} {a.channels} ch {a.sample_rate} Hz {a.language or ''}"
        )
    for s in info.subtitles:
        out.print(f"  subtitle #{s.index}: {s.codec} {s.language or ''}")


def _picture_lines(info: MediaInfo) -> list[str]:
    """The video's scan and how it was known ("scan: interlaced, top field first (tagged
    tt)"; "...(tagged progressive; idet TFF 86, BFF 0, ...)"), and its colour."""
    v = info.video
    if v is None:
        return []
    lines = []
    if (scan := v.scan) is not None:
        said = [f"tagged {scan.tagged}"] if scan.tagged else ["not tagged"]
        if (c := scan.idet) is not None:
            repeated = c.repeated_top + c.repeated_bottom
            said.append(f"idet TFF {c.tff}, BFF {c.bff}, progressive {c.progressive}, "
                        f"undetermined {c.undetermined}"
                        + (f", repeated fields {repeated}" if repeated else ""))  # fmt: skip
        lines.append(f"scan: {scan} ({'; '.join(said)})")
    if v.colour is not None:
        lines.append(f"colour: {v.colour}")
    return lines


@app.command()
def demo(data_dir: DataDir = None) -> None:
    """Make a 20 s test clip and encode it on a local cluster, showing live progress."""
    data_dir = _data_dir(data_dir)
    folder = data_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    sample = folder / "sample.mp4"
    if not sample.exists():
        err.print(f"making a 20 s 720p test clip at {sample}…")
        make_sample(sample, seconds=20)
    spec = JobSpec(
        kind=JobKind.TRANSCODE,
        input=str(sample.absolute()),
        output=str((folder / "sample-hevc.mkv").absolute()),
        codec="hevc",
        speed=Speed.FAST,
        overwrite=True,
    )
    _submit_and_report(data_dir, None, spec, "sample.mp4 → hevc")


@app.command("watch-folder")
def watch_folder(
    folder: Annotated[Path, typer.Argument(help="The folder to watch for new videos.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where outputs go.")],
    kind: Annotated[JobKind, typer.Option(help="Job for each file.")] = JobKind.TRANSCODE,
    codec: Codec = "h264",
    quality: Quality = None,
    speed: SpeedOpt = Speed.MEDIUM,
    hardware: HardwareOpt = Hardware.AUTO,
    priority: Priority = 0,
    split: SplitOpt = "auto",
    output_ext: Annotated[str, typer.Option(help="Output extension.")] = "mp4",
    ext: Annotated[
        list[str] | None, typer.Option("--ext", help="Only these input extensions (repeatable).")
    ] = None,
    stable_s: Annotated[
        float, typer.Option("--stable-s", help="Seconds a file must stay unchanged.")
    ] = 5.0,
    recursive: Annotated[bool, typer.Option(help="Watch sub-folders too.")] = False,
    address: Address = None,
    data_dir: DataDir = None,
) -> None:
    """Submit a job for each new video in FOLDER once it is completely written (never twice,
    even across restarts). Ctrl-C stops watching; submitted jobs go on."""

    rule = WatchRule(
        folder=folder.absolute(),
        output_dir=output_dir.absolute(),
        template={
            "kind": kind,
            "codec": codec,
            "quality": quality,
            "speed": speed,
            "hardware": hardware,
            "priority": priority,
            "split": split,
        },
        output_ext=output_ext,
        **({"extensions": tuple(ext)} if ext else {}),
        stable_s=stable_s,
        recursive=recursive,
    )
    check_rule(rule)
    data_dir = _data_dir(data_dir)
    fleet = _fleet(data_dir, address)
    watcher = FolderWatcher(rule, data_dir / "watch.sqlite3", fleet.submit, say=err.print)
    stop = threading.Event()
    try:
        watcher.run(stop)
    except KeyboardInterrupt:
        stop.set()
        err.print("stopped watching; submitted jobs go on in the cluster")
    finally:
        watcher.close()
        fleet.close()


def _data_dir(given: Path | None) -> Path:
    return paths.data_dir(given)


def _fail(code: int) -> None:
    raise _Exit(code)


register_serve(app)
register_client(app, _fail)


def _say(line: str) -> None:
    """One unwrapped line on stderr, whatever the terminal width."""
    print(line, file=sys.stderr)


def main() -> None:
    """Entry point: run the app; turn every error into one line and an exit code."""
    debug = "--debug" in sys.argv[1:]
    _LOGS["debug"] = debug
    sys.argv = [arg for arg in sys.argv if arg != "--debug"]  # accepted anywhere on the line
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    _leave(_run(debug))


def _run(debug: bool) -> int:
    """The command's exit code."""
    try:
        code = app(standalone_mode=False)  # a command's `typer.Exit(code)` comes back here
    except _Exit as exc:
        return exc.code
    except (KeyboardInterrupt, typer.Abort):
        return ExitCode.INTERRUPTED
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.exceptions.TyperException as exc:  # usage errors: typer shows them its way
        exc.show()  # type: ignore[attr-defined]
        return ExitCode.REFUSED
    except FramefleetError as exc:
        if debug:
            raise
        _say(f"framefleet: {exc}")
        return exit_code_for(exc)
    except Exception as exc:
        if debug:
            raise
        _say(f"framefleet: internal error: {type(exc).__name__}: {exc} (--debug shows more)")
        return ExitCode.JOB_FAILED
    return code if isinstance(code, int) else 0


def _leave(code: int) -> NoReturn:
    """Exit with ``code``. When this thread is the last one that must end, the exit
    handlers run and the output is flushed, and then the process ends without the
    interpreter's teardown: freeing every object of the engine one by one took 80 ms of
    each one-shot command (as long as the command itself, for a short clip)."""
    if any(not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging's flush, finalizers of temporary files
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)
