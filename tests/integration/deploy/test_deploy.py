"""The deployment files, checked offline with the real tools: systemd-analyze, promtool,
and the Grafana files as Grafana reads them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers import missing_tool

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
FRAMEFLEET = ROOT / ".venv" / "bin" / "framefleet"


def test_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        missing_tool("systemd-analyze is not installed here; install systemd to check the units")
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert {u.name for u in units} == {
        "framefleet-head.service",
        "framefleet-worker.service",
        "framefleet-gateway.service",
    }
    for unit in units:  # the units name /opt/framefleet; verify them against this checkout
        text = unit.read_text().replace("/opt/framefleet/.venv/bin/framefleet", str(FRAMEFLEET))
        (tmp_path / unit.name).write_text(text)
        assert "KillMode=" in text and "User=framefleet" in text and "NoNewPrivileges=yes" in text
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, sorted(tmp_path.glob("*.service")))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_units_run_real_framefleet_commands() -> None:
    for unit in (DEPLOY / "systemd").glob("*.service"):
        [line] = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
        args = line.split("framefleet ", 1)[1].split()
        command = args[: 2 if args[0] == "node" else 1]
        shown = subprocess.run([str(FRAMEFLEET), *command, "--help"], capture_output=True,
                               text=True, check=False)  # fmt: skip
        assert shown.returncode == 0, (unit.name, shown.stderr)
        for option in [a for a in args if a.startswith("--")]:
            assert option in shown.stdout, (unit.name, option)


def test_promtool_accepts_the_shipped_prometheus_config() -> None:
    check = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_provisioning_and_dashboard_hang_together() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http://prometheus:")
    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/framefleet.yml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    board = json.loads((DEPLOY / "grafana/dashboards/framefleet.json").read_text())
    assert board["uid"] == "framefleet" and len(board["panels"]) >= 12
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    metrics = {m for e in exprs for m in re.findall(r"framefleet_[a-z_]+", e)}
    wanted = [
        "gpu_utilization_ratio",
        "gpu_encoder_utilization_ratio",
        "gpu_memory_used_bytes",
        "gpu_encoder_sessions",
        "queue_depth",
        "queue_wait_seconds_bucket",
        "encode_fps",
        "jobs_finished_total",
        "job_duration_seconds_bucket",
        "node_cpus_allocated",
    ]
    for name in wanted:
        assert f"framefleet_{name}" in metrics, name
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
