"""The gateway in process (ASGI) over a fake engine: the timing-sensitive paths.

Admission, queue and idle timeouts, the drain deadline, engine death, body limits and auth,
with deterministic timing. The same behaviours run against the real engine in tests/e2e.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from loadtests.sse import sse_data_from_text
from server.app import build_app
from server.serving_common import THREAD_THRESHOLD
from server.settings import ServeSettings
from server.telemetry import RequestRecord, Telemetry
from tests.support.fake_engine import FakeEngine, fake_model


def make_app(engine: FakeEngine, **settings):
    return build_app(ServeSettings(**settings), engine, fake_model())


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             timeout=30)


def body(max_tokens: int = 4, stream: bool = False, **extra) -> dict:
    return {"model": "fake", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens, "stream": stream, **extra}


def run(coro):
    return asyncio.run(coro)


def test_chat_round_trip_and_headers() -> None:
    async def go():
        async with client_for(make_app(FakeEngine())) as client:
            return await client.post("/v1/chat/completions", json=body(),
                                     headers={"X-Request-Id": "req-1"})

    response = run(go())
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-1"
    assert response.headers["x-huatuo-trimmed-turns"] == "0"
    data = response.json()
    assert data["choices"][0]["message"]["content"] == "abcd"
    assert data["usage"] == {"prompt_tokens": len("<问>：hi\n<答>："), "completion_tokens": 4,
                             "total_tokens": len("<问>：hi\n<答>：") + 4}


def test_admission_rejects_beyond_the_limit_with_retry_after() -> None:
    engine = FakeEngine(first_delay=0.5)

    async def go():
        async with client_for(make_app(engine, max_concurrent_requests=2)) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body())
                                          for _ in range(6)))

    statuses = sorted(r.status_code for r in run(go()))
    assert statuses == [200, 200, 429, 429, 429, 429]


def test_queue_timeout_is_a_clear_503() -> None:
    async def go():
        async with client_for(make_app(FakeEngine(first_delay=5), queue_timeout=0.2)) as client:
            return await client.post("/v1/chat/completions", json=body())

    response = run(go())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_timeout"


def test_idle_stream_ends_with_error_chunk_and_done() -> None:
    engine = FakeEngine(token_delay=5)

    async def go():
        app = make_app(engine, stream_idle_timeout=0.2)
        async with client_for(app) as client:
            return await client.post("/v1/chat/completions", json=body(stream=True))

    events = sse_data_from_text(run(go()).text)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "stream_idle_timeout"
    assert not engine.running  # the engine request was aborted


def test_drain_deadline_ends_streams_with_error_then_done() -> None:
    engine = FakeEngine(token_delay=0.05)

    async def go():
        app = make_app(engine, shutdown_timeout=0.3)
        async with client_for(app) as client:
            long = asyncio.create_task(client.post("/v1/chat/completions",
                                                   json=body(max_tokens=200, stream=True)))
            short = asyncio.create_task(client.post("/v1/chat/completions",
                                                    json=body(max_tokens=3, stream=True)))
            await asyncio.sleep(0.1)
            drain = asyncio.create_task(app.state.gateway.lifecycle.drain(0.3, engine.abort))
            await asyncio.sleep(0.05)
            health = await client.get("/health")
            late = await client.post("/v1/chat/completions", json=body())
            await drain
            return await long, await short, health, late

    long, short, health, late = run(go())
    assert health.status_code == 503
    assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
    short_events = sse_data_from_text(short.text)
    assert short_events[-1] == "[DONE]" and "error" not in short_events[-2]
    long_events = sse_data_from_text(long.text)
    assert long_events[-1] == "[DONE]"
    assert json.loads(long_events[-2])["error"]["code"] == "shutting_down"
    assert engine.aborted


def test_engine_death_fails_streams_and_calls_back() -> None:
    engine = FakeEngine(token_delay=0.05)
    died = asyncio.Event()

    async def go():
        app = build_app(ServeSettings(), engine, fake_model(), on_engine_dead=died.set)
        async with app.router.lifespan_context(app), client_for(app) as client:
            stream = asyncio.create_task(client.post("/v1/chat/completions",
                                                     json=body(max_tokens=200, stream=True)))
            await asyncio.sleep(0.2)
            engine.errored = True
            response = await stream
            await asyncio.wait_for(died.wait(), 10)
            health = await client.get("/health")
            return response, health

    response, health = run(go())
    events = sse_data_from_text(response.text)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_dead"
    assert health.status_code == 503


def test_body_limit_is_413() -> None:
    async def go():
        async with client_for(make_app(FakeEngine(), max_body_bytes=1000)) as client:
            big = body()
            big["messages"][0]["content"] = "x" * 5000
            return await client.post("/v1/chat/completions", json=big)

    response = run(go())
    assert response.status_code == 413
    assert "--max-body-bytes" in response.json()["error"]["message"]


def test_a_chunked_body_over_the_limit_is_413() -> None:
    """No Content-Length to check up front: the limit holds while the body streams in."""
    async def chunks():
        for _ in range(20):
            yield b" " * 100
        yield json.dumps(body()).encode()

    async def go():
        async with client_for(make_app(FakeEngine(), max_body_bytes=1000)) as client:
            return await client.post("/v1/chat/completions", content=chunks(),
                                     headers={"content-type": "application/json"})

    response = run(go())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_message_count_limit() -> None:
    async def go():
        async with client_for(make_app(FakeEngine(), max_messages=3)) as client:
            many = body()
            many["messages"] = [{"role": "user", "content": "a"},
                                {"role": "assistant", "content": "b"}] * 2 + many["messages"]
            return await client.post("/v1/chat/completions", json=many)

    response = run(go())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


def test_max_tokens_limit_names_the_limit() -> None:
    async def go():
        async with client_for(make_app(FakeEngine(), max_tokens_limit=8)) as client:
            return await client.post("/v1/chat/completions", json=body(max_tokens=9))

    response = run(go())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "max_tokens" and "--max-tokens-limit" in error["message"]


def test_metrics_need_a_key_unless_public() -> None:
    async def go(public: bool):
        app = make_app(FakeEngine(), api_key=["k"], public_metrics=public)
        async with client_for(app) as client:
            return (await client.get("/metrics")).status_code, (await client.get(
                "/health")).status_code

    assert run(go(False)) == (401, 200)
    assert run(go(True)) == (200, 200)


def test_cors_only_for_allowed_origins() -> None:
    async def go(origin: str):
        app = make_app(FakeEngine(), allowed_origins=["https://app.example"])
        async with client_for(app) as client:
            return await client.options("/v1/models", headers={
                "Origin": origin, "Access-Control-Request-Method": "GET"})

    assert run(go("https://app.example")).headers["access-control-allow-origin"] == (
        "https://app.example")
    assert "access-control-allow-origin" not in run(go("https://evil.example")).headers


@pytest.mark.parametrize("payload", [b"[]", b"null", b"{\"model\": 3}", b"\xff\xfe"])
def test_malformed_bodies_are_400_not_500(payload: bytes) -> None:
    async def go():
        async with client_for(make_app(FakeEngine())) as client:
            return await client.post("/v1/chat/completions", content=payload,
                                     headers={"content-type": "application/json"})

    response = run(go())
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


class Recorded(Telemetry):
    """Keeps every finished record, as the metrics and the access log receive them."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def finish(self, record: RequestRecord) -> None:
        self.records.append(record)


def test_every_api_request_is_recorded_once_with_its_error_code() -> None:
    """Validation 400s, refused keys, bodies over the limit, /v1/models and unknown models are
    all counted and logged, each with the code its client got."""
    telemetry = Recorded()
    app = build_app(ServeSettings(api_key=["k"], max_body_bytes=2000), FakeEngine(),
                    fake_model(), telemetry=telemetry)
    key = {"Authorization": "Bearer k"}

    async def go():
        async with client_for(app) as client:
            await client.get("/v1/models", headers=key)
            await client.post("/v1/chat/completions", json=body(temperature=5), headers=key)
            await client.post("/v1/chat/completions", content=b"{", headers=key)
            await client.post("/v1/chat/completions", json=body())
            await client.post("/v1/chat/completions", json=body(x="y" * 5000), headers=key)
            await client.post("/v1/chat/completions", json={**body(), "model": "gpt-4"},
                              headers=key)
            await client.post("/v1/chat/completions", json=body(), headers=key)
            await client.post("/v1/chat/completions", json=body(stream=True), headers=key)
            await client.get("/health")
            await client.get("/metrics", headers=key)

    run(go())
    seen = [(r.endpoint, r.status, r.error_code, r.model) for r in telemetry.records]
    assert seen == [
        ("/v1/models", 200, None, "fake"),
        ("/v1/chat/completions", 400, "invalid_value", "unknown"),
        ("/v1/chat/completions", 400, "invalid_value", "unknown"),
        ("/v1/chat/completions", 401, "invalid_api_key", "unknown"),
        ("/v1/chat/completions", 413, "request_too_large", "unknown"),
        ("/v1/chat/completions", 404, "model_not_found", "unknown"),
        ("/v1/chat/completions", 200, None, "fake"),
        ("/v1/chat/completions", 200, None, "fake"),  # a stream that ran to its end
    ]
    assert not any(r.client_disconnected for r in telemetry.records)
    assert all(r.request_id and r.duration is not None for r in telemetry.records)


def test_a_stream_that_times_out_in_the_queue_gets_503_before_any_byte() -> None:
    """Until the engine answers, a stream can still fail with an HTTP status, like any
    request: the queue timeout comes before the first ping is due."""
    async def go():
        app = make_app(FakeEngine(first_delay=2.0), queue_timeout=0.3, sse_ping_interval=15)
        async with client_for(app) as client:
            return await client.post("/v1/chat/completions", json=body(stream=True))

    response = run(go())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_timeout"
    assert response.headers["retry-after"] == "1"


def test_a_queued_stream_gets_pings_then_a_queue_timeout_event() -> None:
    """Queued longer than the ping interval: the stream starts, `: ping` comments keep proxies
    from cutting it, and the queue timeout arrives as an error event followed by [DONE]."""
    async def go():
        app = make_app(FakeEngine(first_delay=5.0), queue_timeout=1.5, sse_ping_interval=0.3)
        async with client_for(app) as client:
            return await client.post("/v1/chat/completions", json=body(stream=True))

    response = run(go())
    assert response.status_code == 200
    pings = [line for line in response.text.splitlines() if line.startswith(": ping")]
    assert len(pings) >= 2
    events = sse_data_from_text(response.text)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "queue_timeout"
    assert len(events) == 2  # nothing else: the engine never answered


def test_a_streamed_answer_starts_with_the_role_chunk_once_the_engine_answers() -> None:
    async def go():
        app = make_app(FakeEngine(first_delay=0.5), sse_ping_interval=0.1)
        async with client_for(app) as client:
            return await client.post("/v1/chat/completions", json=body(max_tokens=3,
                                                                       stream=True))

    events = sse_data_from_text(run(go()).text)
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "abc"
    assert events[-1] == "[DONE]"


def test_prompt_work_never_blocks_the_event_loop() -> None:
    """A long conversation whose tokenisation is slow: health checks answer meanwhile. (Short
    ones are tokenised on the event loop: a thread hop would cost more than their encoding.)"""
    import time

    slow = fake_model()
    fast_encode = slow.encode

    def slow_encode(text: str) -> list[int]:
        time.sleep(0.5)  # CPU-bound tokenisation of a huge body, as the event loop sees it
        return fast_encode(text)

    slow.encode = slow_encode
    app = build_app(ServeSettings(), FakeEngine(), slow)

    async def go():
        async with client_for(app) as client:
            chat = asyncio.create_task(client.post("/v1/chat/completions", json=body(
                messages=[{"role": "user", "content": "头痛" * (THREAD_THRESHOLD // 2 + 1)},
                          {"role": "assistant", "content": "多休息"},
                          {"role": "user", "content": "还是痛"}])))
            await asyncio.sleep(0.1)
            waits = []
            while not chat.done():
                sent = time.perf_counter()
                assert (await client.get("/health")).status_code == 200
                waits.append(time.perf_counter() - sent)
                await asyncio.sleep(0.05)
            return await chat, waits

    response, waits = run(go())
    assert response.status_code == 200
    assert len(waits) >= 5 and max(waits) < 0.3, waits


def asgi_body_messages(app, payload: dict) -> list[dict]:
    """The `http.response.body` messages the app sends for one POST (what becomes writes to
    the client's socket), driving the ASGI app directly."""
    sent: list[dict] = []
    raw = json.dumps(payload).encode()
    requests = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> dict:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays until the response is over
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(raw)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}

    async def go() -> None:
        async with asyncio.timeout(30):
            await app(scope, receive, send)

    run(go())
    return [m for m in sent if m["type"] == "http.response.body"]


class ExhaustionRecordingEngine(FakeEngine):
    """Records whether each request's output generator ran to its end: vLLM aborts a request
    whose generator is closed early, even a finished one (a message to the engine core)."""

    def __init__(self) -> None:
        super().__init__()
        self.exhausted: list[bool] = []

    async def generate(self, prompt: dict, params, request_id: str, lora_request=None):
        self.exhausted.append(False)
        async for output in super().generate(prompt, params, request_id, lora_request):
            yield output
        self.exhausted[-1] = True


def test_a_stream_writes_once_per_engine_output_and_ends_in_its_last_write() -> None:
    """The role chunk goes out with the first token, the last token with the usage, `[DONE]`
    and the end of the response: four tokens, four writes; the engine's stream is read to its
    end."""
    engine = ExhaustionRecordingEngine()
    messages = asgi_body_messages(make_app(engine), body(
        max_tokens=4, stream=True, stream_options={"include_usage": True}))
    assert engine.exhausted == [True]
    events = [sse_data_from_text(m["body"].decode()) for m in messages]
    assert [m["more_body"] for m in messages] == [True, True, True, False]
    first, last = events[0], events[-1]
    assert json.loads(first[0])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert json.loads(first[1])["choices"][0]["delta"] == {"content": "a"}
    assert [len(e) for e in events[1:-1]] == [1, 1]
    assert json.loads(last[0])["choices"][0]["finish_reason"] == "length"
    assert json.loads(last[1])["usage"]["completion_tokens"] == 4
    assert last[2] == "[DONE]"
