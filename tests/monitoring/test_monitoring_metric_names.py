"""No dashboard panel or rule on a metric nobody exports: every metric name the dashboards and
rules select is scraped from the running services after real traffic (or from a real HAProxy)."""

from __future__ import annotations

from collections import defaultdict

import aiohttp
import pytest
from monitoring_support import (
    PENDING_METRICS,
    Query,
    System,
    dashboard_queries,
    promql_metric_names,
    recorded_names,
    rule_queries,
    sample_names,
    scrape,
)

# Series Prometheus writes itself for every target.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def _referenced() -> dict[str, list[str]]:
    """Metric name -> where it is used, for every selector in the dashboards and rules."""
    uses: dict[str, list[str]] = defaultdict(list)
    for query in [*dashboard_queries(), *rule_queries()]:
        for name in promql_metric_names(query.expr):
            uses[name].append(query.where)
    return uses


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(chat_requests_total[5m]))", {"chat_requests_total"}),
        (
            'histogram_quantile(0.95, sum by (le, stream) (rate(x_bucket{stream="false", le!="+Inf"}[5m])))',
            {"x_bucket"},
        ),
        ("max(a) > 1e3 and max(delta(b[10m] offset 1h)) > 0", {"a", "b"}),
        ("sum(a) without (instance) / on (job) group_left (node) b", {"a", "b"}),
        ('rate(a[5m:1m]) > bool 0 unless absent(b{job="x"} == 1)', {"a", "b"}),
        ("job:chat_requests:rate5m > 0.1", {"job:chat_requests:rate5m"}),
        ('label_replace(up, "dst", "$1", "instance", "(.*):by(x)")', {"up"}),
        ("sum by(status)(rate(chat_requests_total[5m])) or vector(0) > Inf", {"chat_requests_total"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_every_query_selects_a_metric() -> None:
    queries: list[Query] = [*dashboard_queries(), *rule_queries()]
    assert queries
    assert [q.where for q in queries if not promql_metric_names(q.expr)] == []


def test_recorded_series_in_use_are_recorded() -> None:
    recorded = {name for name in _referenced() if ":" in name}
    assert recorded <= recorded_names()


async def test_every_metric_in_dashboards_and_rules_is_exported(busy_system: System) -> None:
    exported: dict[str, set[str]] = {}
    async with aiohttp.ClientSession() as session:
        for target, url in busy_system.metrics_urls().items():
            exported[target] = sample_names(await scrape(session, url))
    everything = set().union(*exported.values())

    referenced = _referenced()
    ours = {n for n in referenced if ":" not in n and not n.startswith("haproxy_") and n not in SCRAPE_SERIES}
    missing = {name: referenced[name] for name in sorted(ours - everything - PENDING_METRICS)}
    assert missing == {}, "selected by dashboards/rules, exported by no service"

    # The allow-list only holds names still missing and still used.
    assert sorted(PENDING_METRICS - set(referenced)) == [], "unused names in PENDING_METRICS"
    assert sorted(PENDING_METRICS & everything) == [], "exported now: remove from PENDING_METRICS"

    # The seed's three metrics, from every gateway.
    for target, names in exported.items():
        if target.startswith("gateway@"):
            assert {
                "chat_requests_total",
                "chat_request_duration_seconds_bucket",
                "chat_active_sessions_total",
            } <= names


async def test_haproxy_metrics_in_dashboards_and_rules_exist(haproxy_metrics_url: str) -> None:
    referenced = {n for n in _referenced() if n.startswith("haproxy_")}
    assert referenced, "the dashboards show HAProxy"
    async with aiohttp.ClientSession() as session:
        exported = sample_names(await scrape(session, haproxy_metrics_url))
    assert sorted(referenced - exported) == []
