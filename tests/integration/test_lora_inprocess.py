"""LoRA routing and the admin key in process (fake engine): seconds, where tests/e2e/test_lora.py
needs three real servers. The engine must receive the adapter the request named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from server.app import build_app
from server.lora import Adapter
from server.served_models import ServedModels
from server.settings import ServeSettings
from tests.support.fake_engine import FakeEngine, fake_model

API, ADMIN = "user-key", "admin-key"


class RecordingEngine(FakeEngine):
    """The fake engine, noting which adapter each request asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.adapters: list[str | None] = []

    def generate(self, prompt: dict, params, request_id: str, lora_request=None):
        self.adapters.append(lora_request and lora_request.lora_name)
        return super().generate(prompt, params, request_id)


def served_with(name: str) -> ServedModels:
    served = ServedModels("fake")
    served.add(served.new_request(Adapter(name, Path("/adapters") / name, rank=8)))
    return served


async def call(engine: FakeEngine, method: str, path: str, *, key: str | None = API,
               json: dict | None = None, **settings) -> httpx.Response:
    settings = {"api_key": [API], "admin_api_key": [ADMIN], **settings}
    app = build_app(ServeSettings(**settings), engine, fake_model(),
                    served=served_with("paediatrics"))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        return await client.request(method, path, json=json, headers=headers)


def test_model_picks_the_adapter_the_engine_gets() -> None:
    engine = RecordingEngine()
    for model in ("fake", "paediatrics"):
        response = asyncio.run(call(engine, "POST", "/v1/completions", json={
            "model": model, "prompt": "hi", "max_tokens": 2}))
        assert response.status_code == 200 and response.json()["model"] == model
    assert engine.adapters == [None, "paediatrics"]
    cards = asyncio.run(call(engine, "GET", "/v1/models")).json()["data"]
    assert [(c["id"], c["parent"]) for c in cards] == [("fake", None), ("paediatrics", "fake")]


def test_unknown_model_lists_the_served_names() -> None:
    response = asyncio.run(call(FakeEngine(), "POST", "/v1/chat/completions", json={
        "model": "cardiology", "messages": [{"role": "user", "content": "hi"}]}))
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "The model 'cardiology' does not exist. This server serves: 'fake', 'paediatrics'.")


@pytest.mark.parametrize("key", [None, API, "wrong"])
def test_admin_routes_take_only_the_admin_key(key: str | None) -> None:
    for route in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        response = asyncio.run(call(FakeEngine(), "POST", route, key=key,
                                    json={"lora_name": "paediatrics", "lora_path": "x"}))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_admin_key"


def test_admin_key_opens_only_the_admin_routes() -> None:
    # Runtime loading off: the admin key passes, the route says why it will not act.
    response = asyncio.run(call(FakeEngine(), "POST", "/v1/unload_lora_adapter", key=ADMIN,
                                json={"lora_name": "paediatrics"}))
    assert (response.status_code, response.json()["error"]["code"]) == (
        403, "runtime_lora_disabled")
    models = asyncio.run(call(FakeEngine(), "GET", "/v1/models", key=ADMIN))
    assert models.status_code == 401  # the admin key is not an API key
