"""`huatuo bench run` with sessions and the prefix-cache hit rate (issue 17), against two stand-in
replicas served over real HTTP: one answers the chat requests, both expose vLLM's prefix-cache
counters. The run must send one `X-Session-ID` per consultation and report the hit rate of the
counters' increase over the run, summed over every `--metrics-url`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from loadtests.server_process import ROOT
from tests.support.threaded_server import serving_in_thread


def replica(counters: dict[str, float], sessions: list[tuple[str | None, int]]) -> FastAPI:
    """Answers chat completions; every answer adds 30 hit / 40 queried tokens to `counters`."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "m", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        sessions.append((request.headers.get("x-session-id"), len(body["messages"])))
        counters["hits"] += 30
        counters["queries"] += 40
        return {"id": "x", "object": "chat.completion", "model": "m", "choices": [{
            "index": 0, "message": {"role": "assistant", "content": "多喝水"},
            "finish_reason": "stop"}], "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                                 "total_tokens": 11}}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            "# TYPE vllm:prefix_cache_hits counter\n"
            f'vllm:prefix_cache_hits_total{{engine="0"}} {counters["hits"]}\n'
            "# TYPE vllm:prefix_cache_queries counter\n"
            f'vllm:prefix_cache_queries_total{{engine="0"}} {counters["queries"]}\n')

    return app


def test_sessions_and_hit_rate_over_every_replica(tmp_path: Path) -> None:
    served: list[tuple[str | None, int]] = []
    busy = {"hits": 1000.0, "queries": 5000.0}  # counts from before the run must not count
    idle = {"hits": 70.0, "queries": 0.0}
    with serving_in_thread(replica(busy, served)) as a, \
            serving_in_thread(replica(idle, [])) as b:
        result = subprocess.run(
            [sys.executable, "-m", "huatuo", "bench", "run", "--base-url", a,
             "--workload", "multi", "--num-requests", "12", "--concurrency", "2",
             "--no-stream", "--session-header", "--metrics-url", a, "--metrics-url", b,
             "--output-dir", str(tmp_path), "--no-plots", "--no-progress"],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "hit %" in result.stdout
    (level,) = json.loads((tmp_path / "results.json").read_text())["levels"]
    assert level["prefix_cache"] == {"hit_tokens": 360.0, "queried_tokens": 480.0,
                                     "hit_rate": 0.75}
    # One session id per consultation: turns of a consultation (growing histories) share it.
    by_session: dict[str, list[int]] = {}
    for session, messages in served:
        assert session is not None and session.startswith("consultation-")
        by_session.setdefault(session, []).append(messages)
    assert len(by_session) < len(served)  # some consultations had several turns
    for lengths in by_session.values():
        assert sorted(lengths) == list(range(1, 2 * len(lengths), 2))  # turns 1, 2, ... of one


def test_without_the_option_no_session_header_is_sent(tmp_path: Path) -> None:
    served: list[tuple[str | None, int]] = []
    with serving_in_thread(replica({"hits": 0.0, "queries": 0.0}, served)) as a:
        result = subprocess.run(
            [sys.executable, "-m", "huatuo", "bench", "run", "--base-url", a,
             "--workload", "multi", "--num-requests", "4", "--no-stream",
             "--output-dir", str(tmp_path), "--no-plots", "--no-progress"],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert served and all(session is None for session, _ in served)
