"""framefleet's Prometheus alerts (deploy/prometheus/alerts.yml): checked and unit-tested
with promtool on synthetic series (alerts_test.yml), every alert shown firing and quiet,
and the Prometheus Operator's copy (k8s/base/prometheusrule.yaml) the same rules. Also
the dashboard's per-tenant row: its queries parse (promtool) and follow ``$tenant``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import missing_tool

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "base" / "prometheusrule.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        missing_tool("promtool is not installed here; install prometheus to check the alerts")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False,
                          timeout=120)  # fmt: skip


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_alert_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = promtool("test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_prometheus_config_loads_the_alerts() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_every_alert_is_labelled_explained_and_shown_firing_and_quiet() -> None:
    rules = alerts()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    assert {
        "FramefleetQueueWaitingTooLong",
        "FramefleetTenantStarved",
        "FramefleetNodeQuarantined",
        "FramefleetGpuQuarantined",
        "FramefleetStallsClimbing",
        "FramefleetCoordinatorDown",
        "FramefleetGatewayDown",
        "FramefleetNodeAgentDown",
        "FramefleetNvencFailing",
    } <= set(names)
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "for" in rule, rule["alert"]
    suite = yaml.safe_load(ALERTS_TEST.read_text())
    assert suite["rule_files"] == ["alerts.yml"]
    cases = [case for test in suite["tests"] for case in test.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert set(names) - fires == set(), "alerts never shown firing"
    assert set(names) - quiet == set(), "alerts never shown quiet"
    # A firing case names the alert's annotations exactly, not a subset.
    for case in cases:
        for alert in case.get("exp_alerts") or []:
            assert set(alert["exp_annotations"]) == {"summary", "description"}, case
            assert "severity" in alert["exp_labels"], case
    # Every alert has its entry in deploy/README.md's "Alerts".
    readme = (ROOT / "deploy" / "README.md").read_text()
    for name in names:
        assert f"`{name}`" in readme, name


def test_the_prometheus_rule_holds_exactly_the_same_groups() -> None:
    [rule] = [d for d in yaml.safe_load_all(PROMETHEUS_RULE.read_text()) if d]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "framefleet"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    [monitor] = yaml.safe_load_all((ROOT / "k8s" / "base" / "servicemonitor.yaml").read_text())
    assert rule["metadata"]["labels"] == monitor["metadata"]["labels"]


def test_the_dashboards_tenant_row_follows_the_tenant_variable(tmp_path: Path) -> None:
    board = json.loads((ROOT / "deploy/grafana/dashboards/framefleet.json").read_text())
    [tenant] = [v for v in board["templating"]["list"] if v["name"] == "tenant"]
    assert tenant["query"] == "label_values(framefleet_tenant_queued_jobs, tenant)"
    assert tenant["multi"] is True and tenant["includeAll"] is True
    # The row is collapsed: its panels are inside it, where test_farm.py's live check of
    # every top-level query does not reach (it sends queries as written, and $tenant is
    # Grafana's to fill in), so they are checked here.
    [row] = [p for p in board["panels"] if p["type"] == "row"]
    assert row["collapsed"] is True and row["targets"] == []
    exprs = [t["expr"] for p in row["panels"] for t in p["targets"]]
    for name in ("queued_jobs", "running_jobs", "oldest_queued_seconds", "usage_share",
                 "weight_share", "gpu_seconds_total"):  # fmt: skip
        assert any(f"framefleet_tenant_{name}{{" in e for e in exprs), name
    assert all('{tenant=~"$tenant"}' in e for e in exprs), exprs
    ids = [p["id"] for p in board["panels"]] + [p["id"] for p in row["panels"]]
    assert len(ids) == len(set(ids))
    # promtool parses each query (as Grafana sends it: the variables filled in).
    rules = [
        {"record": f"dashboard:tenant:{n}",
         "expr": e.replace("$tenant", "a|b").replace("$__rate_interval", "1m")}
        for n, e in enumerate(exprs)
    ]  # fmt: skip
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]})
    )
    done = promtool("check", "rules", str(tmp_path / "queries.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
