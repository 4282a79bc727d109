"""Reliability and security against live servers with the real engine (issue: guarantees).

Auth, admission control under a burst, cancellation on disconnect, graceful drain on SIGTERM,
and engine failure. Each server here is started once for the tests that need its settings.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from loadtests.sse import sse_data
from tests.support.server_process import ServerProcess, start_server
from tests.support.sse import read_stream

pytestmark = pytest.mark.e2e
MODEL = "tiny-huatuo"
KEYS = ["key-one-0123456789", "key-two-abcdefghij"]
ADMISSION_LIMIT = 4


def chat_body(content: str = "头痛怎么办？", max_tokens: int = 32, model: str = MODEL,
              **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, **extra}


def scrape(base_url: str, name: str, headers: dict | None = None, having: str = "") -> float:
    """Sum of a metric's samples on /metrics (only those whose labels contain `having`)."""
    text = httpx.get(f"{base_url}/metrics", headers=headers).text
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and having in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def generated_tokens(base_url: str) -> float:
    """Tokens the engine has generated so far: work done for answers nobody reads shows here."""
    return scrape(base_url, "vllm:generation_tokens_total")


def engine_busy_after(base_url: str, seconds: float) -> float:
    """vLLM's running + waiting requests, once they reach zero or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        busy = (scrape(base_url, "vllm:num_requests_running")
                + scrape(base_url, "vllm:num_requests_waiting"))
        if busy == 0 or time.monotonic() > deadline:
            return busy
        time.sleep(0.2)


SLOW_MODEL = "slow-huatuo"


def slow_body(max_tokens: int, **extra) -> dict:
    """Work for the slow model that stays in flight until `max_tokens`: the random model samples
    its EOS token now and then, and an answer that ends on its own is gone before the test
    acts on it (hence ignore_eos)."""
    return chat_body(max_tokens=max_tokens, temperature=1.0, model=SLOW_MODEL,
                     ignore_eos=True, **extra)


async def start_streams(client: httpx.AsyncClient, url: str, count: int, max_tokens: int
                        ) -> list[asyncio.Task]:
    """Streams on the slow model (2000 tokens take half a minute, 20 well under a second),
    once the server has answered every one of them: a fixed sleep is not enough on a machine
    whose engine starves the test process of a core."""
    answered = [asyncio.Event() for _ in range(count)]
    streams = [asyncio.create_task(read_stream(client, url, slow_body(max_tokens, stream=True),
                                               answered=event)) for event in answered]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in answered)), 60)
    return streams


@pytest.fixture(scope="module")
def guarded_server(tiny_model_dir: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """API keys and a small admission limit."""
    log = tmp_path_factory.mktemp("logs") / "guarded.log"
    args = ["--model", str(tiny_model_dir), "--max-model-len", "1024", "--dtype", "float32",
            "--max-concurrent-requests", str(ADMISSION_LIMIT)]
    for key in KEYS:
        args += ["--api-key", key]
    server = start_server(args, log)
    yield server
    server.stop()


ROUTES = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", chat_body(max_tokens=2)),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2}),
    ("GET", "/version", None),
    ("POST", "/tokenize", {"prompt": "hi"}),
    ("POST", "/detokenize", {"tokens": [30, 31]}),
    ("GET", "/tokenizer_info", None),
    ("GET", "/metrics", None),
    ("GET", "/docs", None),
    ("GET", "/openapi.json", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_requires_a_key(guarded_server: ServerProcess, method: str, path: str,
                                    body: dict | None) -> None:
    url = guarded_server.base_url + path
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEYS[0]}):
        response = httpx.request(method, url, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        error = response.json()["error"]
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    for key in KEYS:
        response = httpx.request(method, url, json=body,
                                 headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text


def test_health_needs_no_key_and_keys_never_logged(guarded_server: ServerProcess) -> None:
    assert httpx.get(f"{guarded_server.base_url}/health").status_code == 200
    httpx.get(f"{guarded_server.base_url}/v1/models",
              headers={"Authorization": f"Bearer {KEYS[1]}"})
    log = guarded_server.log_text()
    assert all(key not in log for key in KEYS)


def test_request_id_is_validated_and_echoed(guarded_server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {KEYS[0]}"}
    url = f"{guarded_server.base_url}/v1/models"
    assert httpx.get(url, headers={**auth, "X-Request-Id": "abc-123"}).headers[
        "x-request-id"] == "abc-123"
    assert len(httpx.get(url, headers=auth).headers["x-request-id"]) >= 16
    bad = httpx.get(url, headers={**auth, "X-Request-Id": "bad id with spaces"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Request-Id"


def test_cors_is_off_by_default(guarded_server: ServerProcess) -> None:
    response = httpx.options(f"{guarded_server.base_url}/v1/models", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in response.headers


def test_overload_burst_gets_answers_or_429(guarded_server: ServerProcess) -> None:
    """A burst at ten times the admission limit: complete answers or 429s, nothing else."""
    auth = {"Authorization": f"Bearer {KEYS[0]}"}
    url = f"{guarded_server.base_url}/v1/chat/completions"
    rejected_before = scrape(guarded_server.base_url, "huatuo_admission_rejections_total", auth)

    async def one(i: int):
        async with httpx.AsyncClient(timeout=120) as client:
            if i % 2:
                return await read_stream(client, url, chat_body(max_tokens=48, stream=True),
                                         auth)
            response = await client.post(url, json=chat_body(max_tokens=48), headers=auth)
            return response

    async def burst():
        return await asyncio.gather(*(one(i) for i in range(10 * ADMISSION_LIMIT)))

    results = asyncio.run(burst())
    outcomes = Counter()
    for result in results:
        if isinstance(result, httpx.Response):
            if result.status_code == 200:
                assert result.json()["choices"][0]["finish_reason"] in ("stop", "length")
                outcomes["completed"] += 1
            else:
                assert result.status_code == 429, result.text
                assert result.headers["retry-after"] == "1"
                outcomes["rejected"] += 1
        else:
            assert result.transport_error is None
            if result.status == 200:
                assert result.done and result.error is None and result.finish_reasons
                outcomes["completed"] += 1
            else:
                assert result.status == 429
                outcomes["rejected"] += 1
    assert outcomes["completed"] + outcomes["rejected"] == 10 * ADMISSION_LIMIT
    assert outcomes["completed"] >= ADMISSION_LIMIT and outcomes["rejected"] > 0
    rejected_after = scrape(guarded_server.base_url, "huatuo_admission_rejections_total", auth)
    assert rejected_after - rejected_before == outcomes["rejected"]
    assert httpx.get(f"{guarded_server.base_url}/health").status_code == 200
    print(f"burst of {10 * ADMISSION_LIMIT}: {dict(outcomes)}, lost 0")


# Tokens one engine request may still produce between its client leaving and the abort
# landing (a scheduler step or two); without the abort, each would run to max_tokens.
TOKENS_AFTER_LEAVING = 6


def test_disconnected_clients_free_the_engine(slow_server: ServerProcess) -> None:
    """Clients that go away mid-stream: their engine requests stop within a step or two."""
    base = slow_server.base_url
    clients, max_tokens = 8, 300
    gone_before = scrape(base, "huatuo_client_disconnects_total", having="/v1/chat/completions")

    async def leave_mid_stream() -> int:
        async with httpx.AsyncClient(timeout=120) as client:
            async with client.stream("POST", f"{base}/v1/chat/completions",
                                     json=slow_body(max_tokens, stream=True)) as response:
                received = 0
                async for _ in sse_data(response.aiter_lines()):
                    received += 1
                    if received >= 3:
                        break  # closes the connection mid-stream
                return received

    async def run() -> list[int]:
        return await asyncio.gather(*(leave_mid_stream() for _ in range(clients)))

    assert all(n >= 3 for n in asyncio.run(run()))
    left_at = generated_tokens(base)
    busy = engine_busy_after(base, 5.0)
    assert busy == 0, f"{busy} engine requests still running after the clients left"
    after = generated_tokens(base) - left_at
    assert after <= clients * TOKENS_AFTER_LEAVING, f"{after} tokens generated for nobody"
    gone = scrape(base, "huatuo_client_disconnects_total", having="/v1/chat/completions")
    assert gone - gone_before == clients


def test_non_streaming_disconnect_aborts(slow_server: ServerProcess) -> None:
    base = slow_server.base_url
    tokens_before = generated_tokens(base)
    # 8 x 300 tokens: half a minute of work for the slow model; the client leaves after 1 s.
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{base}/v1/chat/completions", timeout=1.0,
                   json=slow_body(300, n=8))
    left_at = generated_tokens(base)
    assert engine_busy_after(base, 5.0) == 0
    after = generated_tokens(base) - left_at
    assert after <= 8 * TOKENS_AFTER_LEAVING, f"{after} tokens generated for nobody"
    assert left_at - tokens_before < 8 * 300


def test_sigterm_drains_gracefully(slow_model_dir: Path, tmp_path: Path) -> None:
    server = start_server(["--model", str(slow_model_dir), "--max-model-len", "4096",
                           "--dtype", "float32", "--shutdown-timeout", "6"],
                          tmp_path / "drain.log")
    url = f"{server.base_url}/v1/chat/completions"
    try:
        async def scenario():
            async with httpx.AsyncClient(timeout=60) as client:
                # Long streams that cannot finish within the deadline, and short ones that can.
                long = await start_streams(client, url, 3, max_tokens=2000)
                short = await start_streams(client, url, 3, max_tokens=20)
                server.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                health = await client.get(f"{server.base_url}/health")
                try:
                    late = (await client.post(url, json=chat_body(
                        max_tokens=2, model=SLOW_MODEL))).status_code
                except httpx.HTTPError:
                    late = "refused"
                return await asyncio.gather(*long), await asyncio.gather(*short), health, late

        long, short, health, late = asyncio.run(scenario())
        assert health.status_code == 503
        assert late in (503, "refused")
        for result in long + short:
            assert result.status == 200 and result.done, result
            if result.error is None:
                assert result.finish_reasons, result
        assert all(r.error is None for r in short)
        assert any(r.error and r.error["code"] == "shutting_down" for r in long)
        assert server.process.wait(30) == 0
    finally:
        server.stop()


def _engine_core(server: ServerProcess) -> psutil.Process:
    for child in psutil.Process(server.process.pid).children(recursive=True):
        if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
            return child
    raise AssertionError("no EngineCore process found")


def test_engine_death_fails_requests_and_exits_nonzero(slow_model_dir: Path,
                                                       tmp_path: Path) -> None:
    server = start_server(["--model", str(slow_model_dir), "--max-model-len", "4096",
                           "--dtype", "float32"], tmp_path / "dead.log")
    url = f"{server.base_url}/v1/chat/completions"
    try:
        async def scenario():
            async with httpx.AsyncClient(timeout=60) as client:
                streams = await start_streams(client, url, 2, max_tokens=2000)
                _engine_core(server).kill()
                results = await asyncio.wait_for(asyncio.gather(*streams), 60)
                try:
                    health = (await client.get(f"{server.base_url}/health")).status_code
                except httpx.HTTPError:
                    health = "gone"
                return results, health

        results, health = asyncio.run(scenario())
        for result in results:
            assert result.done and result.error is not None, result
        assert health in (503, "gone")
        assert server.process.wait(60) != 0
    finally:
        server.stop()
