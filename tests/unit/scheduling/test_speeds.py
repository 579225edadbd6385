"""The learned speed model on synthetic histories: the static table with nothing seen,
shrinkage with few runs, what a device's runs teach about its other work, adapting when a
node changes, a round trip through export and import."""

from __future__ import annotations

import json
import random

import pytest

from cluster.scheduling.speeds import Device, SpeedModel, SpeedSample, Work

L4 = Device("gpu", "NVIDIA L4")
EPYC8 = Device("cpu", "AMD EPYC 7B13", 8)
H264_1080 = Work.of("h264_nvenc", "medium", 1080, 25.0, "h264", False)
HEVC_2160 = Work.of("hevc_nvenc", "medium", 2160, 25.0, "h264", False)


def run(device: Device, work: Work, speed: float, *, node: str = "n1", at: float = 0.0,
        prior: float = 2.0) -> SpeedSample:  # fmt: skip
    return SpeedSample(at, node, device, work, media_s=60.0, seconds=60.0 / speed,
                       frames=1500, prior=prior)  # fmt: skip


def test_nothing_seen_is_the_static_table_with_a_wide_range() -> None:
    got = SpeedModel().predict("n1", L4, H264_1080, prior=2.0)
    assert got.speed == pytest.approx(2.0) and got.basis == "static"
    assert got.low < 1.1 and got.high > 3.5  # about a factor of two either way


def test_one_run_moves_the_estimate_part_way_and_many_runs_all_the_way() -> None:
    model = SpeedModel()
    model.learn(run(L4, H264_1080, 10.0))
    one = model.predict("n1", L4, H264_1080, prior=2.0)
    assert 2.0 < one.speed < 10.0 and one.basis == "node"  # shrunk toward the table
    for i in range(30):
        model.learn(run(L4, H264_1080, 10.0, at=i))
    many = model.predict("n1", L4, H264_1080, prior=2.0)
    assert many.speed == pytest.approx(10.0, rel=0.05)
    assert many.high / many.low < one.high / one.low  # surer with more runs


def test_a_devices_runs_teach_its_other_work_and_its_other_nodes() -> None:
    model = SpeedModel()
    for i in range(20):
        model.learn(run(L4, H264_1080, 8.0, at=i))  # 4x the table on this L4
    other_work = model.predict("n1", L4, HEVC_2160, prior=0.5)
    assert other_work.basis == "device" and other_work.speed == pytest.approx(2.0, rel=0.15)
    other_node = model.predict("n2", L4, H264_1080, prior=2.0)
    assert other_node.basis == "work" and other_node.speed == pytest.approx(8.0, rel=0.1)
    unseen = model.predict("n3", EPYC8, H264_1080, prior=2.0)
    assert unseen.basis == "static" and unseen.speed == pytest.approx(2.0)


def test_a_node_that_slows_down_is_followed_within_a_few_runs() -> None:
    model = SpeedModel()
    for i in range(50):
        model.learn(run(L4, H264_1080, 10.0, at=i))
    for i in range(10):  # throttled: half as fast from now on
        model.learn(run(L4, H264_1080, 5.0, at=50 + i))
    got = model.predict("n1", L4, H264_1080, prior=2.0)
    assert got.speed < 6.0  # the last ten runs weigh most


def test_an_odd_run_moves_little_and_noise_gives_a_range_that_holds_the_runs() -> None:
    rng = random.Random(7)
    model = SpeedModel()
    speeds = [10.0 * rng.lognormvariate(0, 0.15) for _ in range(40)]
    for i, s in enumerate(speeds):
        model.learn(run(L4, H264_1080, s, at=i))
    before = model.predict("n1", L4, H264_1080, prior=2.0)
    model.learn(run(L4, H264_1080, 1000.0, at=99))  # one broken measurement
    after = model.predict("n1", L4, H264_1080, prior=2.0)
    assert after.speed < before.speed * 1.4
    inside = sum(before.low <= s <= before.high for s in speeds[-20:])
    assert inside >= 10  # about one spread either way: most runs


def test_samples_round_trip_through_json_and_teach_a_new_model_the_same() -> None:
    samples = [run(L4, H264_1080, 9.0 + i % 3, at=i) for i in range(10)]
    samples.append(run(EPYC8, Work.of("libx264", "fast", 720, 30, "hevc", True), 1.5))
    text = "\n".join(json.dumps(s.to_dict()) for s in samples)
    back = [SpeedSample.from_dict(json.loads(line)) for line in text.splitlines()]
    assert back == samples
    first, second = SpeedModel(), SpeedModel()
    first.learn_all(samples)
    second.learn_all(back)
    assert first.predict("n1", L4, H264_1080, 2.0) == second.predict("n1", L4, H264_1080, 2.0)
