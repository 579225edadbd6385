"""Scoring a distorted video against its reference with ffmpeg: the command (pure) and
the per-frame logs it writes, read into :class:`~cluster.model.quality.Tally` s.

One ffmpeg run computes every metric asked: both inputs decoded once, the distorted
scaled back to the reference's size (bicubic), brought to its frame rate where they
differ, both to one pixel format and timestamps from zero
(``setpts=PTS-STARTPTS``), then split to ``libvmaf`` (JSON log, ``n_threads`` the
cores given, ``n_subsample``), ``psnr``, ``ssim`` and ``xpsnr`` (their stats files).
A range of frames is read with an input seek half a frame before its first frame (its
lead) and a duration of whole frames, so pass frame ``n`` is reference frame
``start - lead + n``.

The logs go to a scratch folder of the node's; its path becomes a filter option, so only
plain path characters are allowed in it. The quality ffmpeg is the node's own where it
has every metric, else the static build pinned with framefleet (``imageio-ffmpeg``),
which has ``libvmaf`` with its built-in models and ``xpsnr`` (:func:`quality_build`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import replace
from pathlib import Path

from cluster.errors import EncodeError, InputError, ToolMissing
from cluster.media.argv import COMMON, Command
from cluster.media.encoders import FfmpegBuild, ffmpeg_build
from cluster.media.probe import INPUT_OPTIONS
from cluster.model.jobs import JobSpec
from cluster.model.media import MediaInfo
from cluster.model.quality import (
    CEILING_DB,
    FILTERS,
    METRICS,
    MODEL_VERSIONS,
    Metric,
    Model,
    Reference,
    ScoreOptions,
    ScoreStep,
    Tally,
    model_for,
)

log = logging.getLogger("framefleet.quality")
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9/._+-]+$")
LOG_NAMES: dict[Metric, str] = {m: f"{m.value}.log" for m in Metric}
_STAT = re.compile(r"([A-Za-z_]+):\s*(\S+)")
_XPSNR_Y = re.compile(r"n:\s*(\d+)\s+XPSNR y:\s*(\S+)")


def quality_build(own: FfmpegBuild | None) -> FfmpegBuild | None:
    """The ffmpeg a node scores with: its own when it computes every metric, else the
    static build pinned with framefleet when it computes more (``None``: neither
    computes any)."""
    if own is not None and own.metrics >= frozenset(METRICS):
        return own
    try:
        import imageio_ffmpeg  # a wheel with a static ffmpeg; no import-time work

        pinned = ffmpeg_build(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError, ToolMissing) as exc:
        log.info("no pinned static ffmpeg for quality metrics: %s", exc)
        return own if own is not None and own.metrics else None
    if own is not None and len(own.metrics) >= len(pinned.metrics):
        return own
    return pinned if pinned.metrics else None


def _filter_path(path: str) -> str:
    if not _PLAIN_PATH.match(path):
        raise EncodeError(
            f"the scratch folder {path!r} has characters a filter option cannot hold; "
            "give the node a scratch path of letters, digits, '/', '.', '_' and '-'"
        )
    return path


def pixel_format(step: ScoreStep, distorted: MediaInfo) -> str:
    """Both inputs are compared in this format: 10-bit when either is deeper than 8."""
    video = distorted.require_video()
    deep = max(video.bit_depth, step.reference.bit_depth) > 8
    return "yuv420p10le" if deep else "yuv420p"


def score_command(
    step: ScoreStep,
    distorted_path: str,
    distorted: MediaInfo,
    *,
    logs: str,
    threads: int = 1,
) -> Command:
    """The ffmpeg run that scores ``step`` (see the module docstring), its logs written in
    the folder ``logs``."""
    ref, metrics = step.reference, step.options.metric_set
    frame_s = ref.frame_s
    first = max(0, step.start - step.lead)
    span: list[str] = []
    if not step.whole and not step.open_end:
        count = step.start - first + step.frames + step.tail
        span = ["-t", f"{count * frame_s:.6f}"]

    cores = str(max(1, threads))

    def source(path: str, frame: int) -> list[str]:
        """``path`` read from its frame ``frame`` (half a frame before it), its decoder on
        the cores given (an input option: each input has its own)."""
        at = ["-ss", f"{(frame - 0.5) * frame_s:.6f}"] if frame > 0 else []
        return [*at, *span, "-threads", cores, *INPUT_OPTIONS, "-i",
                f"file:{os.path.abspath(path)}"]  # fmt: skip

    video = distorted.require_video()
    fmt = pixel_format(step, distorted)
    dist: list[str] = []
    if video.frame_rate is not None and tuple(video.frame_rate) != ref.frame_rate:
        dist.append(f"fps={ref.frame_rate[0]}/{ref.frame_rate[1]}")
    if (video.width, video.height) != (ref.width, ref.height) or video.rotation:
        dist.append(f"scale={ref.width}:{ref.height}:flags=bicubic")
    dist += [f"format={fmt}", "setpts=PTS-STARTPTS"]
    refs = [f"format={fmt}", "setpts=PTS-STARTPTS"]
    n = len(metrics)
    if n > 1:
        dist.append(f"split={n}" + "".join(f"[d{i}]" for i in range(n)))
        refs.append(f"split={n}" + "".join(f"[r{i}]" for i in range(n)))
        graph = [f"[0:v]{','.join(dist)}", f"[1:v]{','.join(refs)}"]
    else:
        graph = [f"[0:v]{','.join(dist)}[d0]", f"[1:v]{','.join(refs)}[r0]"]
    folder = _filter_path(logs.rstrip("/"))
    for i, metric in enumerate(metrics):
        path = f"{folder}/{LOG_NAMES[metric]}"
        if metric is Metric.VMAF:
            model = MODEL_VERSIONS[Model(step.model)]
            scorer = (f"libvmaf=model=version={model}:log_fmt=json:log_path={path}:"
                      f"n_threads={max(1, threads)}:n_subsample={step.options.subsample}:"
                      "shortest=1")  # fmt: skip
        else:
            scorer = f"{FILTERS[metric]}=stats_file={path}:shortest=1"
        graph.append(f"[d{i}][r{i}]{scorer}[o{i}]")
    maps = [a for i in range(n) for a in ("-map", f"[o{i}]")]
    argv = [
        "ffmpeg", *COMMON, "-filter_complex_threads", cores,
        *source(distorted_path, first - step.offset), *source(ref.path, first),
        "-filter_complex", ";".join(graph), *maps, "-f", "null", "-",
    ]  # fmt: skip
    frames = step.frames or ref.frames or None
    duration = (frames or 0) * frame_s or distorted.duration_s
    return Command(argv, [], duration_s=duration, total_frames=frames)


def read_logs(step: ScoreStep, logs: str) -> list[Tally]:
    """The tallies of ``step``'s pass from the logs in ``logs``: only its own frames (not
    the lead or tail), numbered as the reference's frames. A missing or empty log is an
    :class:`EncodeError` (the pass did not finish)."""
    first = max(0, step.start - step.lead)
    lo, hi = step.start, float(step.start + step.frames)
    if step.whole or step.open_end:
        hi = math.inf
    tallies = []
    for metric in step.options.metric_set:
        path = Path(logs) / LOG_NAMES[metric]
        tally = Tally(metric)
        try:
            for frame, value in _frames(metric, path):
                at = first + frame
                if lo <= at < hi:
                    tally.add(at, value)
        except (OSError, ValueError, KeyError) as exc:
            raise EncodeError(f"the {metric} log could not be read ({exc})") from exc
        if not tally.count:
            raise EncodeError(f"{metric}: no frame of {step.label} was scored")
        tallies.append(tally)
    return tallies


def _frames(metric: Metric, path: Path) -> list[tuple[int, float]]:
    """(pass frame from 0, value) from one metric's log."""
    if metric is Metric.VMAF:
        data = json.loads(path.read_text())
        return [(int(f["frameNum"]), float(f["metrics"]["vmaf"])) for f in data["frames"]
                if "vmaf" in f.get("metrics", {})]  # fmt: skip
    out = []
    for line in path.read_text().splitlines():
        if metric is Metric.XPSNR:
            found = _XPSNR_Y.search(line)
            if found:
                out.append((int(found[1]) - 1, _db(found[2])))
            continue
        stats = dict(_STAT.findall(line))
        if "n" not in stats:
            continue
        value = _db(stats["psnr_y"]) if metric is Metric.PSNR else float(stats["Y"])
        out.append((int(stats["n"]) - 1, value))
    return out


def _db(text: str) -> float:
    value = float(text)  # "inf" for identical frames
    return CEILING_DB if math.isinf(value) or value > CEILING_DB else value


def comparable(distorted: MediaInfo, reference: MediaInfo) -> Reference:
    """What scoring needs of ``reference``, once the two are known to be the same
    content in time (their lengths agree within 5 %, or a second); else an
    :class:`InputError` saying which does not fit."""
    ref_name, dist_name = Path(reference.path).name, Path(distorted.path).name
    try:
        video = reference.require_video()
    except InputError as exc:
        raise InputError(f"reference {exc}", code=exc.code) from exc
    if not video.frame_rate or not video.frame_rate[0] or not video.frame_rate[1]:
        raise InputError(f"reference {ref_name}: its frame rate is unknown; give a reference "
                         "with a constant frame rate")  # fmt: skip
    distorted.require_video()
    long, short = reference.duration_s, distorted.duration_s
    if long and short and abs(long - short) > max(1.0, 0.05 * long):
        raise InputError(
            f"{dist_name} lasts {short:.2f} s but the reference {ref_name} lasts {long:.2f} s; "
            "score an encode of the whole reference (or cut the reference to match)"
        )
    width, height = video.width, video.height
    if video.rotation in (90, 270):  # ffmpeg turns it upright when decoding
        width, height = height, width
    frames = reference.frame_count or 0
    if not frames and reference.duration_s:
        frames = round(reference.duration_s * video.frame_rate[0] / video.frame_rate[1])
    return Reference(reference.path, width, height, (video.frame_rate[0], video.frame_rate[1]),
                     video.bit_depth, frames)  # fmt: skip


def describe_alignment(step: ScoreStep, distorted: MediaInfo) -> dict[str, str | None]:
    """How the distorted was brought to the reference, in words (the job's result)."""
    video, ref = distorted.require_video(), step.reference
    size = f"{video.width}x{video.height}"
    scaled = None
    if (video.width, video.height) != (ref.width, ref.height) or video.rotation:
        scaled = f"{size} scaled to {ref.width}x{ref.height} (bicubic)"
    rate = None
    if video.frame_rate is not None and tuple(video.frame_rate) != ref.frame_rate:
        rate = (f"{video.frame_rate[0]}/{video.frame_rate[1]} fps brought to "
                f"{ref.frame_rate[0]}/{ref.frame_rate[1]}")  # fmt: skip
    return {"scaled": scaled, "frame_rate": rate, "pixel_format": pixel_format(step, distorted)}


def scored_output(
    spec: JobSpec, media: MediaInfo, partial: str, *, logs: str, threads: int
) -> tuple[ScoreStep, Command]:
    """A transcode's output (its partial file) scored against its input: the step and
    the command. The output is what the encode makes of the input: its frames upright,
    cropped to even sizes, at the input's rate, 8-bit unless 10-bit was kept."""
    video = media.require_video()
    width, height = video.width, video.height
    if video.rotation in (90, 270):
        width, height = height, width
    rate = video.frame_rate if video.frame_rate and all(video.frame_rate) else (25, 1)
    frames = 0 if media.frame_count_estimated else media.frame_count or 0
    reference = Reference(spec.input, width, height, (rate[0], rate[1]), video.bit_depth, frames)
    options = spec.score or ScoreOptions()
    step = ScoreStep(reference, options, str(model_for(Model(options.model), height)))
    made = output_media(spec, media, partial)
    return step, score_command(step, partial, made, logs=logs, threads=threads)


def output_media(spec: JobSpec, media: MediaInfo, path: str) -> MediaInfo:
    """What a transcode of ``media`` holds (at ``path``), as scoring needs it: its frames
    upright, cropped to even sizes, at the input's rate, 8-bit unless 10-bit was kept."""
    video = media.require_video()
    width, height = video.width, video.height
    if video.rotation in (90, 270):
        width, height = height, width
    rate = video.frame_rate if video.frame_rate and all(video.frame_rate) else (25, 1)
    deep = 10 if spec.keep_10bit and video.bit_depth > 8 else 8
    output = replace(video, width=width - width % 2, height=height - height % 2, rotation=0,
                     frame_rate=rate, bit_depth=deep)  # fmt: skip
    return replace(media, path=path, video=output)
