"""Quality scoring's pure parts: the score options and the spec's rules, tallies merged
exactly and pooled as a hand computation has them, the scoring ffmpeg's argv, the logs
read back for a range, the cut into ranges, and where a score may run (the planner, the
admission check)."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from cluster import Hardware, JobKind, JobSpec
from cluster.control.graphs.quality import LEAD_FRAMES, MIN_RANGE_S, PARALLEL_FROM_S, ranges
from cluster.control.rules.dispatch import demand_for
from cluster.errors import EncodeError, ErrorCode, SpecError
from cluster.media.quality import (
    comparable,
    describe_alignment,
    read_logs,
    score_command,
    scored_output,
)
from cluster.model.capability import Capability, CodecState
from cluster.model.jobs import Job
from cluster.model.media import MediaInfo, VideoStream
from cluster.model.quality import (
    RESOLUTION,
    WORST_FRAMES,
    Metric,
    Model,
    Reference,
    ScoreOptions,
    ScoreStep,
    Tally,
    merged,
    model_for,
    pooled,
)
from cluster.scheduling.admission import check_metrics
from cluster.scheduling.planner import Demand, GpuState, NodeState, Planner

ALL = frozenset({"vmaf", "psnr", "ssim", "xpsnr"})
CHOICES = "vmaf, psnr, ssim, xpsnr"
NO_VMAF = frozenset({"psnr", "ssim"})


def options(**data: Any) -> ScoreOptions:
    return ScoreOptions.parse(data)


def spec(kind: JobKind, input: str = "/m/in.mp4", **fields: Any) -> JobSpec:
    """A spec as JSON gives it: ``score`` a dict, parsed and checked by the spec."""
    return JobSpec(kind=kind, input=input, **fields)


# ---- the score options -----------------------------------------------------------------


def test_score_options_default_to_vmaf_every_frame_with_the_model_chosen_by_size() -> None:
    assert options() == ScoreOptions(("vmaf",), "auto", 1, None)
    job = JobSpec(kind=JobKind.QUALITY, input="/m/enc.mp4", reference="/m/ref.mp4")
    assert job.score == ScoreOptions(("vmaf",), "auto", 1, None)
    # auto: the 4K model only above 1440 lines; a model asked is kept whatever the size.
    assert [model_for(Model.AUTO, h) for h in (360, 1080, 1440, 1600, 2160)] == [
        Model.HD, Model.HD, Model.HD, Model.UHD, Model.UHD]  # fmt: skip
    assert model_for(Model.NEG, 2160) is Model.NEG and model_for(Model.UHD, 720) is Model.UHD


def test_metrics_are_read_from_a_list_or_text_in_any_case_each_once() -> None:
    assert options(metrics="psnr, SSIM,vmaf").metrics == ("psnr", "ssim", "vmaf")
    assert options(metrics=["XPSNR", "psnr", "xpsnr"]).metrics == ("xpsnr", "psnr")
    assert options(model="4K").model == "4k"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"metrics": ["vmaf", "bogus"]}, f"unknown metric 'bogus'; choose from {CHOICES}"),
        ({"metrics": "psnr,msssim"}, f"unknown metric 'msssim'; choose from {CHOICES}"),
        ({"model": "8k"}, "unknown VMAF model '8k'; choose from auto, 1080p, 4k, neg"),
        ({"metric": "psnr"}, "score: unknown field(s) metric"),
        ({"min_vmaf": 101}, "min_vmaf must be from 0 to 100"),
        ({"min_vmaf": -1}, "min_vmaf must be from 0 to 100"),
        ({"min_vmaf": float("nan")}, "min_vmaf must be from 0 to 100"),
        ({"min_vmaf": "high"}, "min_vmaf must be a number from 0 to 100"),
    ],
)
def test_a_bad_score_option_is_refused_in_one_line_naming_it(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        ScoreOptions.parse(data)
    assert str(caught.value) == message
    assert caught.value.code is ErrorCode.INVALID_SPEC
    with pytest.raises(SpecError, match="^" + re.escape(message) + "$"):
        spec(JobKind.QUALITY, reference="/m/ref.mp4", score=data)


def test_min_vmaf_adds_vmaf_first_when_it_is_not_asked() -> None:
    scored = options(metrics=["psnr", "ssim"], min_vmaf=93)
    assert scored.metrics == ("vmaf", "psnr", "ssim") and scored.min_vmaf == 93.0
    kept = options(metrics=["psnr", "vmaf"], min_vmaf="90.5")
    assert kept.metrics == ("psnr", "vmaf") and kept.min_vmaf == 90.5
    assert options(metrics=["psnr"]).metrics == ("psnr",)  # no floor: no VMAF added


@pytest.mark.parametrize("subsample", [1, 2, 1000, "5"])
def test_subsample_from_1_to_1000_is_taken(subsample: object) -> None:
    assert options(subsample=subsample).subsample == int(str(subsample))


@pytest.mark.parametrize("subsample", [0, -1, 1001, 2.5, "two"])
def test_subsample_outside_1_to_1000_or_not_whole_is_refused(subsample: object) -> None:
    # 0 is "every 0th frame": the message says 1 is the least; 2.5 is not a whole number
    # of frames, which the other message says it must be.
    try:
        answer = f"silently taken as subsample={options(subsample=subsample).subsample}"
    except SpecError as exc:
        answer = str(exc)
    assert answer.startswith("subsample must be "), f"subsample {subsample!r}: {answer}"


@pytest.mark.parametrize("metrics", [5, 2.5, [["vmaf"]]])
def test_metrics_that_are_neither_a_list_nor_text_are_a_spec_error(metrics: object) -> None:
    """A malformed request through the Python API is refused like any other bad field
    (SpecError: a 422, a CLI exit 2), never a TypeError from deep inside."""
    try:
        with pytest.raises(SpecError, match="metric"):
            options(metrics=metrics)
    except TypeError as exc:
        pytest.fail(f"metrics={metrics!r} raised TypeError ({exc}), not a SpecError")


# ---- the spec's rules --------------------------------------------------------------------


def test_a_quality_job_needs_a_reference_and_writes_no_file() -> None:
    with pytest.raises(SpecError, match=r"^a quality job needs a reference to score the input"):
        JobSpec(kind=JobKind.QUALITY, input="/m/enc.mp4")
    with pytest.raises(SpecError, match=r"^a quality job writes no file; drop the output$"):
        JobSpec(kind=JobKind.QUALITY, input="/m/enc.mp4", reference="/m/ref.mp4",
                output="/m/out.mp4")  # fmt: skip
    with pytest.raises(SpecError, match="looks like a URL or ffmpeg protocol"):
        JobSpec(kind=JobKind.QUALITY, input="/m/enc.mp4", reference="concat:/a.mp4|/b.mp4")
    with pytest.raises(SpecError, match="reference is empty"):
        JobSpec(kind=JobKind.QUALITY, input="/m/enc.mp4", reference="")


@pytest.mark.parametrize(
    ("kind", "output"),
    [(JobKind.TRANSCODE, "/m/o.mp4"), (JobKind.PROBE, None), (JobKind.PACKAGE, "/m/pkg")],
)
def test_a_reference_belongs_to_quality_jobs_only(kind: JobKind, output: str | None) -> None:
    with pytest.raises(SpecError, match=f"^a reference is for quality jobs, not {kind}$"):
        JobSpec(kind=kind, input="/m/in.mp4", output=output, reference="/m/ref.mp4")


def test_a_transcode_may_be_scored_other_kinds_may_not() -> None:
    plain = JobSpec(kind=JobKind.TRANSCODE, input="/m/in.mp4", output="/m/o.mp4")
    assert plain.score is None  # scoring costs a second decode: only when asked
    scored = spec(JobKind.TRANSCODE, output="/m/o.mp4", score={"min_vmaf": 90})
    assert scored.score == ScoreOptions(("vmaf",), "auto", 1, 90.0)
    everything = JobSpec(kind=JobKind.TRANSCODE, input="/m/in.mp4", output="/m/o.mp4",
                         score=ScoreOptions())  # fmt: skip
    assert everything.score == ScoreOptions()
    for kind, output in ((JobKind.THUMBNAIL, "/m/thumbs"), (JobKind.VALIDATE, None)):
        with pytest.raises(SpecError, match=f"^score options are for quality and transcode "
                                            f"jobs, not {kind}$"):  # fmt: skip
            JobSpec(kind=kind, input="/m/in.mp4", output=output, score=ScoreOptions())


def test_quality_and_scored_specs_survive_json_both_ways() -> None:
    asked = {"metrics": "psnr,ssim", "model": "neg", "subsample": 4, "min_vmaf": 80}
    specs = [
        spec(JobKind.QUALITY, reference="/m/ref.mp4", score=asked),
        spec(JobKind.TRANSCODE, output="/m/o.mkv", codec="hevc", score={"metrics": ["xpsnr"]}),
        spec(JobKind.TRANSCODE, output="/m/o.mkv"),
    ]
    for each in specs:
        wire = json.loads(json.dumps(each.to_dict()))
        back = JobSpec.from_dict(wire)
        assert back == each
        assert back.reference == each.reference and back.score == each.score
    assert specs[0].score == ScoreOptions(("vmaf", "psnr", "ssim"), "neg", 4, 80.0)


# ---- tallies: merged exactly, pooled as by hand ------------------------------------------


def values(n: int, seed: int, low: int = 6000, high: int = 9990, scale: float = 100) -> list[float]:
    """``n`` scores on the metric's grid (hundredths: VMAF and dB), seeded."""
    rng = random.Random(seed)
    return [rng.randint(low, high) / scale for _ in range(n)]


def tally_of(metric: Metric, scores: list[float], first: int = 0) -> Tally:
    tally = Tally(metric)
    for i, value in enumerate(scores):
        tally.add(first + i, value)
    return tally


def nearest_rank(sorted_values: list[float], p: int) -> float:
    """The nearest-rank percentile, in integer arithmetic: the ceil(p n / 100)-th value."""
    rank = max(1, -(-p * len(sorted_values) // 100))
    return sorted_values[rank - 1]


def test_pooled_figures_are_those_of_a_hand_computation() -> None:
    scores = values(777, seed=3)
    scores[123] = scores[456] = 12.34  # a tie among the worst frames
    frame_s = 1001 / 30000
    figures = pooled(tally_of(Metric.VMAF, scores), frame_s)
    ordered = sorted(scores)
    assert figures["frames"] == 777
    assert figures["mean"] == pytest.approx(statistics.fmean(scores), abs=5e-4)
    libvmaf_harmonic = statistics.harmonic_mean([1 + v for v in scores]) - 1
    assert figures["harmonic_mean"] == pytest.approx(libvmaf_harmonic, abs=5e-4)
    assert figures["min"] == min(scores) and figures["max"] == max(scores)
    assert figures["p1"] == pytest.approx(nearest_rank(ordered, 1), abs=1e-9)
    assert figures["p5"] == pytest.approx(nearest_rank(ordered, 5), abs=1e-9)
    worst = sorted((v, i) for i, v in enumerate(scores))[:WORST_FRAMES]
    assert [(w["value"], w["frame"]) for w in figures["worst"]] == worst
    assert [w["time_s"] for w in figures["worst"]] == [round(i * frame_s, 3) for _, i in worst]
    assert figures["worst"][:2] == [{"frame": 123, "time_s": round(123 * frame_s, 3),
                                     "value": 12.34},
                                    {"frame": 456, "time_s": round(456 * frame_s, 3),
                                     "value": 12.34}]  # fmt: skip


def test_ssim_keeps_five_digits_and_its_percentiles_its_resolution() -> None:
    scores = values(300, seed=5, low=90000, high=99999, scale=100000)
    figures = pooled(tally_of(Metric.SSIM, scores), 0.04)
    ordered = sorted(scores)
    assert figures["mean"] == round(statistics.fmean(scores), 5)
    assert figures["p1"] == pytest.approx(nearest_rank(ordered, 1), abs=RESOLUTION[Metric.SSIM] / 2)
    assert figures["p5"] == pytest.approx(nearest_rank(ordered, 5), abs=RESOLUTION[Metric.SSIM] / 2)
    assert figures["min"] == min(scores)


def test_a_tally_of_no_frame_pools_to_no_figures() -> None:
    assert pooled(Tally(Metric.VMAF), 0.04) == {"frames": 0}
    assert merged([]) == {}


@pytest.mark.parametrize("cuts", [[1], [250, 500, 750], [3, 4, 900], [999]])
def test_tallies_of_ranges_merge_to_the_tally_of_one_pass(cuts: list[int]) -> None:
    """What ranges scored on several nodes pool to is what one pass gives: mean, harmonic
    mean, min, max, p1, p5 and the worst frames (sent across as JSON, as Ray does)."""
    frame_s = 0.04
    for metric, scores in ((Metric.VMAF, values(1000, seed=7)),
                           (Metric.PSNR, values(1000, seed=8, low=2500, high=10000))):  # fmt: skip
        whole = pooled(tally_of(metric, scores), frame_s)
        bounds = [0, *cuts, len(scores)]
        parts = [tally_of(metric, scores[a:b], first=a) for a, b in itertools.pairwise(bounds)]
        random.Random(len(cuts)).shuffle(parts)  # ranges end in any order
        wire = [Tally.from_dict(json.loads(json.dumps(t.to_dict()))) for t in parts]
        pooled_ranges = pooled(merged(wire)[metric], frame_s)
        assert pooled_ranges["frames"] == whole["frames"] == 1000
        for name in ("mean", "harmonic_mean"):
            assert pooled_ranges[name] == pytest.approx(whole[name], abs=1e-3), name
        for name in ("min", "max", "p1", "p5", "worst"):
            assert pooled_ranges[name] == whole[name], name


def test_merged_keeps_each_metric_apart() -> None:
    vmaf, psnr = tally_of(Metric.VMAF, [90.0, 80.0]), tally_of(Metric.PSNR, [40.0], first=5)
    both = merged([vmaf, psnr, tally_of(Metric.VMAF, [70.0], first=2)])
    assert set(both) == {Metric.VMAF, Metric.PSNR}
    assert both[Metric.VMAF].count == 3 and both[Metric.VMAF].low == 70.0
    assert both[Metric.PSNR].count == 1 and both[Metric.PSNR].worst == [(40.0, 5)]


# ---- the scoring command -----------------------------------------------------------------


REF = Reference("/media/ref.mkv", 640, 360, (25, 1), 8, 1000)


def distorted(
    width: int = 640,
    height: int = 360,
    rate: tuple[int, int] | None = (25, 1),
    depth: int = 8,
    path: str = "/media/enc.mp4",
) -> MediaInfo:
    video = VideoStream(0, "h264", width, height, "yuv420p", depth, rate)
    return MediaInfo(path, "mov,mp4", 40.0, 10**6, 2 * 10**5, video, frame_count=1000)


def step(**kw: Any) -> ScoreStep:
    data: dict[str, Any] = {"reference": REF, "options": ScoreOptions(), "model": "1080p"} | kw
    return ScoreStep(**data)


def argv_of(s: ScoreStep, media: MediaInfo | None = None, **kw: Any) -> list[str]:
    logs = kw.pop("logs", "/scratch/job.1/logs")
    return score_command(s, "/media/enc.mp4", media or distorted(), logs=logs, **kw).argv


def chains(argv: list[str]) -> tuple[str, str, list[str]]:
    """(the distorted's filter chain, the reference's, the scorers) of a score's graph."""
    graph = argv[argv.index("-filter_complex") + 1].split(";")
    dist = next(g for g in graph if g.startswith("[0:v]"))
    ref = next(g for g in graph if g.startswith("[1:v]"))
    return dist, ref, [g for g in graph if g not in (dist, ref)]


def inputs(argv: list[str]) -> list[list[str]]:
    """Each input's options, up to and including its ``-i`` value."""
    out, start = [], argv.index("-filter_complex_threads") + 2
    for i, arg in enumerate(argv):
        if arg == "-i":
            out.append(argv[start : i + 2])
            start = i + 2
    return out


def test_paths_reach_ffmpeg_only_as_file_inputs_never_as_options_or_filters() -> None:
    odd = "-y evil,name;[x]:v=1'.mp4"
    argv = score_command(
        step(reference=Reference(f"/media/{odd}", 640, 360, (25, 1), 8, 1000)),
        odd,  # relative: made absolute
        distorted(path=odd),
        logs="/scratch/job.1/logs",
    ).argv
    given = [argv[i + 1] for i, a in enumerate(argv) if a == "-i"]
    assert given == [f"file:{Path.cwd() / odd}", f"file:/media/{odd}"]  # distorted, then ref
    assert all(odd not in a for a in argv if not a.startswith("file:"))
    assert argv[-3:] == ["-f", "null", "-"]  # nothing is written but the logs
    for each in inputs(argv):
        assert each[each.index("-protocol_whitelist") + 1] == "file,pipe"


@pytest.mark.parametrize("logs", ["/scratch/a:b", "/scratch/it's", "relative/logs", "/a b"])
def test_a_log_folder_a_filter_option_cannot_hold_is_refused(logs: str) -> None:
    with pytest.raises(EncodeError, match="has characters a filter option cannot hold"):
        argv_of(step(), logs=logs)


def test_the_same_size_and_rate_are_compared_as_they_are() -> None:
    dist, ref, scorers = chains(argv_of(step()))
    assert "scale=" not in dist and "fps=" not in dist
    assert dist == "[0:v]format=yuv420p,setpts=PTS-STARTPTS[d0]"
    assert ref == "[1:v]format=yuv420p,setpts=PTS-STARTPTS[r0]"
    (vmaf,) = scorers
    assert vmaf.startswith("[d0][r0]libvmaf=model=version=vmaf_v0.6.1:log_fmt=json:")
    assert "log_path=/scratch/job.1/logs/vmaf.log" in vmaf
    assert describe_alignment(step(), distorted()) == {
        "scaled": None, "frame_rate": None, "pixel_format": "yuv420p"}  # fmt: skip


def test_a_smaller_encode_is_scaled_to_the_reference_bicubic_and_the_reference_never() -> None:
    dist, ref, _ = chains(argv_of(step(), distorted(320, 180)))
    assert "scale=640:360:flags=bicubic" in dist and "scale" not in ref
    assert dist.index("scale=") < dist.index("setpts=")
    assert describe_alignment(step(), distorted(320, 180))["scaled"] == (
        "320x180 scaled to 640x360 (bicubic)")  # fmt: skip


def test_another_frame_rate_is_brought_to_the_references_and_only_then() -> None:
    dist, ref, _ = chains(argv_of(step(), distorted(rate=(30000, 1001))))
    assert "fps=25/1" in dist and "fps" not in ref
    same, _, _ = chains(argv_of(step(), distorted(rate=(25, 1))))
    assert "fps" not in same


def test_a_deeper_input_compares_both_in_ten_bits() -> None:
    dist, ref, _ = chains(argv_of(step(), distorted(depth=10)))
    assert "format=yuv420p10le" in dist and "format=yuv420p10le" in ref


@pytest.mark.parametrize(
    ("model", "version"),
    [("1080p", "vmaf_v0.6.1"), ("4k", "vmaf_4k_v0.6.1"), ("neg", "vmaf_v0.6.1neg")],
)
def test_the_vmaf_model_is_the_version_asked(model: str, version: str) -> None:
    _, _, (vmaf,) = chains(argv_of(step(model=model)))
    assert f"libvmaf=model=version={version}:" in vmaf


def test_every_metric_from_one_decode_with_subsample_and_threads() -> None:
    asked = options(metrics="vmaf,psnr,ssim,xpsnr", subsample=5)
    argv = argv_of(step(options=asked), threads=3)
    dist, ref, scorers = chains(argv)
    assert dist.endswith("split=4[d0][d1][d2][d3]") and ref.endswith("split=4[r0][r1][r2][r3]")
    assert [s.split("]", 2)[2].split("=", 1)[0] for s in scorers] == [
        "libvmaf", "psnr", "ssim", "xpsnr"]  # fmt: skip
    assert "n_subsample=5" in scorers[0] and "n_threads=3" in scorers[0]
    assert "stats_file=/scratch/job.1/logs/psnr.log" in scorers[1]
    assert argv.count("-map") == 4 and argv.count("-i") == 2
    assert argv[argv.index("-filter_complex_threads") + 1] == "3"
    for each in inputs(argv):  # each input's decoder on the cores given, not on every core
        assert each[each.index("-threads") + 1] == "3"


def test_a_range_is_read_from_half_a_frame_before_its_lead_for_its_frames_and_tail() -> None:
    frame_s = 1 / 25
    middle = step(start=250, frames=250, lead=4, tail=4, index=1)
    for each in inputs(argv_of(middle)):
        assert each[each.index("-ss") + 1] == f"{(250 - 4 - 0.5) * frame_s:.6f}"
        assert each[each.index("-t") + 1] == f"{(4 + 250 + 4) * frame_s:.6f}"
    first = step(start=0, frames=250, lead=4, tail=4, index=0)
    for each in inputs(argv_of(first)):  # nothing before frame 0 to lead with
        assert "-ss" not in each and each[each.index("-t") + 1] == f"{254 * frame_s:.6f}"
    last = step(start=750, frames=250, lead=4, tail=4, index=3, open_end=True)
    for each in inputs(argv_of(last)):  # to the end of the file
        assert each[each.index("-ss") + 1] == f"{745.5 * frame_s:.6f}" and "-t" not in each
    for each in inputs(argv_of(step())):  # the whole file
        assert "-ss" not in each and "-t" not in each


def test_a_transcodes_output_is_scored_upright_against_its_input() -> None:
    job = spec(JobKind.TRANSCODE, "/media/phone.mp4", output="/out/o.mp4", score={"min_vmaf": 90})
    video = VideoStream(0, "h264", 641, 361, "yuv420p", 8, (30, 1), rotation=90)
    media = MediaInfo("/media/phone.mp4", "mov,mp4", 4.0, 10**6, 10**6, video, frame_count=120)
    scored, command = scored_output(job, media, "/out/.o.mp4.j.1.partial",
                                    logs="/scratch/j.1/logs", threads=2)  # fmt: skip
    ref = scored.reference
    assert (ref.path, ref.width, ref.height, ref.frames) == ("/media/phone.mp4", 361, 641, 120)
    assert scored.options.min_vmaf == 90 and scored.model == "1080p"
    given = [command.argv[i + 1] for i, a in enumerate(command.argv) if a == "-i"]
    assert given == ["file:/out/.o.mp4.j.1.partial", "file:/media/phone.mp4"]
    dist, _, _ = chains(command.argv)  # the encode crops to even sizes: 360x640 -> 361x641
    assert "scale=361:641:flags=bicubic" in dist and "fps=" not in dist


# ---- the logs read back ------------------------------------------------------------------


def write_logs(folder: Path, frames: int, first_value: float) -> None:
    """Logs of one pass of ``frames`` frames in the formats ffmpeg writes them (libvmaf's
    JSON; psnr's, ssim's and xpsnr's stats files, numbered from 1)."""
    vmaf = {"frames": [{"frameNum": n, "metrics": {"integer_adm2": 0.9,
                                                     "vmaf": first_value + n}}
                       for n in range(frames)]}  # fmt: skip
    (folder / "vmaf.log").write_text(json.dumps(vmaf))
    (folder / "psnr.log").write_text("".join(
        f"n:{n + 1} mse_avg:0.00 mse_y:0.00 mse_u:0.00 mse_v:0.00 psnr_avg:inf "
        f"psnr_y:{'inf' if n == 0 else f'{30 + n / 100:.2f}'} psnr_u:inf psnr_v:inf \n"
        for n in range(frames)))  # fmt: skip
    (folder / "ssim.log").write_text("".join(
        f"n:{n + 1} Y:{0.9 + n / 10**5:.6f} U:0.95 V:0.96 All:0.93 (13.5)\n"
        for n in range(frames)))  # fmt: skip
    (folder / "xpsnr.log").write_text("".join(
        f"n:{n + 1:5d}  XPSNR y: {35 + n / 100:.4f}  XPSNR u: 38.2662  XPSNR v: 37.7150\n"
        for n in range(frames)))  # fmt: skip


def test_a_ranges_logs_count_only_its_frames_numbered_as_the_references(tmp_path: Path) -> None:
    asked = options(metrics="vmaf,psnr,ssim,xpsnr")
    middle = step(options=asked, start=100, frames=50, lead=4, tail=4, index=1)
    write_logs(tmp_path, 4 + 50 + 4, first_value=10.0)
    tallies = {t.metric: t for t in read_logs(middle, str(tmp_path))}
    assert set(tallies) == set(Metric)
    for t in tallies.values():
        assert t.count == 50, t.metric
    # Pass frame n is reference frame 96 + n: the first counted is pass frame 4.
    assert tallies[Metric.VMAF].worst[0] == (14.0, 100)
    assert tallies[Metric.VMAF].high == 10.0 + 53
    assert tallies[Metric.PSNR].worst[0] == (30.04, 100)
    assert tallies[Metric.XPSNR].worst[0] == (35.04, 100)
    ssim, frame = tallies[Metric.SSIM].worst[0]
    assert frame == 100 and ssim == pytest.approx(0.90004)


def test_identical_frames_count_as_100_db_and_the_last_range_reads_to_the_end(
    tmp_path: Path,
) -> None:
    last = step(options=options(metrics="psnr"), start=100, frames=50, lead=4, tail=4,
                index=2, open_end=True)  # fmt: skip
    write_logs(tmp_path, 4 + 70, first_value=10.0)  # the file had 20 frames more than probed
    (psnr,) = read_logs(last, str(tmp_path))
    assert psnr.count == 70 and psnr.worst[0] == (30.04, 100)
    whole = step(options=options(metrics="psnr"))
    (all_frames,) = read_logs(whole, str(tmp_path))
    assert all_frames.count == 74 and all_frames.high == 100.0  # frame 0's "inf"


def test_a_missing_or_empty_log_is_an_encode_error_naming_the_metric(tmp_path: Path) -> None:
    with pytest.raises(EncodeError, match="the vmaf log could not be read"):
        read_logs(step(), str(tmp_path))
    (tmp_path / "vmaf.log").write_text(json.dumps({"frames": []}))
    with pytest.raises(EncodeError, match="vmaf: no frame of the whole file was scored"):
        read_logs(step(), str(tmp_path))


# ---- the reference and the distorted must be the same content in time -----------------


def media(path: str, seconds: float, rate: tuple[int, int] | None = (25, 1)) -> MediaInfo:
    video = VideoStream(0, "h264", 640, 360, "yuv420p", 8, rate)
    frames = round(seconds * rate[0] / rate[1]) if rate else None
    return MediaInfo(path, "mov,mp4", seconds, 10**6, 10**6, video, frame_count=frames)


def test_lengths_that_differ_are_refused_naming_both() -> None:
    from cluster.errors import InputError

    with pytest.raises(InputError) as caught:
        comparable(media("/m/enc.mp4", 4.0), media("/m/ref.mp4", 10.0))
    message = str(caught.value)
    assert "enc.mp4 lasts 4.00 s" in message and "ref.mp4 lasts 10.00 s" in message
    assert "\n" not in message
    near = comparable(media("/m/enc.mp4", 40.5), media("/m/ref.mp4", 40.0))
    assert near == Reference("/m/ref.mp4", 640, 360, (25, 1), 8, 1000)
    with pytest.raises(InputError, match="its frame rate is unknown"):
        comparable(media("/m/enc.mp4", 4.0), media("/m/ref.mp4", 4.0, rate=None))


# ---- ranges ------------------------------------------------------------------------------


def reference(seconds: float, rate: tuple[int, int] = (25, 1)) -> Reference:
    return Reference("/m/ref.mp4", 640, 360, rate, 8, round(seconds * rate[0] / rate[1]))


def check_cover(steps: tuple[ScoreStep, ...], ref: Reference, grid: int) -> None:
    """Ranges tile the reference's frames, each on the subsample's grid, even to a grid
    unit, with a lead and a tail of at least LEAD_FRAMES on the grid; the last reads to
    the end."""
    assert [s.index for s in steps] == list(range(len(steps)))
    assert steps[0].start == 0
    for a, b in itertools.pairwise(steps):
        assert b.start == a.start + a.frames
    assert steps[-1].start + steps[-1].frames == ref.frames
    assert [s.open_end for s in steps] == [False] * (len(steps) - 1) + [True]
    even = ref.frames / len(steps)
    for s in steps:
        assert s.start % grid == 0
        assert s.lead == s.tail and LEAD_FRAMES <= s.lead < LEAD_FRAMES + grid
        assert s.lead % grid == 0
        assert abs(s.frames - even) <= grid, (s.frames, even)
        assert s.frames * ref.frame_s >= MIN_RANGE_S - grid * ref.frame_s
        assert s.options.subsample == grid and s.model == "1080p"


def test_a_long_reference_is_cut_into_even_ranges_two_per_free_scorer() -> None:
    ref = reference(100)  # 2500 frames
    steps = ranges(ref, ScoreOptions(), "1080p", slots=3)
    assert len(steps) == 6  # 2 per scorer; each 16.7 s, longer than MIN_RANGE_S
    check_cover(steps, ref, 1)
    assert len(ranges(ref, ScoreOptions(), "1080p", slots=2)) == 4


def test_no_range_is_shorter_than_its_minimum_however_many_scorers_are_free() -> None:
    ref = reference(40)  # 1000 frames: at most four ranges of 10 s
    steps = ranges(ref, ScoreOptions(), "1080p", slots=64)
    assert [(s.start, s.frames) for s in steps] == [(0, 250), (250, 250), (500, 250), (750, 250)]
    check_cover(steps, ref, 1)


@pytest.mark.parametrize(
    ("seconds", "subsample", "slots"),
    [(40, 3, 3), (40, 7, 8), (61.3, 4, 2), (333, 1000, 100), (90, 5, 40)],
)
def test_range_boundaries_fall_on_the_subsample_grid(
    seconds: float, subsample: int, slots: int
) -> None:
    ref = reference(seconds)
    steps = ranges(ref, options(subsample=subsample), "1080p", slots)
    assert len(steps) >= 2
    check_cover(steps, ref, subsample)


@pytest.mark.parametrize(("rate", "frames"), [((25, 1), 750), ((24, 1), 720), ((60, 1), 1800),
                                              ((30000, 1001), 900)])  # fmt: skip
def test_thirty_seconds_is_already_long_enough_for_ranges(
    rate: tuple[int, int], frames: int
) -> None:
    ref = Reference("/m/ref.mp4", 640, 360, rate, 8, frames)
    assert frames * ref.frame_s >= PARALLEL_FROM_S
    assert len(ranges(ref, ScoreOptions(), "1080p", slots=4)) == 3


@pytest.mark.parametrize(
    ("ref", "slots"),
    [
        (reference(29.96), 8),  # shorter than PARALLEL_FROM_S
        (reference(600), 1),  # room for one scorer only
        (reference(600), 0),
        (Reference("/m/ref.mp4", 640, 360, (25, 1), 8, 0), 8),  # frame count unknown
    ],
)
def test_one_pass_when_short_or_one_scorer(ref: Reference, slots: int) -> None:
    (only,) = ranges(ref, ScoreOptions(), "1080p", slots)
    assert only.whole and only.start == 0 and only.lead == only.tail == 0
    assert only.label == "the whole file"


# ---- where a score runs --------------------------------------------------------------------


def node(name: str, cpus: float, metrics: frozenset[str] | None, **kw: Any) -> NodeState:
    return NodeState(name, f"10.0.0.{len(name)}", cpus, metrics=metrics, **kw)


def score(*metrics: str, w: int = 640, h: int = 360) -> Demand:
    return Demand(JobKind.QUALITY, Hardware.CPU, "h264", w, h, metrics=frozenset(metrics))


def test_a_score_goes_only_to_a_node_that_computes_its_metrics() -> None:
    roomy, able = node("roomy", 16, NO_VMAF), node("b", 2, ALL)
    planner = Planner([roomy, able])
    first = planner.place(score("vmaf", "psnr"))
    assert first is not None and first.node_id == "b" and first.hardware is Hardware.CPU
    assert planner.place(score("vmaf")) is not None  # b's second core
    assert planner.place(score("vmaf")) is None  # b is full; roomy never scores VMAF
    psnr = planner.place(score("psnr", "ssim"))
    assert psnr is not None and psnr.node_id == "roomy"  # what it computes, it scores
    assert planner.never(score("vmaf")) is None  # b will have room again


def test_a_farm_where_no_node_computes_a_metric_says_so_and_how_to_fix_it() -> None:
    planner = Planner([node("a", 8, NO_VMAF), node("bb", 8, frozenset())])
    assert planner.place(score("vmaf")) is None
    why = planner.never(score("vmaf", "psnr"))
    assert why is not None and "\n" not in why
    assert why.startswith("no node in the cluster has an ffmpeg that computes psnr, vmaf;")
    assert "imageio-ffmpeg" in why and "libvmaf" in why
    assert planner.never(score("psnr")) is None


def test_a_scored_transcode_is_placed_only_where_it_can_be_scored() -> None:
    demand = Demand(JobKind.TRANSCODE, Hardware.CPU, "h264", 640, 360, encoder="libx264",
                    metrics=frozenset({"vmaf"}))  # fmt: skip
    encoders = frozenset({"libx264"})
    nodes = [node("roomy", 16, NO_VMAF, encoders=encoders), node("b", 4, ALL, encoders=encoders)]
    placed = Planner(nodes).place(demand)
    assert placed is not None and placed.node_id == "b"
    plain = Planner(nodes).place(Demand(JobKind.TRANSCODE, Hardware.CPU, "h264", 640, 360,
                                        encoder="libx264"))  # fmt: skip
    assert plain is not None and plain.node_id == "b"  # pack: the tightest that fits
    lone = Planner([nodes[0]])
    assert lone.place(demand) is None and lone.never(demand) is not None


VERIFIED = Capability(CodecState.VERIFIED, "one-frame trial encode succeeded")


def test_a_scored_gpu_transcode_where_no_gpu_node_can_score_is_never_placed_and_told_why() -> None:
    """The only NVENC node's quality ffmpeg lacks VMAF; another node computes it (so the
    farm as a whole passes admission). A ``--hardware gpu`` scored transcode can never
    run: the planner must say so, or the job waits queued forever."""
    gpu = GpuState("g1", 0, "Test GPU", 16384, codecs={"h264": VERIFIED})
    nodes = [node("gpu", 8, NO_VMAF, gpus=(gpu,)), node("cpu", 8, ALL)]
    demand = Demand(JobKind.TRANSCODE, Hardware.GPU, "h264", 640, 360,
                    metrics=frozenset({"vmaf"}))  # fmt: skip
    planner = Planner(nodes)
    assert planner.place(demand) is None
    auto = Planner(nodes).place(Demand(JobKind.TRANSCODE, Hardware.AUTO, "h264", 640, 360,
                                       encoder="libx264", metrics=frozenset({"vmaf"})))  # fmt: skip
    assert auto is not None and auto.node_id == "cpu"  # auto falls back to the CPU node
    why = planner.never(demand)
    assert why is not None and "vmaf" in why, (
        "Planner.never() says nothing for a GPU transcode whose only NVENC node cannot "
        "compute the metrics asked: the job would wait queued forever"
    )


def test_demands_carry_the_metrics_a_job_is_scored_with() -> None:
    video = VideoStream(0, "h264", 1920, 1080, "yuv420p", 8, (25, 1))
    probed = MediaInfo("/m/enc.mp4", "mov,mp4", 10.0, 10**6, 10**6, video, frame_count=250)
    quality = spec(JobKind.QUALITY, "/m/enc.mp4", reference="/m/ref.mp4",
                   score={"metrics": "psnr,ssim"})  # fmt: skip
    demand = demand_for(Job("q", quality), probed)
    assert demand.kind is JobKind.QUALITY and demand.metrics == {"psnr", "ssim"}
    scored = spec(JobKind.TRANSCODE, "/m/enc.mp4", output="/m/o.mp4", score={})
    assert demand_for(Job("t", scored), probed).metrics == {"vmaf"}
    plain = JobSpec(kind=JobKind.TRANSCODE, input="/m/enc.mp4", output="/m/o.mp4")
    assert demand_for(Job("p", plain), probed).metrics == frozenset()


def test_admission_refuses_a_metric_no_node_computes_in_one_line() -> None:
    asked = spec(JobKind.QUALITY, "/m/enc.mp4", reference="/m/ref.mp4",
                 score={"metrics": "psnr,vmaf,xpsnr"})  # fmt: skip
    with pytest.raises(SpecError) as caught:
        check_metrics(asked, frozenset({"psnr", "ssim"}))
    assert caught.value.code is ErrorCode.METRIC_MISSING
    message = str(caught.value)
    assert message.startswith("no node in the cluster computes vmaf, xpsnr (they compute: psnr, "
                              "ssim);")  # fmt: skip
    assert "\n" not in message
    with pytest.raises(SpecError, match=r"\(they compute: none\)"):
        check_metrics(asked, frozenset())
    check_metrics(asked, ALL)  # every metric somewhere: taken
    check_metrics(asked, None)  # no node has reported yet: judged at placement
    plain = JobSpec(kind=JobKind.TRANSCODE, input="/m/in.mp4", output="/m/o.mp4")
    check_metrics(plain, frozenset())  # not scored: no metric needed
    scored = spec(JobKind.TRANSCODE, output="/m/o.mp4", score={"min_vmaf": 90})
    with pytest.raises(SpecError, match="computes vmaf"):
        check_metrics(scored, NO_VMAF)


def test_tallies_are_mergeable_in_any_grouping() -> None:
    """(a + b) + c == a + (b + c): ranges may be merged as they arrive."""
    a, b, c = (tally_of(Metric.VMAF, values(100, seed=s), first=100 * s) for s in range(3))
    left = merged([merged([a, b])[Metric.VMAF], c])[Metric.VMAF]
    right = merged([a, merged([b, c])[Metric.VMAF]])[Metric.VMAF]
    assert pooled(left, 0.04) == pooled(right, 0.04)
    assert left.count == 300 and math.isclose(left.total, right.total)
