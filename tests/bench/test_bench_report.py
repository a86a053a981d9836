"""The bench's arithmetic: percentiles, phase summaries, the pipeline/direct comparison, rendering."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest

from bench.cpu import CpuUsage
from bench.loadgen import NdjsonParser, PhaseResult, SseParser
from bench.report import PhaseSummary, compare, percentile, render_json, render_text


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
    text = render_text("header", [empty, direct], c)
    assert "client_ClientConnectorError x5" in text
    assert "x-" in text


def test_render_text_and_json() -> None:
    cpu = CpuUsage(machine_busy_percent=90.0, cores=2, roles={"loadgen": 40.0, "gateway": 55.5})
    pipeline = PhaseSummary.of(_result("pipeline", [10, 20], [100, 200]), cpu)
    direct = PhaseSummary.of(_result("direct", [5, 6], [50, 60]))
    c = compare(pipeline, direct)
    text = render_text("bench: header", [pipeline, direct], c)
    lines = text.splitlines()
    assert lines[0] == "bench: header"
    assert any(line.startswith("pipeline ") and " 1.0 " in line for line in lines)
    assert "gateway 56%" in text
    document = json.loads(render_json({"concurrency": 10}, [pipeline, direct], c))
    assert document["phases"]["pipeline"]["ttft_p50_ms"] == 15.0
    assert document["phases"]["pipeline"]["cpu"]["roles"]["loadgen"] == 40.0
    assert document["comparison"]["ttft_p50_added_ms"] == 9.5


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
