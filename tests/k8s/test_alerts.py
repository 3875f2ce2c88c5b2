"""The alert rules and the Grafana dashboard: promtool parses the rules and runs their unit
tests (``alerts_test.yaml``), and every metric they query is one morphtune or Ray really
exports (morphtune's names come from the code that registers them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.manifests import K8S, Doc, all_pod_templates, find, one
from tests.k8s.promql import (
    SCRAPE_SERIES,
    metric_names,
    morphtune_metric_names,
    ray_metric_names,
)

HERE = Path(__file__).resolve().parent
RULE = K8S / "base" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = K8S / "base" / "monitoring" / "grafana-dashboard.json"
REQUIRED_ALERTS = {
    "MorphtuneSweepStalled",
    "MorphtuneTrialFailureRatioHigh",
    "MorphtuneResultsServiceDown",
}


def promtool() -> str:
    """promtool's path (it may live outside PATH at /usr/bin); skips where it is absent,
    fails instead when MORPHTUNE_REQUIRE_PROMETHEUS=1."""
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if os.access("/usr/bin/promtool", os.X_OK) else None
    )
    if path is None:
        if os.environ.get("MORPHTUNE_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("MORPHTUNE_REQUIRE_PROMETHEUS=1 but promtool is not installed")
        pytest.skip("promtool is not installed (MORPHTUNE_REQUIRE_PROMETHEUS=1 fails instead)")
    return path


def _rule_groups(rule: Doc) -> Doc:
    return {"groups": rule["spec"]["groups"]}


def _rules(rule: Doc) -> list[Doc]:
    return [item for group in rule["spec"]["groups"] for item in group["rules"]]


def _raw_rule() -> Doc:
    loaded = yaml.safe_load(RULE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def _check_rules(groups: Doc, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "morphtune-rules.yaml"
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return _promtool("check", "rules", str(path))


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    checked = _check_rules(_rule_groups(_raw_rule()), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_rules(_raw_rule()))} rules found" in checked.stdout


def test_promtool_accepts_each_overlays_rules(docs: list[Doc], tmp_path: Path) -> None:
    rule = one(docs, "PrometheusRule", "morphtune")
    assert rule["spec"] == _raw_rule()["spec"]
    checked = _check_rules(_rule_groups(rule), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """``promtool test rules``: each alert fires on the series it is for, after its
    ``for``, once per sweep however many replicas export it, and not on the near misses."""
    _check_rules(_rule_groups(_raw_rule()), tmp_path)
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    tested = _promtool("test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    covered = {
        check["alertname"]
        for case in yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
        for check in case["alert_rule_test"]
    }
    assert covered == {rule["alert"] for rule in _rules(_raw_rule())}


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    groups = _rule_groups(_raw_rule())
    groups["groups"][0]["rules"][0]["expr"] = "max by (sweep) (morphtune_trials{state=}) > 0"
    checked = _check_rules(groups, tmp_path)
    assert checked.returncode != 0
    assert "parse error" in checked.stdout + checked.stderr


def test_the_required_alerts_exist_with_severity_and_summary() -> None:
    rules = _rules(_raw_rule())
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "for" in rule, rule["alert"]


def unknown_metrics(expression: str, known: frozenset[str]) -> set[str]:
    return metric_names(expression) - known - SCRAPE_SERIES


def test_alerts_use_metrics_morphtune_exports() -> None:
    exported = morphtune_metric_names()
    assert "morphtune_trials" in exported and "grpc_server_handled_total" in exported
    for rule in _rules(_raw_rule()):
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert unknown_metrics(rule["expr"], exported) == set(), rule["alert"]


def test_the_metric_check_catches_a_name_morphtune_does_not_export() -> None:
    exported = morphtune_metric_names()
    assert unknown_metrics('morphtune_trails{state="failed"} > 0', exported) == {"morphtune_trails"}
    assert unknown_metrics("rate(grpc_server_handled[5m])", exported) == {"grpc_server_handled"}
    assert unknown_metrics("ray_node_cpu_utilization > 90", exported) == {
        "ray_node_cpu_utilization"
    }


def test_alert_jobs_are_the_jobs_the_monitors_produce(docs: list[Doc]) -> None:
    """`up{job=...}` in the alerts names the job label the ServiceMonitor/PodMonitor set
    (their jobLabel read from the Service's / pods' labels)."""
    jobs = set()
    for monitor in find(docs, "ServiceMonitor"):
        label = monitor["spec"]["jobLabel"]
        for service in find(docs, "Service"):
            if label in service["metadata"].get("labels", {}):
                jobs.add(service["metadata"]["labels"][label])
    for monitor in find(docs, "PodMonitor"):
        label = monitor["spec"]["jobLabel"]
        jobs |= {t.labels[label] for t in all_pod_templates(docs) if t.role == "ray"}
    expressions = " ".join(
        rule["expr"] for rule in _rules(one(docs, "PrometheusRule", "morphtune"))
    )
    used = set(re.findall(r'job="([^"]+)"', expressions))
    assert used and used <= jobs, (used, jobs)


# ------------------------------------------------------------------ Grafana dashboard


def _dashboard() -> Doc:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _targets(dashboard: Doc) -> list[Doc]:
    return [target for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_queries_metrics_that_exist() -> None:
    dashboard = _dashboard()
    known = morphtune_metric_names() | ray_metric_names()
    queried: set[str] = set()
    for target in _targets(dashboard):
        assert unknown_metrics(target["expr"], known) == set(), target["expr"]
        queried |= metric_names(target["expr"])
    # search metrics and Ray metrics, GPUs included
    assert {"morphtune_trials", "morphtune_best_objective", "morphtune_hypervolume"} <= queried
    assert {"ray_node_gpus_utilization", "ray_node_gram_used", "ray_resources"} <= queried


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {item["name"] for item in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "sweep"} <= variables
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_dashboard_ships_as_a_configmap(docs: list[Doc]) -> None:
    config_map = one(docs, "ConfigMap", "morphtune-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["morphtune.json"]) == _dashboard()
