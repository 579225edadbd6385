"""Probing masters in object storage where they are (a real S3 API on 127.0.0.1, real
ffmpeg, no Ray): idet and the first frame's side data read through the same presigned
link as ffprobe, and a failed read never shows the link."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from cluster.media.probe import probe_object_async
from cluster.model.media import ScanType
from cluster.storage.objects import ObjectStore
from cluster.storage.urls import parse_object_url
from tests.helpers import ObjectServer, make_hdr10, make_telecined


def test_telecine_and_hdr10_are_found_in_object_storage(s3: ObjectServer, tmp_path: Path) -> None:
    store = ObjectStore(endpoint=s3.endpoint)
    film = s3.put(make_telecined(tmp_path / "film.ts"), "s3://media/masters/film.ts")
    hdr = s3.put(make_hdr10(tmp_path / "hdr10.mp4"), "s3://media/masters/hdr10.mp4")
    film_info = asyncio.run(probe_object_async(parse_object_url(film, what="input"), store))
    hdr_info = asyncio.run(probe_object_async(parse_object_url(hdr, what="input"), store))
    assert film_info.video is not None and film_info.video.scan is not None
    assert film_info.video.scan.type is ScanType.TELECINED
    assert hdr_info.video is not None and hdr_info.video.colour is not None
    assert (hdr_info.video.hdr, hdr_info.video.colour.max_cll) == ("PQ", 1000)


def test_a_failed_read_of_an_object_says_so_without_its_link(
    s3: ObjectServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    film = s3.put(make_telecined(tmp_path / "film.ts"), "s3://media/masters/broken-idet.ts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ffmpeg"  # prints its input (the link) and fails
    fake.write_text('#!/bin/sh\nfor a; do [ "$prev" = -i ] && link="$a"; prev="$a"; done\n'
                    'echo "$link: refused" >&2\nexit 1\n')  # fmt: skip
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    caplog.set_level(logging.WARNING, "framefleet.probe")
    info = asyncio.run(
        probe_object_async(parse_object_url(film, what="input"), ObjectStore(s3.endpoint))
    )
    assert info.video is not None and info.video.scan is not None
    assert info.video.scan.type is ScanType.PROGRESSIVE and info.video.scan.idet is None
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "framefleet.probe"]
    assert warning.startswith(f"{film}: the idet read failed (exit status 1: ")
    assert film in warning.partition("(")[2]  # the link, shown as the object's URL
    assert "Signature" not in warning and "http" not in warning
