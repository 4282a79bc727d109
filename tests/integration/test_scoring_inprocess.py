"""Batched completions in process over the fake engine: one engine request per prompt, and
every one of them aborted when the server drains (issue 14)."""

from __future__ import annotations

import asyncio
import json

import httpx

from server.app import build_app
from server.errors import APIError
from server.lifecycle import Lifecycle
from server.settings import ServeSettings
from tests.support.fake_engine import FakeEngine, fake_model


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             timeout=30)


def completion(prompt, max_tokens: int = 4, stream: bool = False) -> dict:
    return {"model": "fake", "prompt": prompt, "max_tokens": max_tokens, "stream": stream}


class RecordingEngine(FakeEngine):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.request_ids: list[str] = []

    def generate(self, prompt: dict, params, request_id: str, lora_request=None):
        self.request_ids.append(request_id)
        return super().generate(prompt, params, request_id)


def test_each_prompt_of_a_batch_is_its_own_engine_request() -> None:
    engine = RecordingEngine()

    async def go():
        async with client_for(build_app(ServeSettings(), engine, fake_model())) as client:
            return await client.post("/v1/completions", json=completion(["a", "b", "c"]))

    response = asyncio.run(go())
    assert response.status_code == 200
    cid = response.json()["id"]
    assert sorted(engine.request_ids) == [f"{cid}-0", f"{cid}-1", f"{cid}-2"]
    assert [c["index"] for c in response.json()["choices"]] == [0, 1, 2]


def test_drain_aborts_every_prompt_of_a_batch() -> None:
    engine = RecordingEngine(token_delay=0.05)

    async def go():
        app = build_app(ServeSettings(shutdown_timeout=0.3), engine, fake_model())
        async with client_for(app) as client:
            stream = asyncio.create_task(client.post(
                "/v1/completions", json=completion(["a", "b", "c"], 200, stream=True)))
            await asyncio.sleep(0.2)
            await app.state.gateway.lifecycle.drain(0.2, engine.abort)
            return await stream

    response = asyncio.run(go())
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "shutting_down"
    assert len(engine.request_ids) == 3
    assert sorted(engine.aborted) == sorted(engine.request_ids)
    assert not engine.running


def test_lifecycle_maps_engine_ids_to_their_request() -> None:
    lifecycle = Lifecycle(4)
    aborted: list[str] = []

    async def abort(ids: list[str]) -> None:
        aborted.extend(ids)

    async def go():
        lifecycle.admit("cmpl-1")
        lifecycle.track("cmpl-1", ["cmpl-1-0", "cmpl-1-1"])
        lifecycle.admit("chat-2")
        await lifecycle.terminate_all(APIError(503, "bye", code="shutting_down"), abort)

    asyncio.run(go())
    assert sorted(aborted) == ["chat-2", "cmpl-1-0", "cmpl-1-1"]
    assert lifecycle.termination("cmpl-1-1").code == "shutting_down"
    assert lifecycle.termination("chat-2").code == "shutting_down"
    lifecycle.release("cmpl-1")
    assert lifecycle.termination("cmpl-1-0") is None


def test_max_tokens_zero_needs_echo() -> None:
    async def go():
        async with client_for(build_app(ServeSettings(), FakeEngine(), fake_model())) as client:
            return await client.post("/v1/completions", json=completion("a", max_tokens=0))

    response = asyncio.run(go())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
