"""Prometheus configuration and rules: valid for promtool, the same jobs locally and in compose,
and every alert unit-tested both firing and quiet."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from monitoring_support import (
    MONITORING,
    PROMETHEUS_CONFIGS,
    RULE_FILES,
    RULE_TESTS,
    alert_names,
    load_yaml,
    rule_groups,
)


def _promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], cwd=MONITORING.parent, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS, ids=lambda p: p.name)
def test_promtool_accepts_the_prometheus_config(promtool: str, config: Path) -> None:
    result = _promtool(promtool, "check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    # The rule files are part of the check: the glob must find them.
    assert all(path.name in result.stdout + result.stderr for path in RULE_FILES)


def test_promtool_accepts_the_rules(promtool: str) -> None:
    assert RULE_FILES, "no rule files in monitoring/rules"
    result = _promtool(promtool, "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no rule unit tests in monitoring/rules/tests"
    result = _promtool(promtool, "test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    firing: dict[str, int] = defaultdict(int)
    quiet: dict[str, int] = defaultdict(int)
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet)[check["alertname"]] += 1
    alerts = alert_names()
    assert len(alerts) == len(set(alerts)), "alert names must be unique"
    assert [a for a in alerts if not firing[a]] == [], "alerts without a firing test"
    assert [a for a in alerts if not quiet[a]] == [], "alerts without a not-firing test"
    assert set(firing) | set(quiet) <= set(alerts), "tests of alerts that do not exist"


def test_alerts_carry_severity_and_explanations() -> None:
    for _, group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_issue_asks_for_these_alerts() -> None:
    expected = {
        "ChatErrorRateHigh",
        "ChatLatencyP95High",
        "ChatQueueBacklogGrowing",
        "NoFreeWorkerSlots",
        "TargetDown",
        "OllamaNodeDown",
        "ArchiveLagging",
        "ArchiveRetrying",
        "AuthFailuresSpike",
        "GatewayAuthFailuresSpike",
    }
    assert expected <= set(alert_names())


def _jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_local_config_scrapes_every_service_of_the_local_run() -> None:
    config = load_yaml(MONITORING / "prometheus.yml")
    assert config["rule_files"] == ["rules/*.yml"]
    targets = {
        name: [t for static in job.get("static_configs", []) for t in static["targets"]]
        for name, job in _jobs(config).items()
    }
    assert targets == {
        "gateway": ["127.0.0.1:8101", "127.0.0.1:8102", "127.0.0.1:8103"],
        "inference_worker": ["127.0.0.1:8201", "127.0.0.1:8202"],
        "auth": ["127.0.0.1:8001"],
        "archiver": ["127.0.0.1:8301"],
        "ledger": ["127.0.0.1:8501"],
        "haproxy": ["127.0.0.1:8404"],
    }
    assert _jobs(config)["haproxy"]["metrics_path"] == "/metrics"


def test_compose_config_has_the_same_jobs_by_service_name() -> None:
    local = load_yaml(MONITORING / "prometheus.yml")
    compose = load_yaml(MONITORING / "prometheus.compose.yml")
    assert compose["rule_files"] == local["rule_files"]
    jobs = _jobs(compose)
    assert jobs.keys() == _jobs(local).keys(), "alerts and dashboards select on job names"
    # Workers are replicas: discovered through Docker's DNS, one A record per container.
    assert jobs["inference_worker"]["dns_sd_configs"] == [
        {"names": ["inference-worker"], "type": "A", "port": 8201, "refresh_interval": "15s"}
    ]
    for name, job in jobs.items():
        for static in job.get("static_configs", []):
            assert all(not t.startswith(("127.", "localhost")) for t in static["targets"]), name
