"""Locust load test of an OpenAI-compatible chat server, on `huatuo bench`'s workloads.

For teams that already run Locust (not a dependency of huatuo-serve: `pip install locust`):

    HUATUO_BENCH_WORKLOAD=multi locust -f loadtests/locustfile.py \
        --host http://127.0.0.1:8000 --headless -u 16 -r 4 -t 2m

Settings (environment variables): HUATUO_BENCH_WORKLOAD (single|multi|long, default single),
HUATUO_BENCH_JSONL (a conversations file instead), HUATUO_BENCH_LANGUAGE (zh|en|mixed),
HUATUO_BENCH_MAX_TOKENS (64), HUATUO_BENCH_MAX_MODEL_LEN (4096, for `long`), HUATUO_BENCH_SEED
(0), HUATUO_BENCH_MODEL (default: the first id of GET /v1/models), HUATUO_BENCH_API_KEY,
HUATUO_BENCH_STREAM (1). Streaming requests also report "TTFT" (time to the first content
chunk) and "E2E" (the whole stream) rows next to the request's own row (which Locust times to
the response headers); an error chunk inside a 200 stream is a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

from locust import HttpUser, between, events, task

from loadtests.workloads import build_workload

_WORKLOAD = build_workload(
    os.environ.get("HUATUO_BENCH_WORKLOAD", "single"),
    int(os.environ.get("HUATUO_BENCH_NUM_REQUESTS", "1000")),
    seed=int(os.environ.get("HUATUO_BENCH_SEED", "0")),
    language=os.environ.get("HUATUO_BENCH_LANGUAGE", "mixed"),
    max_tokens=int(os.environ.get("HUATUO_BENCH_MAX_TOKENS", "64")),
    max_model_len=int(os.environ.get("HUATUO_BENCH_MAX_MODEL_LEN", "4096")),
    jsonl=Path(os.environ["HUATUO_BENCH_JSONL"]) if os.environ.get("HUATUO_BENCH_JSONL")
    else None,
)
# One shared sequence: users take requests in workload order (gevent switches only on I/O).
_NEXT = itertools.cycle(_WORKLOAD)
_STREAM = os.environ.get("HUATUO_BENCH_STREAM", "1").lower() not in ("0", "false", "no")


class ChatUser(HttpUser):
    wait_time = between(0, 0)  # closed loop: each user sends again as soon as it has an answer

    def on_start(self) -> None:
        key = os.environ.get("HUATUO_BENCH_API_KEY")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"
        self.model = os.environ.get("HUATUO_BENCH_MODEL") or \
            self.client.get("/v1/models", name="/v1/models").json()["data"][0]["id"]

    @task
    def chat(self) -> None:
        request = next(_NEXT)
        body = {"model": self.model, "messages": request.messages,
                "max_tokens": request.max_tokens, "stream": _STREAM}
        if not _STREAM:
            with self.client.post("/v1/chat/completions", json=body, catch_response=True,
                                  name="chat") as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        body["stream_options"] = {"include_usage": True}
        start = time.perf_counter()
        with self.client.post("/v1/chat/completions", json=body, stream=True,
                              catch_response=True, name="chat (stream)") as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            first = None
            done = False
            for line in response.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    response.failure(f"error chunk: {json.dumps(chunk['error'])[:200]}")
                    return
                has_text = any((c.get("delta") or {}).get("content")
                               for c in chunk.get("choices") or [])
                if has_text and first is None:
                    first = time.perf_counter() - start
            if not done:
                response.failure("stream ended without [DONE]")
                return
            # Locust times a streamed response to its headers only: report TTFT and the
            # whole stream (E2E) as rows of their own.
            e2e = time.perf_counter() - start
            for kind, seconds in (("TTFT", first), ("E2E", e2e)):
                if seconds is not None:
                    events.request.fire(request_type=kind, name="chat (stream)",
                                        response_time=seconds * 1000.0, response_length=0,
                                        exception=None, context={})
