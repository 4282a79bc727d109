"""One huge, hostile chat request against a live server: does everyone else still get served?

Not a test: it prints figures. It sends one chat request of `--size-mib` MiB (just under the
default `--max-body-bytes`) spread over `--messages` messages, while another client streams an
answer and a third polls `/health` every 50 ms, then prints:

- the huge request's status and latency (answered, trimmed, or refused);
- the largest gap between two chunks of the concurrent stream while the huge request ran;
- the slowest `/health` answer in the same window.

    python -m loadtests.bench_hostile                      # starts `huatuo serve` on the demo model
    python -m loadtests.bench_hostile --base-url http://127.0.0.1:8000 --model NAME

Goal on 2 cores: the huge request answered or refused in under 2 s, stream gaps and `/health`
under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from loadtests.server_process import ServerProcess, free_port, huatuo_serve_argv
from loadtests.sse import sse_data


def huge_conversation(size_bytes: int, messages: int) -> list[dict]:
    """`messages` alternating messages (the last from the user), about `size_bytes` of JSON."""
    per_message = max(1, size_bytes // messages // 3)  # a CJK character is 3 bytes in UTF-8
    text = ("头痛发热咳嗽" * (per_message // 6 + 1))[:per_message]
    roles = ["user", "assistant"] * (messages // 2) + ["user"]
    return [{"role": role, "content": text} for role in roles[-messages:]]


async def stream_gaps(client: httpx.AsyncClient, url: str, model: str, started: asyncio.Event,
                      stop: asyncio.Event) -> list[tuple[float, float]]:
    """Stream a long answer until `stop`; return (time, gap since the previous chunk)."""
    body = {"model": model, "messages": [{"role": "user", "content": "你好"}],
            "max_tokens": 900, "ignore_eos": True, "stream": True}
    gaps: list[tuple[float, float]] = []
    async with client.stream("POST", url, json=body) as response:
        last = None
        async for _ in sse_data(response.aiter_lines()):
            now = time.perf_counter()
            if last is not None:
                gaps.append((now, now - last))
            last = now
            started.set()
            if stop.is_set():
                break
    return gaps


async def health_latencies(client: httpx.AsyncClient, url: str, stop: asyncio.Event
                           ) -> list[tuple[float, float]]:
    samples: list[tuple[float, float]] = []
    while not stop.is_set():
        sent = time.perf_counter()
        await client.get(url)
        samples.append((sent, time.perf_counter() - sent))
        await asyncio.sleep(0.05)
    return samples


async def run(base_url: str, model: str, size_bytes: int, messages: int,
              api_key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    chat_url = f"{base_url}/v1/chat/completions"
    payload = json.dumps({"model": model, "messages": huge_conversation(size_bytes, messages),
                          "max_tokens": 16}, ensure_ascii=False).encode()
    async with httpx.AsyncClient(timeout=600, headers=headers) as client:
        started, stop = asyncio.Event(), asyncio.Event()
        stream = asyncio.create_task(stream_gaps(client, chat_url, model, started, stop))
        await started.wait()
        health = asyncio.create_task(health_latencies(client, f"{base_url}/health", stop))
        quiet_from = time.perf_counter()
        await asyncio.sleep(2.0)  # the same stream and polls without the huge request
        begin = time.perf_counter()
        response = await client.post(chat_url, content=payload,
                                     headers={"Content-Type": "application/json"})
        end = time.perf_counter()
        await asyncio.sleep(0.5)
        stop.set()
        gaps, polls = await stream, await health
    during = [gap for at, gap in gaps if begin <= at <= end + 0.5]
    polls_during = [took for at, took in polls if begin <= at <= end]
    quiet = [gap for at, gap in gaps if quiet_from <= at < begin]
    polls_quiet = [took for at, took in polls if quiet_from <= at < begin]
    error = response.json().get("error") if response.status_code != 200 else None
    return {
        "body_mib": round(len(payload) / 2**20, 2), "messages": messages,
        "status": response.status_code, "error_code": error and error.get("code"),
        "trimmed_turns": response.headers.get("x-huatuo-trimmed-turns"),
        "huge_request_s": round(end - begin, 3),
        "stream_max_gap_ms": round(1000 * max(during, default=0.0), 1),
        "stream_chunks_during": len(during),
        "health_max_ms": round(1000 * max(polls_during, default=0.0), 1),
        "health_polls_during": len(polls_during),
        # The same figures over the 2 s before the huge request: the machine's own noise.
        "baseline_stream_max_gap_ms": round(1000 * max(quiet, default=0.0), 1),
        "baseline_health_max_ms": round(1000 * max(polls_quiet, default=0.0), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="A running server (default: start one here).")
    parser.add_argument("--model", help="Served model name (with --base-url) or checkpoint "
                        "directory (without; default: the tiny demo checkpoint).")
    parser.add_argument("--api-key")
    parser.add_argument("--size-mib", type=float, default=3.95,
                        help="Body size (default %(default)s: under the 4 MiB body limit).")
    parser.add_argument("--messages", type=int, default=511)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    size = int(args.size_mib * 2**20)
    server = None
    base_url, model = args.base_url, args.model
    if base_url is None:
        from huatuogpt2.demo_checkpoint import ensure_demo_model

        checkpoint = Path(model) if model else ensure_demo_model(
            Path(tempfile.gettempdir()) / "huatuo-bench-hostile")
        port = free_port()
        server = ServerProcess(
            huatuo_serve_argv(port, ["--model", str(checkpoint), "--served-model-name", "bench",
                                     "--max-model-len", str(args.max_model_len),
                                     "--dtype", "float32"]),
            Path(tempfile.mkdtemp()) / "server.log", port=port,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}).start_ready()
        base_url, model = server.base_url, "bench"
    try:
        for _ in range(args.repeats):
            print(json.dumps(asyncio.run(run(base_url, model, size, args.messages,
                                             args.api_key))), flush=True)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
