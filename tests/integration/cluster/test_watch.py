"""Watch folders on the real cluster: a file is submitted once it is completely written,
once only, even across a restart of the watcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster import Fleet, FolderWatcher, FramefleetError, WatchRule, check_rule
from cluster.control.fakes import FakeClock
from tests.helpers import count_frames, make_clip


def rule(src: Path, out: Path, **kw: Any) -> WatchRule:
    settings: dict[str, Any] = {
        "template": {"hardware": "cpu", "speed": "fast"},
        "stable_s": 0.5,
    } | kw
    return WatchRule(folder=src, output_dir=out, **settings)


def test_a_file_is_submitted_once_written_and_never_twice(
    fleet: Fleet, tmp_path: Path, media: Path
) -> None:
    src, out, db = tmp_path / "in", tmp_path / "out", tmp_path / "watch.sqlite3"
    src.mkdir()
    out.mkdir()
    lines: list[str] = []
    clock = FakeClock()
    watcher = FolderWatcher(rule(src, out), db, fleet.submit, say=lines.append, clock=clock)
    clip = (media / "clip.mp4").read_bytes()
    (src / "notes.txt").write_text("not a video")
    (src / ".hidden.mp4").write_bytes(clip)
    growing = src / "a.mp4"
    with growing.open("wb") as f:  # written in pieces: not stable yet
        for i in range(0, len(clip), len(clip) // 4):
            f.write(clip[i : i + len(clip) // 4])
            f.flush()
            assert watcher.scan() == []
            clock.advance(0.2)
    assert watcher.scan() == []  # complete 0.2 s ago: it must stay unchanged for 0.5 s
    clock.advance(0.29)
    assert watcher.scan() == []
    clock.advance(0.01)
    [job] = watcher.scan()
    assert job.spec.input == str(growing) and job.spec.output == str(out / "a.mp4")
    assert fleet.wait(job.id, timeout=60).status == "succeeded"
    assert count_frames(out / "a.mp4") == 50
    assert any("a.mp4: written completely; submitted job" in line for line in lines)
    clock.advance(0.6)
    assert watcher.scan() == []  # the same file again: no
    watcher.close()

    # A restart remembers; a new file is new, and a replaced file is new too.
    again = FolderWatcher(rule(src, out), db, fleet.submit, say=lines.append, clock=clock)
    make_clip(src / "b.mkv", seconds=1)
    again.scan()
    clock.advance(0.6)
    [job_b] = again.scan()
    assert job_b.spec.input == str(src / "b.mkv")
    assert fleet.wait(job_b.id, timeout=60).status == "succeeded"
    again.close()


def test_a_refused_file_is_said_once_and_rules_are_checked(
    fleet: Fleet, tmp_path: Path, media: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (out / "c.mp4").write_text("already here")
    (src / "c.mp4").write_bytes((media / "clip.mp4").read_bytes())
    lines: list[str] = []
    clock = FakeClock()
    watcher = FolderWatcher(rule(src, out), tmp_path / "w.sqlite3", fleet.submit,
                            say=lines.append, clock=clock)  # fmt: skip
    watcher.scan()
    clock.advance(0.6)
    assert watcher.scan() == []
    clock.advance(0.6)
    watcher.scan()
    refused = [line for line in lines if "not submitted" in line]
    assert len(refused) == 1 and "already exists; allow overwriting" in refused[0]
    watcher.close()
    with pytest.raises(FramefleetError, match="is not a folder"):
        check_rule(rule(tmp_path / "nope", out))
    with pytest.raises(FramefleetError, match="outputs would be re-watched"):
        check_rule(rule(src, src))
    with pytest.raises(FramefleetError, match="cannot hold h264"):
        check_rule(rule(src, out, output_ext="webm"))
