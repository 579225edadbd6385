"""``framefleet probe`` on broadcast and HDR masters (real ffmpeg, no cluster): the scan
and colour lines, and the same in ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import env_without_ray, make_hdr10, make_interlaced, make_telecined

ROOT = Path(__file__).resolve().parents[3]


def framefleet(*args: str) -> str:
    """``framefleet ARGS`` from this tree; its standard output."""
    done = subprocess.run([sys.executable, "-c", "from api.cli import main; main()", *args],
                          cwd=ROOT, capture_output=True, text=True, env=env_without_ray(),
                          timeout=60, check=True)  # fmt: skip
    return done.stdout


def test_probe_shows_the_scan_as_tagged(tmp_path: Path) -> None:
    tagged = framefleet("probe", str(make_interlaced(tmp_path / "25i.ts", top_first=False)))
    assert "    scan: interlaced, bottom field first (tagged bb)\n" in tagged
    assert "    colour: SDR\n" in tagged


def test_probe_shows_what_idet_counted(tmp_path: Path) -> None:
    film = framefleet("probe", str(make_telecined(tmp_path / "film.ts")))
    (line,) = [line for line in film.splitlines() if line.startswith("    scan: ")]
    assert line.startswith("    scan: telecined, top field first (tagged progressive; idet TFF ")
    assert ", repeated fields " in line


def test_probe_shows_hdr_colour_and_json_has_both(tmp_path: Path) -> None:
    clip = make_hdr10(tmp_path / "hdr10.mkv", rate="24")
    assert (
        "    colour: HDR PQ (bt2020): mastered at 1000 cd/m², MaxCLL 1000, MaxFALL 400\n"
        in framefleet("probe", str(clip))
    )
    video = json.loads(framefleet("probe", str(clip), "--json"))["video"]
    assert video["scan"] == {"type": "progressive", "top_first": True, "tagged": "progressive",
                             "idet": None}  # fmt: skip
    assert video["colour"]["transfer"] == "smpte2084" and video["colour"]["max_fall"] == 400
    assert video["colour"]["mastering"]["max_luminance"] == 1000
