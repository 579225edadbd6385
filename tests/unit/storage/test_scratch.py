"""Node scratch: claims within the disk and the budget, cleaned whatever the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.errors import ErrorCode, TransferError
from cluster.storage.scratch import NEW_S, OWNER, Scratch


def test_a_claim_is_a_folder_owned_by_this_process(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "scratch")
    claim = scratch.claim("j1.1", 1000)
    owner = json.loads((claim.path / OWNER).read_text())
    assert owner["pid"] == os.getpid() and owner["reserved"] == 1000
    assert scratch.sweep() == []  # its owner is alive
    assert scratch.usage()["jobs"] == 1
    claim.remove()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_the_budget_counts_what_other_attempts_reserved(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path, budget_bytes=10_000)
    scratch.claim("j1.1", 6000)
    with pytest.raises(TransferError) as full:
        scratch.claim("j2.1", 5000)
    assert full.value.code is ErrorCode.SCRATCH_FULL and full.value.retryable
    assert "this job needs 4.9 KiB and 5.9 KiB of its 9.8 KiB budget is in use" in str(full.value)
    assert "raise FRAMEFLEET_SCRATCH_BYTES or wait" in str(full.value)
    assert scratch.claim("j3.1", 4000).reserved == 4000


def test_a_job_larger_than_the_disk_is_refused_before_any_download(tmp_path: Path) -> None:
    with pytest.raises(TransferError) as full:
        Scratch(tmp_path).claim("j1.1", 2**60)
    assert f"scratch {tmp_path} has" in str(full.value)
    assert "point FRAMEFLEET_SCRATCH at a larger disk" in str(full.value)
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_what_dead_owners_left(tmp_path: Path) -> None:
    # A real process claims a folder, writes a partial output and dies without cleaning.
    code = (
        "import sys; from pathlib import Path; from cluster.storage.scratch import Scratch;"
        "c = Scratch(Path(sys.argv[1])).claim('dead.1', 10); (c.path / 'out.mp4').write_bytes(b'x')"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    alive = Scratch(tmp_path).claim("alive.1", 10)
    young = tmp_path / "young.1"
    young.mkdir()  # being made: no owner record yet
    old = tmp_path / "old.1"
    old.mkdir()
    os.utime(old, (0, 0))
    assert sorted(Scratch(tmp_path).sweep()) == ["dead.1", "old.1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alive.1", "young.1"]
    assert alive.path.exists() and NEW_S > 0
