"""Statistics of `huatuo bench`: percentiles, TPOT, throughput, goodput, errors, comparisons."""

from __future__ import annotations

import json

import pytest

from loadtests.client import RequestResult
from loadtests.compare import (
    OURS,
    VLLM,
    EngineSettings,
    Measurement,
    aggregate,
    format_comparison,
    ours_command,
    vllm_command,
)
from loadtests.report import Slo, describe, format_table, results_json, summarize
from loadtests.runner import LoadSpec, RunResult


def _ok(ttft: float, e2e: float, tokens: int, itl: list[float] | None = None) -> RequestResult:
    return RequestResult(ok=True, start=0.0, e2e=e2e, ttft=ttft, itl=itl or [],
                         output_tokens=tokens, prompt_tokens=10, usage_reported=True)


def _err(kind: str) -> RequestResult:
    return RequestResult(ok=False, start=0.0, e2e=0.01, error=kind, error_message="boom")


def test_describe_percentiles_in_ms() -> None:
    stats = describe([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats["count"] == 100
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert (stats["min"], stats["max"]) == (pytest.approx(1.0), pytest.approx(100.0))
    assert describe([])["p50"] is None


def test_tpot_streaming_and_not() -> None:
    assert _ok(ttft=0.1, e2e=1.1, tokens=11).tpot == pytest.approx(0.1)
    assert _ok(ttft=0.1, e2e=1.1, tokens=1).tpot is None  # no second token to time
    plain = RequestResult(ok=True, start=0.0, e2e=2.0, output_tokens=40)
    assert plain.tpot == pytest.approx(0.05)
    assert _err("http_400").tpot is None


def test_summary_throughput_errors_and_tokens() -> None:
    results = [_ok(0.1, 1.0, 10, [0.1] * 9), _ok(0.3, 2.0, 30, [0.05] * 29),
               _err("http_400"), _err("stream_error"), _err("http_400")]
    run = RunResult(LoadSpec("closed", 4, num_requests=5), results, duration=4.0)
    s = summarize(run)
    assert (s["requests"], s["completed"], s["errors"]) == (5, 2, 3)
    assert s["error_kinds"] == {"http_400": 2, "stream_error": 1}
    assert s["request_throughput"] == pytest.approx(0.5)
    assert s["output_token_throughput"] == pytest.approx(10.0)
    assert s["total_output_tokens"] == 40
    assert s["mean_output_tokens"] == pytest.approx(20)
    assert s["ttft_ms"]["mean"] == pytest.approx(200)
    assert s["itl_ms"]["count"] == 38  # gaps of all successful requests pooled
    assert s["e2e_ms"]["count"] == 2  # errors are left out of latencies
    assert "goodput" not in s
    table = format_table([s])
    assert "c=4" in table and "0.50" in table


def test_goodput_counts_requests_meeting_every_slo() -> None:
    results = [_ok(0.1, 1.0, 11), _ok(0.5, 1.0, 11), _ok(0.1, 3.0, 11), _err("timeout")]
    run = RunResult(LoadSpec("closed", 1, num_requests=4), results, duration=2.0)
    only_ttft = summarize(run, Slo(ttft_ms=200))
    assert only_ttft["good_requests"] == 2
    assert only_ttft["goodput"] == pytest.approx(1.0)
    both = summarize(run, Slo(ttft_ms=200, e2e_ms=2000))
    assert both["good_requests"] == 1
    # Non-streaming results have no TTFT: they cannot meet a TTFT SLO.
    plain = RunResult(run.spec, [RequestResult(ok=True, start=0, e2e=0.1, output_tokens=5)], 1.0)
    assert summarize(plain, Slo(ttft_ms=1000))["good_requests"] == 0
    assert summarize(plain, Slo(e2e_ms=1000))["good_requests"] == 1


def test_results_json_is_serialisable() -> None:
    run = RunResult(LoadSpec("open", None, rate=2.0, num_requests=2),
                    [_ok(0.1, 1.0, 5), _err("connection")], duration=1.0)
    data = json.loads(json.dumps(results_json([run], slo=Slo(e2e_ms=5000), meta={"x": 1})))
    level = data["levels"][0]
    assert level["label"] == "rate=2/s,gamma=1"
    assert len(level["request_results"]) == 2
    assert level["request_results"][0]["tpot"] == pytest.approx(0.9 / 4)


def _measurement(server: str, repeat: int, throughput_tokens: int, ttft: float) -> Measurement:
    results = [_ok(ttft, 1.0, throughput_tokens)]
    return Measurement(server, repeat, RunResult(LoadSpec("closed", 8), results, 1.0),
                       api_cpu_s=0.002, engine_cpu_s=0.01)


def test_aggregate_takes_medians_and_ratios() -> None:
    spec = LoadSpec("closed", 8)
    measurements = [_measurement(OURS, 0, 100, 0.1), _measurement(OURS, 1, 300, 0.3),
                    _measurement(OURS, 2, 200, 0.2), _measurement(VLLM, 0, 100, 0.4),
                    _measurement(VLLM, 1, 100, 0.4), _measurement(VLLM, 2, 100, 0.4)]
    (level,) = aggregate(measurements, [spec], None)
    assert level[OURS]["output_token_throughput"] == pytest.approx(200)
    assert level[OURS]["repeats"] == 3
    assert level["ratio"]["output_token_throughput"] == pytest.approx(2.0)
    assert level["ratio"]["ttft_p50"] == pytest.approx(0.5)
    assert level[OURS]["api_cpu_ms_per_request"] == pytest.approx(2.0)
    table = format_comparison([level])
    assert "| c=8 | output tok/s | 200 | 100 | 2.00 ✓ |" in table
    assert "| c=8 | TTFT p50 ms | 200 | 400 | 0.50 ✓ |" in table


def test_both_servers_get_the_same_engine_settings(tmp_path) -> None:
    settings = EngineSettings(tmp_path, max_model_len=512, dtype="float32", max_num_seqs=16)
    ours = ours_command(settings, 1111)
    theirs = vllm_command(settings, 2222, tmp_path / "t.jinja")
    common = settings.common_flags()
    assert ours[-len(common):] == common and theirs[-len(common):] == common
    assert theirs[theirs.index("--chat-template") + 1] == str(tmp_path / "t.jinja")
    assert "vllm.entrypoints.openai.api_server" in theirs and "serve" in ours
