"""What a one-shot command starts before its command line is parsed, and the data dir
it finds without the settings (the CLI reads both before pydantic is imported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api import paths
from api.cli.discovery import GATEWAY_FILE_NAME
from api.cli.early import runs_here
from api.settings import Settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FRAMEFLEET_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FRAMEFLEET_RAY_ADDRESS", raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "here"),
    [
        (["encode", "in.mp4", "-o", "out.mp4"], True),
        (["--debug", "encode", "in.mp4", "-o", "out.mp4"], True),
        (["package", "in.mp4", "-o", "out/"], True),
        (["encode", "in.mp4", "-o", "out.mp4", "--address", "10.0.0.1:6379"], False),
        (["encode", "in.mp4", "-o", "out.mp4", "--address=10.0.0.1:6379"], False),
        (["encode", "--help"], False),
        (["probe", "in.mp4"], False),  # ffprobe only: the builds are not read
        (["jobs", "list"], False),
        (["-o", "out.mp4", "encode", "in.mp4"], False),  # the parser says what is wrong
        ([], False),
    ],
)
def test_which_command_lines_read_ffmpeg_ahead(data_dir: Path, args: list[str], here: bool) -> None:
    assert runs_here(args) is here


def test_a_gateway_serving_the_data_dir_or_a_cluster_named_reads_nothing(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = ["encode", "in.mp4", "-o", "out.mp4"]
    other = tmp_path / "other"
    other.mkdir()
    (other / GATEWAY_FILE_NAME).write_text("{}")
    assert runs_here([*line, "--data-dir", str(other)]) is False
    assert runs_here(line) is True
    (data_dir / GATEWAY_FILE_NAME).write_text("{}")
    assert runs_here(line) is False
    (data_dir / GATEWAY_FILE_NAME).unlink()
    monkeypatch.setenv("FRAMEFLEET_RAY_ADDRESS", "10.0.0.1:6379")
    assert runs_here(line) is False


@pytest.mark.parametrize("value", [None, "", "/srv/framefleet"])
def test_the_data_dir_is_the_one_the_settings_read(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("FRAMEFLEET_DATA_DIR", raising=False)
    else:
        monkeypatch.setenv("FRAMEFLEET_DATA_DIR", value)
    assert paths.data_dir() == Settings.load().data_dir
    assert paths.data_dir(Path("/given")) == Path("/given")


def test_the_input_probed_ahead_is_the_file_named_right_after_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.cli.early import _named_input

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.mp4").write_bytes(b"x")
    absolute = str((tmp_path / "in.mp4").absolute())
    assert _named_input(["encode", "in.mp4", "-o", "out.mp4"]) == absolute
    assert _named_input(["--debug", "encode", "in.mp4"]) == absolute
    assert _named_input(["encode", "-o", "out.mp4", "in.mp4"]) is None  # options first
    assert _named_input(["encode", "missing.mp4"]) is None
    assert _named_input(["encode", "s3://bucket/in.mp4"]) is None
    assert _named_input(["encode", "."]) is None  # not a regular file


def test_a_hint_that_cannot_be_read_is_no_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data dir the user may not enter: the command meets it and says so in one line;
    reading ahead does not raise first (a traceback before the CLI's own handling)."""
    from api.cli import early

    def denied(_: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(data_dir))

    monkeypatch.setattr(Path, "exists", denied)
    early.read_ahead(["encode", "in.mp4", "-o", "out.mp4"])  # no exception
    assert early.AHEAD.source is None
