"""The split planner and the stitched-file check, on frame lists (no ffmpeg)."""

from __future__ import annotations

import pytest

from cluster.errors import EncodeError, SpecError
from cluster.media.split import check_timeline, parse_scan, plan_segments
from cluster.model.split import FrameIndex, Segment, chunk_id, chunk_name, parse_split


def index(frames: int, fps: float = 25.0, keys: tuple[int, ...] = (0,), start: float = 0.0,
          jitter: dict[int, float] | None = None) -> FrameIndex:  # fmt: skip
    times = [start + i / fps + (jitter or {}).get(i, 0.0) for i in range(frames)]
    return FrameIndex(start, tuple(times), frozenset(keys), audio_end_s=frames / fps)


def plan(ix: FrameIndex, target: float, floor: float = 1.0) -> list[Segment]:
    segments = plan_segments(ix, target, floor_s=floor, max_chunks=100)
    assert not isinstance(segments, str), segments
    return segments


def test_cuts_land_on_nearby_keyframes_else_on_the_exact_frame() -> None:
    # 40 s at 25 fps, keyframes every 2 s but none near 30 s: cuts at 10 s, 20 s (keys), 30 s.
    keys = tuple(k for k in range(0, 1000, 50) if not 700 <= k <= 800)
    segments = plan(index(1000, keys=keys), target=10)
    assert [s.start_frame for s in segments] == [0, 250, 500, 750]
    assert [s.keyframe for s in segments] == [True, True, True, False]
    assert [s.frames for s in segments] == [250, 250, 250, 250]
    assert sum(s.frames for s in segments) == 1000
    assert segments[-1].start_s == 30.0 and segments[-1].duration_s == 10.0


def test_a_keyframe_within_a_quarter_chunk_of_the_ideal_cut_is_preferred() -> None:
    segments = plan(index(1000, keys=(0, 240, 530, 740)), target=10)
    assert [s.start_frame for s in segments] == [0, 240, 530, 740]
    assert all(s.keyframe for s in segments)


def test_times_are_counted_from_the_file_start_and_end_at_the_last_frame() -> None:
    segments = plan(index(100, start=1.4), target=2)
    assert segments[0].start_s == 0.0 and segments[1].start_s == 2.0
    assert sum(s.duration_s for s in segments) == pytest.approx(4.0)


def test_no_chunk_is_shorter_than_the_floor() -> None:
    # 2.2 s asked in chunks of 1 s, floor 24 frames: two chunks, not a sliver at the end.
    segments = plan(index(55), target=1.0)
    assert all(s.frames >= 24 for s in segments)
    assert sum(s.frames for s in segments) == 55
    assert plan_segments(index(40), 1.0, floor_s=1.0, max_chunks=10) == (
        "not split: 1.6 s is too short for two chunks of at least 1.0 s"
    )


def test_uneven_frames_are_encoded_whole_with_the_reason() -> None:
    vfr = index(500, jitter={300: 0.02})
    assert plan_segments(vfr, 5, floor_s=1, max_chunks=10) == (
        "not split: variable frame rate: the frame at 12.020 s follows a gap of 60.0 ms "
        "where frames last 40.0 ms"
    )
    missing = FrameIndex(0.0, (0.0, 0.04), frozenset({0}), problem="3 video packet(s) have no "
                         "timestamp")  # fmt: skip
    assert plan_segments(missing, 5, floor_s=1, max_chunks=10) == (
        "not split: 3 video packet(s) have no timestamp"
    )


def test_matroska_millisecond_timestamps_count_as_constant() -> None:
    ms = FrameIndex(0.0, tuple(round(i / 30, 3) for i in range(900)), frozenset({0}))
    assert len(plan(ms, 10)) == 3


def test_the_scan_reads_video_keyframes_and_the_audio_end() -> None:
    text = "\n".join([
        "packet,0,0.080000,0.040000,__", "packet,1,0.000000,0.021333,K_",
        "packet,0,0.000000,0.040000,K_", "packet,0,0.040000,0.040000,__",
        "packet,1,0.021333,0.021333,K_", "packet,0,N/A,0.040000,__", "format,0.000000",
    ])  # fmt: skip
    found = parse_scan(text, video_index=0, audio_index=1)
    assert found.times == (0.0, 0.04, 0.08)
    assert found.keyframes == frozenset({0})
    assert found.audio_end_s == pytest.approx(0.042666)
    assert found.problem == "1 video packet(s) have no timestamp"


SEGMENTS = [Segment(0, 0, 50, 0.0, 2.0, True), Segment(1, 50, 50, 2.0, 2.0, False),
            Segment(2, 100, 50, 4.0, 2.0, False)]  # fmt: skip


def check(times: list[float], keys: frozenset[int] = frozenset({0, 50, 100}),
          audio: float | None = 6.0) -> int:  # fmt: skip
    return check_timeline(times, SEGMENTS, frame_s=0.04, audio_end_s=audio,
                          source_audio_end_s=6.0, keyframes=keys)  # fmt: skip


def test_a_whole_stitched_file_passes() -> None:
    assert check([i * 0.04 for i in range(150)]) == 150
    shuffled = [i * 0.04 for i in (*range(50, 150), *range(50))]  # packets out of order
    assert check(shuffled) == 150


def test_a_frame_lost_or_repeated_at_a_join_names_the_chunk() -> None:
    lost = [i * 0.04 for i in range(150) if i != 100]
    with pytest.raises(EncodeError, match=r"1 missing at 4\.040 s, in chunk 3 \(frames 100-149"):
        check(lost, keys=frozenset({0, 50, 99}))
    repeated = sorted([*(i * 0.04 for i in range(150)), 2.0])
    with pytest.raises(EncodeError, match=r"repeated at 2\.000 s, in chunk 2"):
        check(repeated)


def test_a_join_not_on_a_keyframe_short_video_or_audio_fail() -> None:
    with pytest.raises(EncodeError, match=r"chunk 2 .* does not start on a keyframe"):
        check([i * 0.04 for i in range(150)], keys=frozenset({0, 100}))
    with pytest.raises(EncodeError, match="holds 149 frames, the source 150"):
        check([i * 0.04 for i in range(149)])
    with pytest.raises(EncodeError, match=r"audio lasts 5\.500 s, the source's 6\.000 s"):
        check([i * 0.04 for i in range(150)], audio=5.5)


@pytest.mark.parametrize(("given", "kept"), [("auto", "auto"), (" OFF ", "off"), ("30", "30"),
                                             (12.5, "12.5"), ("90s", "90")])  # fmt: skip
def test_split_values(given: object, kept: str) -> None:
    assert parse_split(given) == kept


@pytest.mark.parametrize("bad", ["0.5", "-3", "nan", "inf", "fast", ""])
def test_bad_split_values_say_what_is_allowed(bad: str) -> None:
    with pytest.raises(SpecError, match="is not auto, off or a chunk length in seconds"):
        parse_split(bad)


def test_chunk_files_never_match_the_jobs_own_partial_pattern() -> None:
    name = chunk_name("film.mkv", "abcd", 2)
    assert name == ".film.mkv.abcd-c003.chunk.mp4"
    assert chunk_id("abcd", 2) == "abcd-c003"
    assert ".abcd." not in name
