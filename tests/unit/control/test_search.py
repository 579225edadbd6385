"""The CRF search's decisions (pure): which CRFs a round tries, when it stops, which CRF
it takes, and when it gives up, with the reason a user reads; where it samples."""

from __future__ import annotations

import itertools

import pytest

from cluster import ErrorCode, Job, JobKind, JobSpec
from cluster.control.graphs import pertitle
from cluster.control.graphs.search import MAX_ROUNDS, decide, samples, spread
from cluster.errors import SpecError
from cluster.model.graph import TaskOf
from cluster.model.jobs import JobStatus
from cluster.model.media import MediaInfo
from cluster.model.package import PackageOptions, Rendition
from cluster.model.quality import Metric, Reference, ScoreOptions, ScoreStep, Tally
from cluster.model.search import CRF_RANGES, Probe, ProbeStep, Target
from cluster.model.split import Segment
from cluster.scheduling.admission import check_metrics
from cluster.storage.objects import ObjectStore
from cluster.storage.stage import localize

VMAF95 = Target(Metric.VMAF, 95.0)


def probe(crf: int, score: float, percent: float = 30.0, round_: int = 1) -> Probe:
    return Probe(crf, score, int(percent * 1000), percent, round_, 1)


def test_a_round_spreads_its_crfs_over_the_range() -> None:
    lo, hi = CRF_RANGES["h264"]
    first = spread(lo, hi, 3)
    assert len(first) == 3 and first == tuple(sorted(first))
    assert lo < first[0] and first[-1] < hi
    gaps = [b - a for a, b in zip((lo, *first), (*first, hi), strict=True)]
    assert max(gaps) - min(gaps) <= 1  # even
    assert spread(20, 21, 3) == (20, 21)  # as few as there are
    assert spread(22, 21, 3) == ()


def test_the_next_round_interpolates_between_the_crfs_that_bracket_the_target() -> None:
    found = [probe(19, 99.4), probe(28, 95.5), probe(37, 82.8)]
    decision = decide(VMAF95, found, "h264", 1)
    assert decision.chosen is None and not decision.failed
    assert decision.crfs and all(28 < c < 37 for c in decision.crfs)
    # 95.5 - 95 = 0.5 of a 1.41-per-CRF slope: the target lies near CRF 28.4.
    assert 29 in decision.crfs
    assert "between CRF 28 (95.50) and 37 (82.80)" in decision.why


def test_neighbouring_crfs_that_bracket_the_target_end_the_search_on_the_passing_one() -> None:
    found = [probe(19, 99.4), probe(28, 95.5), probe(29, 94.6), probe(37, 82.8)]
    decision = decide(VMAF95, found, "h264", 2)
    assert decision.chosen == 28 and not decision.failed
    assert "CRF 28 passes (95.50) and CRF 29 does not (94.60)" in decision.why


def test_a_probe_within_the_tolerance_is_taken_at_once() -> None:
    decision = decide(VMAF95, [probe(19, 99.4), probe(28, 95.06), probe(37, 82.8)], "h264", 1)
    assert decision.chosen == 28
    assert "within 0.1" in decision.why
    # The tolerance doubles each round: 95.3 is taken in round 3 (0.4), not in round 1.
    late = [probe(19, 99.4), probe(28, 95.3), probe(31, 93.0)]
    assert decide(VMAF95, late, "h264", 3).chosen == 28
    assert decide(VMAF95, late, "h264", 1).chosen is None


def test_a_target_no_crf_reaches_ends_the_search_with_the_best_score_seen() -> None:
    lo, hi = CRF_RANGES["h264"]
    decision = decide(Target(Metric.VMAF, 99.9), [probe(lo, 99.1), probe(20, 97.0)], "h264", 2)
    assert decision.failed and decision.chosen is None
    assert decision.why.startswith("VMAF 99.9 cannot be met: 99.10 at CRF 10")
    assert f"CRF {lo} to {hi}" in decision.why and "lower the target" in decision.why


def test_every_crf_failing_sends_the_search_lower_and_every_one_passing_higher() -> None:
    lo, hi = CRF_RANGES["hevc"]
    lower = decide(VMAF95, [probe(19, 93.0), probe(28, 90.0), probe(37, 80.0)], "hevc", 1)
    assert lower.crfs and all(lo <= c < 19 for c in lower.crfs)
    higher = decide(VMAF95, [probe(19, 99.0), probe(28, 98.0), probe(37, 97.0)], "hevc", 1)
    assert higher.crfs and all(37 < c <= hi for c in higher.crfs)
    at_top = decide(VMAF95, [probe(hi, 96.0)], "hevc", 2)
    assert at_top.chosen == hi and "the largest this search tries" in at_top.why


def test_an_output_over_max_encoded_percent_ends_the_search_before_any_encode() -> None:
    target = Target(Metric.VMAF, 95.0, max_encoded_percent=50.0)
    found = [probe(27, 95.4, percent=64.0), probe(28, 94.7, percent=58.0)]
    decision = decide(target, found, "h264", 2)
    assert decision.failed and decision.chosen is None
    assert "needs CRF 27" in decision.why and "64 % of the input's size" in decision.why
    assert "max_encoded_percent 50" in decision.why


def test_the_last_round_takes_the_best_passing_crf() -> None:
    found = [probe(19, 99.4), probe(24, 97.0), probe(33, 90.0)]
    decision = decide(VMAF95, found, "h264", MAX_ROUNDS)
    assert decision.chosen == 24


def test_samples_follow_ab_av1_twenty_seconds_every_twelve_minutes() -> None:
    short = Reference("/m/a.mp4", 1920, 1080, (25, 1), 8, 25 * 300)  # 5 min: one sample
    (only,) = samples(short)
    assert (only.start_frame, only.frames) == (2 * 25 * 60 + 25 * 20, 25 * 20)
    tiny = Reference("/m/b.mp4", 640, 360, (25, 1), 8, 25 * 21)  # 21 s: the whole file
    (whole,) = samples(tiny)
    assert (whole.start_frame, whole.frames) == (0, 25 * 21)
    film = Reference("/m/c.mp4", 1920, 1080, (24000, 1001), 8, round(7200 * 24000 / 1001))
    cuts = samples(film)
    assert len(cuts) == 10
    starts = [c.start_frame for c in cuts]
    assert starts == sorted(starts) and all(c.frames == round(20 * 24000 / 1001) for c in cuts)
    assert all(c.start_frame + c.frames <= film.frames for c in cuts)
    spacing = [b - a for a, b in itertools.pairwise(starts)]
    assert max(spacing) - min(spacing) <= 1


def test_a_target_is_one_field_and_excludes_a_fixed_quality() -> None:
    spec = JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4", target_vmaf=95)
    target = spec.target
    assert target is not None and target.metric is Metric.VMAF and target.value == 95.0
    assert target.max_encoded_percent == 80.0
    assert JobSpec.from_dict(spec.to_dict()).target == target
    with pytest.raises(SpecError, match="not both"):
        JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4", quality=23,
                target_vmaf=95)  # fmt: skip
    with pytest.raises(SpecError, match="target_vmaf or target_xpsnr, not both"):
        JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4", target_vmaf=95,
                target_xpsnr=40)  # fmt: skip
    with pytest.raises(SpecError, match="for transcodes and packages, not thumbnail"):
        JobSpec(kind=JobKind.THUMBNAIL, input="/m/a.mp4", output="/m/t", target_vmaf=95)
    with pytest.raises(SpecError, match="max_encoded_percent must be"):
        JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4", target_vmaf=95,
                max_encoded_percent=0.5)  # fmt: skip


def test_a_round_whose_probes_found_nothing_starts_again_rather_than_crash() -> None:
    decision = decide(VMAF95, [], "h264", 1)
    assert decision.crfs and not decision.failed
    assert decide(VMAF95, [], "h264", MAX_ROUNDS).failed


# ---- per-title: each rung's search, from real task records ---------------------------


def _probe_task(rung: Rendition, crf: int, score: float, size: int, ref: Reference) -> Job:
    options = ScoreOptions(("vmaf",))
    sample = Segment(0, 0, ref.frames, 0.0, ref.frames * ref.frame_s, True)
    step = ProbeStep(sample, crf, ScoreStep(ref, options, "1080p", frames=ref.frames), 1, rung)
    tally = Tally(Metric.VMAF)
    for frame in range(ref.frames):
        tally.add(frame, score)
    spec = JobSpec(kind=JobKind.QUALITY, input=ref.path, reference=ref.path, score=options)
    key = f"p1{rung.key}c{crf:02d}s01"
    return Job(id=f"j-{key}", spec=spec, status=JobStatus.SUCCEEDED,
               result={"tallies": [tally.to_dict()], "size_bytes": size},
               task=TaskOf("j", key, step))  # fmt: skip


def test_a_rung_too_dear_for_its_budget_is_dropped_and_the_rung_below_still_chosen() -> None:
    ref = Reference("/m/a.mp4", 1920, 1080, (25, 1), 8, 250)  # 10 s
    media = MediaInfo("/m/a.mp4", "mp4", 10.0, 10_000_000, None, None, frame_count=250)
    top = Rendition("v1080h264", "video", "h264", 1920, 1080, 6000, name="1080p")
    mid = Rendition("v720h264", "video", "h264", 1280, 720, 3000, name="720p")
    low = Rendition("v360h264", "video", "h264", 640, 360, 730, name="360p")
    kb = 1000 // 8 * 10  # bytes for 10 s at 1 kb/s
    tasks = {t.task.key: t for t in [
        _probe_task(top, 32, 95.05, 200 * kb, ref), _probe_task(top, 33, 94.0, 190 * kb, ref),
        # 720p costs 168 kb/s even at CRF 46: more than 200 / 1.2 = 167 kb/s.
        _probe_task(mid, 45, 90.0, 170 * kb, ref), _probe_task(mid, 46, 89.0, 168 * kb, ref),
        _probe_task(low, 27, 84.0, 175 * kb, ref), _probe_task(low, 28, 83.0, 150 * kb, ref),
    ]}  # fmt: skip
    found = pertitle.decisions(VMAF95, [top, mid, low], tasks, media, 1.2, 4)
    assert found[top].chosen == 32
    assert found[mid].failed and "more than its 167 kb/s" in found[mid].why
    assert found[low].chosen == 28  # its budget is the top rung's: 167 kb/s
    ladder = pertitle.choose(PackageOptions(), found, 10.0)
    kept = {c.rendition.key: c.kept for c in ladder}
    assert kept == {"v360h264": True, "v720h264": False, "v1080h264": True}


def test_a_target_excludes_score_and_is_checked_against_the_metrics_the_nodes_compute() -> None:
    with pytest.raises(SpecError, match="a target already scores the output"):
        JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4", target_vmaf=95,
                score={"min_vmaf": 90})  # type: ignore[arg-type]  # fmt: skip
    spec = JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4", target_xpsnr=40)
    with pytest.raises(SpecError, match="no node in the cluster computes xpsnr") as refused:
        check_metrics(spec, frozenset({"psnr", "ssim"}))
    assert refused.value.code is ErrorCode.METRIC_MISSING
    check_metrics(spec, frozenset({"xpsnr"}))


def test_a_probe_of_an_object_fetches_its_input_once() -> None:
    spec = JobSpec(kind=JobKind.QUALITY, input="s3://media/a.mp4", reference="s3://media/a.mp4",
                   quality=30)  # fmt: skip
    local, plan = localize(spec, "/scratch/j.1", ObjectStore(), 1000)
    assert plan is not None and len(plan.fetch) == 1
    assert local.reference == local.input == "/scratch/j.1/in/a.mp4"
