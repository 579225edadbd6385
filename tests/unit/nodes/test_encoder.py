"""The encoder worker on a node whose ffmpeg is missing (no ffmpeg is run)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster import CATALOG, ErrorCode, JobKind, JobSpec
from cluster.control.fakes import fake_media
from cluster.media.work import plan_work
from cluster.nodes.encoder import EncoderWorker


def test_a_node_without_ffmpeg_answers_encoder_unavailable_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    src.write_bytes(b"fake")
    spec = JobSpec(kind=JobKind.TRANSCODE, input=str(src), output=str(out))
    encoder = next(e for e in CATALOG if e.name == "libx264")
    order = plan_work("j1", 1, spec, fake_media(str(src)), encoder,
                      ffmpeg=str(tmp_path / "no-ffmpeg"), roots=(str(tmp_path),))  # fmt: skip
    outcome = asyncio.run(EncoderWorker().run(order))
    assert (outcome.status, outcome.error_code) == ("failed", ErrorCode.ENCODER_UNAVAILABLE)
    assert outcome.retryable  # another node's ffmpeg may do
    assert "is not installed" in (outcome.error or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
