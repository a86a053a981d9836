"""Grafana provisioning and the seed's four dashboards: well-formed, on the provisioned datasource,
with the seed's queries where the seed names them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from monitoring_support import (
    DASHBOARDS,
    DASHBOARDS_DIR,
    GRAFANA_DATASOURCES,
    GRAFANA_PROVIDERS,
    load_dashboard,
    load_yaml,
    panels,
)

SEED_DASHBOARDS = {"Chat API Performance", "System Resources", "Request Rates", "Error Rates"}


def _datasource() -> dict[str, Any]:
    (datasource,) = load_yaml(GRAFANA_DATASOURCES)["datasources"]
    return dict(datasource)


def test_datasource_is_the_compose_prometheus() -> None:
    datasource = _datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["uid"] == "prometheus"
    assert datasource["isDefault"] is True


def test_dashboard_provider_loads_the_dashboard_files() -> None:
    (provider,) = load_yaml(GRAFANA_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    assert DASHBOARDS, f"no dashboards in {DASHBOARDS_DIR}"


def test_the_seed_dashboards_exist_once_each() -> None:
    documents = [load_dashboard(path) for path in DASHBOARDS]
    assert sorted(d["title"] for d in documents) == sorted(SEED_DASHBOARDS)
    uids = [d["uid"] for d in documents]
    assert len(set(uids)) == len(uids)
    assert all(path.stem == load_dashboard(path)["uid"] for path in DASHBOARDS)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_panels_are_well_formed(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["id"] is None, "provisioned dashboards must not carry a database id"
    uid = _datasource()["uid"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queried = [panel for panel in panels(dashboard) if panel["type"] != "row"]
    assert len(queried) >= 4
    for panel in queried:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, title
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24 and position["h"] > 0, title
        targets = panel["targets"]
        assert targets, f"{title}: no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in targets:
            assert target["expr"].strip(), title
            assert target["datasource"]["uid"] == uid, title
            assert "$" not in target["expr"], f"{title}: Grafana variables are not defined here"


def _exprs(title: str) -> list[str]:
    (path,) = [p for p in DASHBOARDS if load_dashboard(p)["title"] == title]
    return [t["expr"] for panel in panels(load_dashboard(path)) for t in panel.get("targets", [])]


def test_chat_api_performance_shows_the_seed_queries() -> None:
    exprs = _exprs("Chat API Performance")
    assert "sum(rate(chat_requests_total[5m]))" in exprs
    assert any(
        e.startswith("histogram_quantile(0.95") and "chat_request_duration_seconds_bucket" in e for e in exprs
    )
    # Every gateway reports the same cluster-wide count: max, never sum.
    assert "max(chat_active_sessions_total)" in exprs
    assert not any("sum(chat_active_sessions_total" in e for e in exprs)
    for metric in ("chat_time_to_first_token_seconds_bucket", "chat_tokens_generated_total"):
        assert any(metric in e for e in exprs), metric


@pytest.mark.parametrize(
    ("title", "metrics"),
    [
        (
            "System Resources",
            [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "worker_busy_slots",
                "ollama_node_up",
                "ollama_node_in_flight",
                "haproxy_backend_active_servers",
            ],
        ),
        ("Request Rates", ["chat_requests_total", "chat_rate_limited_total", "chat_queue_depth"]),
        (
            "Error Rates",
            [
                "chat_stream_errors_total",
                "worker_errors_total",
                "auth_failures_total",
                "gateway_auth_failures_total",
                "archiver_failures_total",
            ],
        ),
    ],
)
def test_dashboard_covers_its_subject(title: str, metrics: list[str]) -> None:
    exprs = _exprs(title)
    assert [m for m in metrics if not any(m in e for e in exprs)] == []
