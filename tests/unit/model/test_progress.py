"""ffmpeg -progress parsing from recorded output, and the emission throttle."""

from __future__ import annotations

import pytest

from cluster.model.progress import ProgressParser, ProgressSnapshot, ProgressThrottle

# Recorded from ffmpeg 5.1 (-progress pipe:1 -nostats); the first block is what ffmpeg
# writes before any frame is out, with N/A values.
RECORDED = """\
frame=0
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=44
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
dup_frames=0
drop_frames=0
speed=N/A
progress=continue
frame=1
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=N/A
out_time_us=92880
out_time_ms=92880
out_time=00:00:00.092880
dup_frames=0
drop_frames=0
speed=  74x
progress=continue
frame=75
fps=37.50
stream_0_0_q=-1.0
bitrate=N/A
total_size=N/A
out_time_us=3018594
out_time_ms=3018594
out_time=00:00:03.018594
dup_frames=0
drop_frames=0
speed=72.6x
progress=end
"""


def feed_all(parser: ProgressParser, text: str) -> list[ProgressSnapshot]:
    return [s for line in text.splitlines() if (s := parser.feed(line)) is not None]


def test_recorded_blocks_parse_with_na_values() -> None:
    snaps = feed_all(ProgressParser(duration_s=3.0), RECORDED)
    assert len(snaps) == 3
    first, second, last = snaps
    assert first == ProgressSnapshot(frame=0, fps=0.0, out_time_s=None, speed=None, percent=None)
    # out_time_ms is microseconds despite its name
    assert second.out_time_s == pytest.approx(0.093, abs=1e-3)
    assert second.percent == pytest.approx(3.1, abs=0.01)
    assert second.speed == 74.0
    assert second.eta_s == pytest.approx((3.0 - 0.09288) / 74, abs=0.1)
    assert last.done and last.percent == 100.0 and last.eta_s == 0.0 and last.frame == 75


def test_percent_by_frames_when_duration_unknown() -> None:
    parser = ProgressParser(total_frames=150)
    block = "frame=75\nfps=25\nout_time_us=N/A\nspeed=N/A\nprogress=continue\n"
    (snap,) = feed_all(parser, block)
    assert snap.percent == 50.0
    assert snap.eta_s == 3.0  # 75 frames left at 25 fps


def test_out_time_ms_used_when_out_time_us_missing() -> None:
    (snap,) = feed_all(ProgressParser(duration_s=10), "out_time_ms=2500000\nprogress=continue\n")
    assert snap.out_time_s == 2.5 and snap.percent == 25.0


def test_no_duration_no_frames_gives_no_percent_and_garbage_is_ignored() -> None:
    parser = ProgressParser()
    snaps = feed_all(parser, "garbage line\nframe=abc\nspeed=-1x\nprogress=continue\n")
    assert snaps == [ProgressSnapshot()]


def test_percent_is_clamped() -> None:
    (snap,) = feed_all(ProgressParser(duration_s=1.0), "out_time_us=5000000\nprogress=continue\n")
    assert snap.percent == 100.0


def test_throttle_needs_a_point_or_a_second_and_always_sends_the_last() -> None:
    now = [0.0]
    throttle = ProgressThrottle(clock=lambda: now[0])
    assert throttle.should_emit(ProgressSnapshot(percent=0.0))  # the first one
    now[0] = 0.2
    assert not throttle.should_emit(ProgressSnapshot(percent=0.5))
    assert throttle.should_emit(ProgressSnapshot(percent=1.2))  # moved 1.2 points
    now[0] = 0.4
    assert not throttle.should_emit(ProgressSnapshot(percent=1.3))
    now[0] = 1.5
    assert throttle.should_emit(ProgressSnapshot(percent=1.4))  # a second passed
    now[0] = 1.6
    assert throttle.should_emit(ProgressSnapshot(percent=1.5, done=True))  # final
