"""`huatuo bench` against real `huatuo serve` processes (real vLLM engine, tiny model).

The numbers must be consistent with what the server reports: token counts equal `usage`, the
prompt token counts equal the model's tokenizer on the HuatuoGPT2 prompt, and failures (requests
the server rejects, a server killed mid-run) are counted as errors, never as successes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from huatuo.cli import main as huatuo
from loadtests.client import BenchClient, RequestResult, SamplingOptions
from loadtests.report import Slo, summarize
from loadtests.runner import LoadSpec, RunResult, Target, open_loop, run_sweep
from loadtests.workloads import BenchRequest, multi_turn, single_turn
from tests.support.server_process import start_server

pytestmark = pytest.mark.e2e

MAX_TOKENS = 24


def _prompt_token_counter(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_short_bench_token_counts_match_usage(server, tiny_model_dir, stream: bool) -> None:
    # Conversation ids tell requests apart: the multi-turn ones are numbered after the others.
    requests = single_turn(6, seed=1, max_tokens=MAX_TOKENS) + [
        replace(r, conversation=100 + r.conversation)
        for r in multi_turn(6, seed=2, max_tokens=MAX_TOKENS)]
    target = Target(server.base_url, stream=stream, sampling=SamplingOptions(temperature=0.0))
    specs = [LoadSpec("closed", 1, num_requests=len(requests)),
             LoadSpec("closed", 4, num_requests=len(requests))]
    runs = run_sweep(target, requests, specs, show_progress=False)
    count_prompt = _prompt_token_counter(tiny_model_dir)
    for run in runs:
        assert [r.error_message for r in run.results if not r.ok] == []
        assert len(run.results) == len(requests)
        by_key = {(r.conversation, r.turn): r for r in requests}
        for result in run.results:
            request = by_key[(result.conversation, result.turn)]
            assert result.usage_reported
            # The server's prompt is exactly the HuatuoGPT2 rendering of the messages.
            assert result.prompt_tokens == count_prompt(request.prompt_text())
            assert 1 <= result.output_tokens <= MAX_TOKENS
            assert result.finish_reason in ("length", "stop")
            if result.finish_reason == "length":
                assert result.output_tokens == MAX_TOKENS
            if stream:
                assert result.ttft is not None and result.ttft <= result.e2e
                assert result.chunks <= result.output_tokens
                assert len(result.itl) == result.chunks - 1
        summary = summarize(run, Slo(e2e_ms=60_000))
        assert summary["errors"] == 0
        assert summary["total_output_tokens"] == sum(r.output_tokens for r in run.results)
        assert summary["output_token_throughput"] == pytest.approx(
            summary["total_output_tokens"] / run.duration)
        assert summary["good_requests"] == len(requests)
        print(f"\n[bench e2e] stream={stream} {summary['label']}: "
              f"{summary['request_throughput']:.1f} req/s, "
              f"{summary['output_token_throughput']:.0f} tok/s")


def test_bench_command_writes_results_and_plots(server, tmp_path) -> None:
    out = tmp_path / "bench"
    code = huatuo(["bench", "run", "--base-url", server.base_url, "--workload", "multi",
                   "--concurrency", "1,4", "--num-requests", "8", "--max-tokens", "16",
                   "--slo-ttft-ms", "60000", "--output-dir", str(out), "--no-progress"])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert [level["label"] for level in data["levels"]] == ["c=1", "c=4"]
    for level in data["levels"]:
        assert level["completed"] == 8 and level["errors"] == 0
        assert level["total_output_tokens"] == sum(
            r["output_tokens"] for r in level["request_results"])
    for png in ("latency.png", "load.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_rejected_requests_are_counted_as_errors(server, stream: bool) -> None:
    good = single_turn(6, seed=3, max_tokens=8)
    too_long = BenchRequest([{"role": "user", "content": "头痛"}], max_tokens=100_000)
    not_a_turn = BenchRequest([{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "hello"}], max_tokens=8)
    requests = good[:3] + [too_long] + good[3:] + [not_a_turn, too_long]
    target = Target(server.base_url, stream=stream)
    (run,) = run_sweep(target, requests, [LoadSpec("closed", 3, num_requests=len(requests))],
                       show_progress=False)
    summary = summarize(run)
    assert summary["completed"] == 6
    assert summary["errors"] == 3
    assert summary["error_kinds"] == {"http_400": 3}
    assert summary["total_output_tokens"] == sum(r.output_tokens for r in run.results if r.ok)


def test_server_killed_mid_run_counts_errors(tiny_model_dir, tmp_path) -> None:
    """A crash (SIGKILL to the server and its engine) in the middle of an open-loop run."""
    proc = start_server(["--model", str(tiny_model_dir), "--max-model-len", "512",
                         "--dtype", "float32"], tmp_path / "killed.log")
    # Two short requests first; the long ones are still streaming when the first one ends.
    short = single_turn(2, seed=4, max_tokens=2)
    long = single_turn(30, seed=5, max_tokens=400)

    async def scenario() -> list[RequestResult]:
        client = BenchClient(proc.base_url, "tiny-huatuo", timeout=120)
        killed = asyncio.Event()

        async def send(request: BenchRequest) -> RequestResult:
            result = await client.send(request)
            if result.ok and not killed.is_set():
                killed.set()
                os.killpg(proc.process.pid, signal.SIGKILL)
            return result

        try:
            return await open_loop(send, short + long, rate=float("inf"), burstiness=1.0,
                                   num=len(short) + len(long), duration=None)
        finally:
            await client.aclose()

    try:
        results = asyncio.run(scenario())
    finally:
        proc.stop()
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert len(results) == 32
    assert len(ok) >= 1  # the request whose completion triggered the kill
    assert len(failed) >= len(long) // 2, [r.output_tokens for r in ok]
    assert {r.error for r in failed} <= {"connection", "stream_truncated", "timeout"}
    summary = summarize(RunResult(LoadSpec("open", None, rate=1.0), results, 1.0))
    assert summary["errors"] == len(failed)

