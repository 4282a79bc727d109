"""vllm-router (the real binary, pinned in the dev extra) in front of two real replicas (issue 17).

One module fixture: two `huatuo serve` replicas of the tiny model behind API keys, started
side by side, and a `cache_aware` router in front of them. The router forwards the client's key;
it renders every request on every replica (`/v1/chat/completions/render`) and routes it to the
replica whose prefix cache holds the longest part of it, so a consultation's turns stay on one
replica. Which replica answered is read from each replica's own request counter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from loadtests.server_process import ServerProcess, free_port, vllm_router_argv
from tests.support.server_process import huatuo_server

pytestmark = pytest.mark.e2e

KEY = "sk-router-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_MODEL_LEN = 512


@pytest.fixture(scope="module")
def replicas(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[list[ServerProcess]]:
    logs = tmp_path_factory.mktemp("router-replicas")
    args = ["--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len",
            str(MAX_MODEL_LEN), "--dtype", "float32", "--api-key", KEY]
    servers = [huatuo_server(args, logs / f"replica-{i}.log") for i in range(2)]
    try:
        for server in servers:  # both engines start at once
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def router(replicas: list[ServerProcess], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    port = free_port()
    argv = vllm_router_argv(port, [r.base_url for r in replicas], "cache_aware", free_port(),
                            ["--health-check-interval-secs", "2"])
    proc = ServerProcess(argv, tmp_path_factory.mktemp("router") / "router.log", port=port,
                         name="vllm-router").start_ready(120)
    yield proc
    proc.stop()


def chat_requests_served(replica: ServerProcess) -> float:
    """The replica's own count of chat completions answered (any status)."""
    text = httpx.get(f"{replica.base_url}/metrics", headers=AUTH, timeout=30).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "huatuo_requests_total"
               and sample.labels.get("endpoint") == "/v1/chat/completions")


def consultation_turns(patient: int, turns: int) -> list[list[dict]]:
    """Each turn's messages: a long first complaint (as patients write them), short turns."""
    first = (f"患者{patient}号：我最近{patient + 2}天一直头痛发热，晚上咳嗽加重，"
             "吃了退烧药也没有明显好转，之前有高血压病史，没有过敏史。" * 2)
    history: list[dict] = []
    out = []
    for turn in range(turns):
        question = first if turn == 0 else f"第{turn}个问题：还需要注意什么？"
        messages = [*history, {"role": "user", "content": question}]
        out.append(messages)
        history = [*messages, {"role": "assistant", "content": "注意休息，多喝水。"}]
    return out


def test_cache_aware_keeps_each_consultations_turns_on_one_replica(
        router: ServerProcess, replicas: list[ServerProcess]) -> None:
    client = OpenAI(base_url=f"{router.base_url}/v1", api_key=KEY, max_retries=0, timeout=120)
    placements: dict[int, list[int]] = {}
    for patient in range(4):
        for messages in consultation_turns(patient, 3):
            before = [chat_requests_served(r) for r in replicas]
            answer = client.chat.completions.create(model="tiny", messages=messages,
                                                    max_tokens=4, temperature=0)
            assert answer.choices[0].finish_reason in ("stop", "length")
            after = [chat_requests_served(r) for r in replicas]
            served = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a > b]
            assert len(served) == 1, (before, after)
            placements.setdefault(patient, []).append(served[0])
    for patient, where in placements.items():
        assert len(set(where)) == 1, f"consultation {patient} moved between replicas: {where}"


def test_render_ids_are_the_prompt_ids_the_chat_request_used(
        router: ServerProcess, replicas: list[ServerProcess]) -> None:
    # Long enough that the oldest rounds are trimmed to fit the 512-token context.
    messages = consultation_turns(7, 1)[0]
    for i in range(12):
        messages = [*messages, {"role": "assistant", "content": f"回答{i}：注意休息，多喝水。" * 3},
                    {"role": "user", "content": f"追问{i}：还要吃药吗？"}]
    body = {"model": "tiny", "messages": messages, "max_tokens": 8, "temperature": 0}
    direct = replicas[0].base_url
    rendered = httpx.post(f"{direct}/v1/chat/completions/render", json=body, headers=AUTH,
                          timeout=60)
    assert rendered.status_code == 200, rendered.text
    token_ids = rendered.json()["token_ids"]
    # Through the router, with vLLM's return_token_ids: the ids the engine was given.
    answered = httpx.post(f"{router.base_url}/v1/chat/completions",
                          json={**body, "return_token_ids": True}, headers=AUTH, timeout=120)
    assert answered.status_code == 200, answered.text
    assert int(answered.headers["x-huatuo-trimmed-turns"]) > 0
    assert answered.json()["prompt_token_ids"] == token_ids
    assert answered.json()["usage"]["prompt_tokens"] == len(token_ids)
    # And /tokenize (vLLM's shape) gives the same ids for the same messages.
    tokenized = httpx.post(f"{direct}/tokenize", json={"model": "tiny", "messages": messages,
                                                       "max_tokens": 8},
                           headers=AUTH, timeout=60).json()
    assert tokenized["tokens"] == token_ids and tokenized["count"] == len(token_ids)


def test_everything_the_router_sends_is_accepted_streams_included(
        router: ServerProcess) -> None:
    client = OpenAI(base_url=f"{router.base_url}/v1", api_key=KEY, max_retries=0, timeout=120)
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "头痛怎么办？"}], max_tokens=6,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    completion = client.completions.create(model="tiny", prompt="<问>：头痛怎么办？\n<答>：",
                                           max_tokens=4)
    assert completion.usage.completion_tokens > 0


def test_the_router_passes_the_key_and_replicas_still_refuse_without_it(
        router: ServerProcess, replicas: list[ServerProcess]) -> None:
    refused = httpx.post(f"{router.base_url}/v1/chat/completions", timeout=60, json={
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert refused.status_code == 401
    # /get_load answers the router's keyless polls (power_of_two), and only a count.
    load = httpx.get(f"{replicas[0].base_url}/get_load", timeout=30)
    assert load.status_code == 200 and load.json() == {"load": 0}
