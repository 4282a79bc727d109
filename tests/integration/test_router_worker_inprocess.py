"""Our server as a worker of vllm-router, in process over the fake engine (issue 17).

The render endpoints answer the token ids the engine is given (trimmed prompt included), in
vLLM's shape; /get_load counts requests in flight and answers without a key (the router polls it
with none); every field vllm-router 0.1.17 adds to a body is accepted. The real router against
real replicas runs in tests/e2e/test_router.py.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import msgspec
from vllm.sampling_params import SamplingParams

from server.app import build_app
from server.metrics import GatewayMetrics
from server.settings import ServeSettings
from tests.support.fake_engine import FakeEngine, fake_model

KEY = "sk-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
# What vllm-router 0.1.17 adds to a chat body before proxying (and rendering) it: captured from
# the router's requests to a stub worker.
ROUTER_CHAT_DEFAULTS = {
    "logprobs": False, "no_stop_trim": False, "ignore_eos": False,
    "continue_final_message": False, "skip_special_tokens": True, "separate_reasoning": True,
    "stream_reasoning": True, "return_hidden_states": False, "include_reasoning": True,
}
ROUTER_COMPLETION_DEFAULTS = {"echo": False, "no_stop_trim": False, "ignore_eos": False,
                              "skip_special_tokens": True, "return_hidden_states": False}


class RecordingEngine(FakeEngine):
    """Remembers the prompt token ids of every engine request."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prompts: list[list[int]] = []

    def generate(self, prompt: dict, params, request_id: str, lora_request=None):
        self.prompts.append(list(prompt["prompt_token_ids"]))
        return super().generate(prompt, params, request_id)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             timeout=30, headers=AUTH)


def consultation(rounds: int) -> list[dict]:
    messages: list[dict] = []
    for i in range(rounds):
        messages += [{"role": "user", "content": f"第{i}问：头痛发热怎么办？" * 3},
                     {"role": "assistant", "content": f"第{i}答：多喝水，注意休息。" * 3}]
    return messages + [{"role": "user", "content": "还需要吃药吗？"}]


def chat(messages: list[dict], **extra) -> dict:
    return {"model": "fake", "messages": messages, "max_tokens": 8, **ROUTER_CHAT_DEFAULTS,
            **extra}


def test_chat_render_is_exactly_what_the_engine_gets_trimmed_history_included() -> None:
    engine = RecordingEngine()
    # 256 tokens of context (one per character here): 12 rounds do not fit, so rounds are
    # dropped, and the render must drop the same ones.
    messages = consultation(12)

    async def go():
        app = build_app(ServeSettings(api_key=[KEY]), engine, fake_model(256))
        async with client_for(app) as client:
            rendered = await client.post("/v1/chat/completions/render", json=chat(messages))
            answered = await client.post("/v1/chat/completions",
                                         json=chat(messages, return_token_ids=True))
            return rendered, answered

    rendered, answered = asyncio.run(go())
    assert rendered.status_code == 200, rendered.text
    assert answered.status_code == 200, answered.text
    assert int(answered.headers["X-Huatuo-Trimmed-Turns"]) > 0
    body = rendered.json()
    assert body["token_ids"] == engine.prompts[-1] == answered.json()["prompt_token_ids"]
    assert len(body["token_ids"]) == answered.json()["usage"]["prompt_tokens"]
    assert body["request_id"].startswith("chatcmpl-") and body["model"] == "fake"
    # vLLM's shape: the sampling parameters rebuild into vLLM's SamplingParams.
    params = msgspec.convert(body["sampling_params"], SamplingParams)
    assert params.max_tokens == 8 and params.temperature == 0.3
    assert len(engine.prompts) == 1  # rendering starts no engine request


def test_completion_render_is_one_generate_request_per_prompt() -> None:
    engine = RecordingEngine()

    async def go():
        app = build_app(ServeSettings(api_key=[KEY]), engine, fake_model())
        async with client_for(app) as client:
            body = {"model": "fake", "prompt": ["ab", "cde"], "max_tokens": 4,
                    **ROUTER_COMPLETION_DEFAULTS}
            return await client.post("/v1/completions/render", json=body)

    response = asyncio.run(go())
    assert response.status_code == 200, response.text
    rendered = response.json()
    assert [r["token_ids"] for r in rendered] == [[ord("a"), ord("b")],
                                                   [ord(c) for c in "cde"]]
    assert rendered[0]["request_id"].endswith("-0") and rendered[1]["request_id"].endswith("-1")
    assert engine.prompts == []


def test_render_refuses_what_the_endpoint_refuses() -> None:
    async def go():
        app = build_app(ServeSettings(api_key=[KEY]), FakeEngine(), fake_model())
        async with client_for(app) as client:
            return (await client.post("/v1/chat/completions/render", json=chat(
                        [{"role": "user", "content": "hi"}], no_stop_trim=True)),
                    await client.post("/v1/chat/completions/render", json=chat(
                        [{"role": "user", "content": "hi"}], model="other")),
                    await client.post("/v1/chat/completions/render", json=chat(
                        [{"role": "user", "content": "hi"}]), headers={"Authorization": ""}))

    unsupported, wrong_model, no_key = asyncio.run(go())
    assert unsupported.status_code == 400
    assert unsupported.json()["error"]["param"] == "no_stop_trim"
    assert wrong_model.status_code == 404
    assert no_key.status_code == 401


def test_every_field_the_router_adds_is_accepted() -> None:
    async def go():
        app = build_app(ServeSettings(api_key=[KEY]), FakeEngine(), fake_model())
        async with client_for(app) as client:
            return (await client.post("/v1/chat/completions", json=chat(
                        [{"role": "user", "content": "hi"}], stream=True)),
                    await client.post("/v1/completions", json={
                        "model": "fake", "prompt": "hi", "max_tokens": 2,
                        **ROUTER_COMPLETION_DEFAULTS}))

    streamed, completed = asyncio.run(go())
    assert streamed.status_code == 200, streamed.text
    assert "data: [DONE]" in streamed.text and '"error"' not in streamed.text
    assert completed.status_code == 200, completed.text


def test_get_load_counts_requests_in_flight_without_a_key() -> None:
    engine = FakeEngine(token_delay=0.05)

    async def go():
        app = build_app(ServeSettings(api_key=[KEY]), engine, fake_model())
        async with client_for(app) as client:
            idle = (await client.get("/get_load", headers={"Authorization": ""})).json()
            streams = [asyncio.create_task(client.post(
                "/v1/chat/completions", json=chat([{"role": "user", "content": "hi"}],
                                                  max_tokens=40, stream=True)))
                       for _ in range(3)]
            await asyncio.sleep(0.5)
            busy = (await client.get("/get_load", headers={"Authorization": ""})).json()
            await asyncio.gather(*streams)
            done = (await client.get("/get_load")).json()
            return idle, busy, done

    assert asyncio.run(go()) == ({"load": 0}, {"load": 3}, {"load": 0})


def test_render_calls_are_not_counted_as_api_requests() -> None:
    metrics = GatewayMetrics(["fake"])

    async def go():
        app = build_app(ServeSettings(api_key=[KEY]), FakeEngine(), fake_model(),
                        telemetry=metrics, metrics=metrics)
        async with client_for(app) as client:
            for _ in range(3):
                await client.post("/v1/chat/completions/render",
                                  json=chat([{"role": "user", "content": "hi"}]))
            await client.post("/v1/chat/completions",
                              json=chat([{"role": "user", "content": "hi"}]))
            return (await client.get("/metrics")).text

    text = asyncio.run(go())
    assert 'endpoint="/v1/chat/completions",model="fake",status="200"} 1.0' in text
    assert 'endpoint="other"' not in text


def test_streamed_return_token_ids_gives_the_prompt_first_then_each_deltas_ids() -> None:
    engine = RecordingEngine()

    async def go():
        app = build_app(ServeSettings(api_key=[KEY]), engine, fake_model())
        async with client_for(app) as client:
            return await client.post("/v1/chat/completions", json=chat(
                [{"role": "user", "content": "头痛"}], max_tokens=5, stream=True,
                return_token_ids=True))

    response = asyncio.run(go())
    chunks = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: {")]
    assert chunks[0]["prompt_token_ids"] == engine.prompts[0]
    assert all("prompt_token_ids" not in c for c in chunks[1:])
    assert [i for c in chunks[1:] for i in c["choices"][0]["token_ids"]] == [0, 1, 2, 3, 4]
