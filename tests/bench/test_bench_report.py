"""The bench's arithmetic: percentiles, phase summaries, the pipeline/direct comparison, per-chat
figures, the targets, rendering. No timing is asserted anywhere: the bench reports timings."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest

from bench.cpu import CpuUsage
from bench.loadgen import PhaseResult
from bench.memory import RssFigures
from bench.parsers import NdjsonParser, SseParser
from bench.report import Check, PhaseSummary, Report, checks, compare, percentile, render_json, render_text


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_percentile_matches_statistics_inclusive() -> None:
    data = [float((i * 37) % 101) for i in range(1, 250)]
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    for q in (1, 50, 95, 99):
        assert percentile(data, q) == pytest.approx(cuts[q - 1])


def _result(name: str, ttft_ms: list[float], full_ms: list[float], **errors: int) -> PhaseResult:
    return PhaseResult(
        name=name,
        concurrency=10,
        duration=2.0,
        ttft=[v / 1000 for v in ttft_ms],
        full=[v / 1000 for v in full_ms],
        errors=Counter(errors),
    )


def test_summary_and_comparison() -> None:
    pipeline = PhaseSummary.of(
        _result("pipeline", [30, 10, 20, 40], [100, 200, 300, 400], http_503=2, timeout=1)
    )
    direct_result = _result("direct", [5, 5, 5, 5, 5, 5, 5, 5], [50] * 8)
    direct_result.token_events = 8 * 24
    direct = PhaseSummary.of(direct_result)
    assert direct.events_per_chat == 24.0
    assert pipeline.ok == 4 and pipeline.errors == 3
    assert pipeline.error_kinds == {"http_503": 2, "timeout": 1}
    assert pipeline.chats_per_s == 2.0 and direct.chats_per_s == 4.0
    assert pipeline.ttft_p50_ms == 25.0
    assert pipeline.full_p95_ms == pytest.approx(385.0)
    c = compare(pipeline, direct)
    assert c["chats_per_s_ratio"] == 0.5
    assert c["ttft_p50_ratio"] == 5.0
    assert c["ttft_p50_added_ms"] == 20.0
    assert c["full_p95_added_ms"] == pytest.approx(335.0)


def test_empty_phase_renders_dashes() -> None:
    empty = PhaseSummary.of(_result("pipeline", [], [], client_ClientConnectorError=5))
    direct = PhaseSummary.of(_result("direct", [5], [50]))
    c = compare(empty, direct)
    assert c["ttft_p50_ratio"] is None and c["ttft_p50_added_ms"] is None
    text = render_text(Report("header", {}, [empty, direct], {"saturation": c}))
    assert "client_ClientConnectorError x5" in text
    assert "x-" in text
    assert "[n/a ] worker / simulator CPU per chat: -" in text


def test_render_text_and_json() -> None:
    cpu = CpuUsage(
        machine_busy_percent=90.0,
        cores=2,
        roles={"loadgen": 40.0, "gateway": 55.5, "other": 3.0},
        cpu_ms={"loadgen": 800.0, "gateway": 1110.0, "other": 60.0},
        wall_s=2.0,
    )
    rss = {"gateway": RssFigures.of([60.0, 75.5, 70.0]), "loadgen": RssFigures.of([40.0, 41.0])}
    pipeline = PhaseSummary.of(_result("pipeline", [10, 20], [100, 200]), cpu, rss=rss, reply_messages=50)
    direct = PhaseSummary.of(_result("direct", [5, 6], [50, 60]))
    c = compare(pipeline, direct)
    report = Report("bench: header", {"concurrency": 10}, [pipeline, direct], {"saturation": c})
    text = render_text(report)
    lines = text.splitlines()
    assert lines[0] == "bench: header"
    assert any(line.startswith("pipeline ") and " 1.0 " in line and " 25.00" in line for line in lines)
    assert any(line.startswith("gateway ") and "555.000 (56%)" in line for line in lines)
    assert any(line.startswith("gateway ") and "60 -> 70 (76)" in line for line in lines)
    assert "[MISS] reply-path broker messages per chat: 25 <= 5" in text
    document = json.loads(render_json(report))
    phase = document["phases"]["pipeline"]
    assert phase["ttft_p50_ms"] == 15.0
    assert phase["cpu"]["roles"]["loadgen"] == 40.0
    assert phase["cpu_ms_per_chat"] == {"loadgen": 400.0, "gateway": 555.0, "other": 30.0}
    assert phase["rss"]["gateway"] == {"start_mb": 60.0, "peak_mb": 75.5, "end_mb": 70.0, "growth_mb": 15.5}
    assert phase["reply_messages_per_chat"] == 25.0
    assert document["comparisons"]["saturation"]["ttft_p50_added_ms"] == 9.5
    targets = {t["name"]: t for t in document["targets"]}
    assert targets["gateway / loadgen CPU per chat"]["value"] == pytest.approx(1.39)
    assert targets["gateway / loadgen CPU per chat"]["met"] is True
    assert targets["pipeline/direct chats/s"]["met"] is True  # 1.0 / 1.0


def test_per_chat_figures_count_warmup_and_failed_chats() -> None:
    result = _result("pipeline", [10, 20], [100, 200], timeout=1)
    result.warmup_chats = 7
    assert result.chats_total == 10
    cpu = CpuUsage(50.0, 2, {"worker": 10.0}, {"worker": 25.0, "simulator": 10.0})
    summary = PhaseSummary.of(result, cpu, reply_messages=45)
    assert summary.chats_total == 10
    assert summary.cpu_ms_per_chat == {"worker": 2.5, "simulator": 1.0}
    assert summary.reply_messages_per_chat == 4.5
    assert PhaseSummary.of(PhaseResult("x", 1, 1.0), cpu, reply_messages=3).reply_messages_per_chat is None


def test_check_directions() -> None:
    assert Check("ratio", 0.4, 0.35, at_most=False).met is True
    assert Check("ratio", 0.3, 0.35, at_most=False).met is False
    assert Check("ms", 5.0, 5, at_most=True).met is True
    assert Check("ms", None, 5, at_most=True).met is None
    assert Check("ms", 21.5, 20, at_most=True).line() == "[MISS] ms: 21.5 <= 20"


def test_checks_follow_the_phases_that_ran() -> None:
    cpu = CpuUsage(None, 2, {}, {"worker": 30.0, "simulator": 10.0, "gateway": 10.0, "loadgen": 10.0})
    pipeline = PhaseSummary.of(_result("pipeline", [10], [100]), cpu, reply_messages=4)
    direct = PhaseSummary.of(_result("direct", [5], [50]))
    quarter_p = PhaseSummary.of(_result("pipeline@5/s", [9, 30], [100, 120]))
    quarter_d = PhaseSummary.of(_result("direct@5/s", [5, 6], [50, 60]))
    comparisons = {"saturation": compare(pipeline, direct), "quarter": compare(quarter_p, quarter_d)}
    found = {c.name: c for c in checks([pipeline, direct, quarter_p, quarter_d], comparisons)}
    assert found["worker / simulator CPU per chat"].value == 3.0
    assert found["worker / simulator CPU per chat"].met is False
    assert found["gateway / loadgen CPU per chat"].met is True
    assert found["reply-path broker messages per chat"].value == 4.0
    assert found["added TTFT p50 ms (quarter)"].value == pytest.approx(14.0)
    assert found["added TTFT p99 ms (quarter)"].met is False
    assert not any(name.startswith("hold") for name in found)


def test_hold_checks_and_memory_growth() -> None:
    result = _result("hold", [20] * 4, [60_000] * 4, client_ServerDisconnectedError=1)
    result.peak_open_streams = 5
    rss = {
        "gateway": RssFigures.of([100.0, 700.0, 400.0]),
        "worker": RssFigures.of([80.0, 300.0]),
        "rabbitmq": RssFigures.of([100.0, 2000.0]),  # not the pipeline's own processes
    }
    hold = PhaseSummary.of(result, rss=rss)
    assert hold.rss_growth_mb(("gateway", "worker")) == 820.0
    found = {c.name: c for c in checks([hold], {})}
    assert found["hold: errors"].met is False
    assert found["hold: gateway + worker RSS growth MB"].met is True
    text = render_text(Report("h", {}, [hold]))
    assert "hold: 5 streams open at the peak, 5 opened" in text
    assert "grew 820.0 MB" in text


def test_sse_parser_across_chunk_boundaries() -> None:
    stream = (
        b'event: token\ndata: {"content":"Hel","seq":0}\n\n'
        b": keep-alive\n\n"
        b'event: token\ndata: {"content":"lo","seq":1}\n\n'
        b"event: done\ndata: {}\n\n"
    )
    parser = SseParser()
    for i in range(0, len(stream), 7):
        parser.feed(stream[i : i + 7])
    assert (parser.tokens, parser.done, parser.error) == (2, True, None)
    failing = SseParser()
    failing.feed(b'event: error\ndata: {"error":"queue_full","message":"x"}\n\n')
    assert failing.error == "event_queue_full" and not failing.done


def test_ndjson_parser() -> None:
    parser = NdjsonParser()
    parser.feed(b'{"message":{"role":"assistant","content":"a"},"done":false}\n{"message":{"con')
    assert parser.tokens == 1
    parser.feed(b'tent":"b"},"done":false}\n{"message":{"content":""},"done":true,"eval_count":2}\n')
    assert (parser.tokens, parser.done, parser.error) == (2, True, None)
    failing = NdjsonParser()
    failing.feed(b'{"error":"boom"}\n')
    assert failing.error == "ollama_error"
