"""FRAMEFLEET_MEDIA_ROOTS with folders and s3:// roots side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import Settings
from cluster import ConfigError, JobKind, JobSpec, SpecError, confine, parse_object_roots


def test_folders_and_buckets_split_apart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "FRAMEFLEET_MEDIA_ROOTS", f"{tmp_path}/a:s3://media/farm/,{tmp_path}/b, s3://renders"
    )
    settings = Settings.load(data_dir=tmp_path)
    assert settings.roots(serving=True) == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert settings.object_roots() == ("s3://media/farm", "s3://renders/")


def test_only_buckets_means_no_local_path_at_all(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FRAMEFLEET_MEDIA_ROOTS", "s3://media/farm")
    settings = Settings.load(data_dir=tmp_path)
    assert settings.roots(serving=True) == ()  # not <data dir>/media
    objects = parse_object_roots(settings.object_roots())
    with pytest.raises(SpecError) as refused:
        confine(JobSpec(JobKind.PROBE, str(tmp_path / "a.mp4")), (), objects)
    assert "this farm keeps media in object storage only (s3://media/farm)" in str(refused.value)
    spec = confine(JobSpec(JobKind.PROBE, "s3://media/farm/a.mp4"), (), objects)
    assert spec.input == "s3://media/farm/a.mp4"


def test_a_bad_bucket_root_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FRAMEFLEET_MEDIA_ROOTS", "s3://Bad_Bucket/x")
    with pytest.raises(ConfigError) as bad:
        Settings.load(data_dir=tmp_path)
    assert "FRAMEFLEET_MEDIA_ROOTS" in str(bad.value)
    assert "'Bad_Bucket' is not a valid bucket name" in str(bad.value)
