"""The shipped Prometheus, Grafana and Compose files, checked with the real tools (promtool).

`make test` installs Debian's `prometheus` package (promtool) when it is missing; without it
these tests fail rather than skip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.support.prometheus import (
    ALERT_CASES,
    ALERTS_YML,
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_YML,
    alert_rules,
    dashboard_exprs,
    dashboard_panels,
    metric_names,
    names_used_by_dashboard_and_alerts,
    promtool,
)


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (model, le) (rate(huatuo_ttft_bucket{model=~"$model",'
        'status=~"5.."}[$__rate_interval]))) > 2e3 and on (model) vllm:x unless up'
    ) == {"huatuo_ttft_bucket", "vllm:x", "up"}
    assert metric_names("deriv(sum by (m) (vllm:num_requests_waiting)[10m:1m]) > 0") == {
        "vllm:num_requests_waiting"}


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(ALERTS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_config_passes_promtool_check() -> None:
    result = promtool("check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout  # the rule file is found and checked too


def test_alerts_fire_on_synthetic_series_and_stay_quiet_on_healthy_traffic(
        tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERTS_YML.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")  # promtool would compare them too; see alert_rules.test.yml
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(ALERT_CASES, tmp_path / "alerts.test.yml")
    result = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_alert_exists_with_a_runbook() -> None:
    by_name = {rule["alert"]: rule for rule in alert_rules()}
    required = {
        "HuatuoHighErrorRate": "huatuo_requests_total",
        "HuatuoTTFTHigh": "huatuo_time_to_first_token_seconds_bucket",
        "HuatuoWaitingRequestsGrowing": "vllm:num_requests_waiting",
        "HuatuoKVCacheNearlyFull": "vllm:kv_cache_usage_perc",
        "HuatuoTargetDown": "up",
        "HuatuoTargetMissing": "up",
        "HuatuoEngineUnhealthy": "huatuo_engine_healthy",
        "HuatuoNoSuccessfulRequests": "huatuo_requests_total",
    }
    for alert, metric in required.items():
        assert alert in by_name, alert
        assert metric in metric_names(by_name[alert]["expr"]), alert
    for rule in by_name.values():
        annotations = rule["annotations"]
        assert len(annotations.get("runbook", "")) > 40, rule["alert"]
        assert annotations.get("summary"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (as recording rules, Grafana variables filled in)."""
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}",
         "expr": e.replace("$__rate_interval", "1m").replace("$model", ".*")}
        for i, e in enumerate(exprs)
    ]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_dashboard_has_a_model_variable_and_a_panel_for_every_gateway_metric() -> None:
    from server.metrics import GatewayMetrics

    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    assert "label_values(huatuo_requests_total, model)" in json.dumps(variable["query"])
    used = names_used_by_dashboard_and_alerts()
    families = {metric._name for metric in vars(GatewayMetrics([])).values()
                if hasattr(metric, "_name")}
    assert len(families) >= 13
    for family in families:
        assert any(name == family or name.startswith(family + "_") for name in used), family
    for panel in dashboard_panels():
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        # Every panel follows the model picker (process and up panels select on the job).
        for target in panel["targets"]:
            expr = target["expr"]
            assert "$model" in expr or 'job="huatuo"' in expr or "huatuo_engine_healthy" in expr


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "huatuo.yml").read_text())[
        "providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_runs_server_prometheus_and_grafana_from_the_shipped_files() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) >= {"server", "prometheus", "grafana"}
    assert services["server"]["build"] == {"context": "..", "target": "cpu"}
    assert services["server"]["environment"]["HUATUO_HOST"] == "0.0.0.0"
    # Prometheus scrapes the server by its service name and port.
    scrape = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    (huatuo,) = [job for job in scrape if job["job_name"] == "huatuo"]
    assert huatuo["static_configs"][0]["targets"] == ["server:8000"]
    mounts = {
        mount.split(":")[1]: mount.split(":")[0]
        for name in ("prometheus", "grafana") for mount in services[name]["volumes"]
        if mount.startswith("./")
    }
    assert (DEPLOY / mounts["/etc/prometheus"] / "prometheus.yml").is_file()
    assert (DEPLOY / mounts["/etc/grafana/provisioning"] / "datasources").is_dir()
    assert (DEPLOY / mounts["/var/lib/grafana/dashboards"] / "huatuo.json").is_file()

