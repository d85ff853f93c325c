"""The Prometheus rules, scrape config, Grafana dashboard and metrics docs agree with `build_metrics`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from streamtap.metrics import DEFAULT_PORT, build_metrics

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamtap.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"

METRIC_NAME = re.compile(r"\bstreamtap_[a-z0-9_]+")
# Series that Prometheus itself produces, not streamtap.
PROMETHEUS_SERIES = {"up"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def exposed_series() -> dict[str, str]:
    """Every series name streamtap exposes, mapped to the metric family it belongs to."""
    registry = CollectorRegistry()
    build_metrics(registry)
    return {
        family.name + suffix: family.name for family in registry.collect() for suffix in SUFFIXES[family.type]
    }


def rules() -> list[dict[str, Any]]:
    groups = load_yaml(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return exprs


def referenced(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


class TestAlerts:
    def test_every_rule_is_complete(self) -> None:
        assert len(rules()) >= 5
        for rule in rules():
            assert rule["alert"] and rule["expr"].strip(), rule
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
            assert rule["annotations"]["summary"].strip(), rule
            assert rule["annotations"]["description"].strip(), rule

    def test_covers_the_agreed_conditions(self) -> None:
        exprs = " ".join(rule["expr"] for rule in rules())
        for needle in (
            "streamtap_time_to_first_token_seconds_bucket",
            'outcome=~"http_error|model_error|upstream_disconnect"',
            "streamtap_recorder_dropped_total",
            "streamtap_tap_errors_total",
            'up{job="streamtap"} == 0',
        ):
            assert needle in exprs

    def test_metric_names_exist(self) -> None:
        exprs = [rule["expr"] for rule in rules()]
        assert referenced(exprs) and referenced(exprs) <= exposed_series().keys()
        assert "up{" in " ".join(exprs)

    def test_promtool_check_rules(self) -> None:
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool is not on PATH")
        result = subprocess.run(
            [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


class TestScrapeConfig:
    def test_scrapes_the_default_port_and_loads_the_rules(self) -> None:
        config = load_yaml(PROMETHEUS)
        assert [(PROMETHEUS.parent / f).resolve() for f in config["rule_files"]] == [ALERTS]
        (job,) = config["scrape_configs"]
        # the alert rules select this job
        assert job["job_name"] == "streamtap"
        assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{DEFAULT_PORT}"]

    def test_promtool_check_config(self) -> None:
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool is not on PATH")
        result = subprocess.run(
            [promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


class TestDashboard:
    def test_is_importable_json(self) -> None:
        data = dashboard()
        assert data["schemaVersion"] >= 36 and data["uid"] == "streamtap"
        assert [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
        variables = {v["name"]: v for v in data["templating"]["list"]}
        assert variables["DS_PROMETHEUS"]["type"] == "datasource"
        assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
        assert variables["model"]["query"].startswith("label_values(")
        assert variables["upstream"]["query"].startswith("label_values(")

    def test_every_panel_queries_prometheus(self) -> None:
        panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
        assert len(panels) >= 8
        ids = [p["id"] for p in dashboard()["panels"]]
        assert len(ids) == len(set(ids))
        for panel in panels:
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["expr"].strip() and target["refId"], panel["title"]

    def test_agreed_panels(self) -> None:
        panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
        exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}
        ttft = next(e for title, e in exprs.items() if "first token" in title)
        for quantile in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({quantile}, sum by (model, le)" in ttft
        heatmaps = [p for p in panels if p["type"] == "heatmap"]
        assert [h["targets"][0]["format"] for h in heatmaps] == ["heatmap"]
        assert "streamtap_inter_chunk_gap_seconds_bucket" in heatmaps[0]["targets"][0]["expr"]
        joined = " ".join(exprs.values())
        assert "sum by (finish_reason)" in joined and "sum by (outcome)" in joined

    def test_metric_names_exist_and_every_metric_is_shown(self) -> None:
        names = referenced(dashboard_exprs())
        series = exposed_series()
        assert names <= series.keys()
        assert {series[name] for name in names} == set(series.values())

    def test_queries_filter_by_the_template_variables(self) -> None:
        for panel in dashboard()["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                if "model" in expr or "upstream" in expr:
                    assert 'model=~"$model", upstream=~"$upstream"' in expr, expr

    def test_promtool_parses_every_query(self, tmp_path: Path) -> None:
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool is not on PATH")
        # promtool has no syntax-only query check, so wrap the queries as recording rules
        recording = [
            {"record": f"dashboard:query{i}", "expr": expr.replace("$__rate_interval", "1m")}
            for i, expr in enumerate(dashboard_exprs())
            if not expr.startswith("label_values(")
        ]
        path = tmp_path / "dashboard_rules.yml"
        path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": recording}]}))
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_doc_lists_every_metric_and_alert() -> None:
    doc = METRICS_DOC.read_text()
    table = {m.group(1) for m in re.finditer(r"^\| `(streamtap_[a-z0-9_]+)` \|", doc, re.MULTILINE)}
    registry = CollectorRegistry()
    build_metrics(registry)
    documented = {
        family.name + ("_total" if family.type == "counter" else "") for family in registry.collect()
    }
    assert table == documented
    for rule in rules():
        assert f"`{rule['alert']}`" in doc
