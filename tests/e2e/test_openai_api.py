"""The gateway with the official `openai` SDK against a real `huatuo serve` (real vLLM engine)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.support.server_process import SERVER_MAX_MODEL_LEN, ServerProcess
from tests.support.upstream import upstream_generate_prompt

pytestmark = pytest.mark.e2e
MODEL = "tiny-huatuo"
QUESTION = "我最近总是头痛，应该怎么办？"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def async_client(server: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def chat(client: openai.OpenAI, content: str = QUESTION, **kwargs):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_health_and_version(server: ServerProcess) -> None:
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    version = httpx.get(f"{server.base_url}/version").json()
    assert version["vllm"] == "0.32.0" and version["model"] == MODEL
    assert httpx.get(f"{server.base_url}/docs").status_code == 200
    assert "/v1/chat/completions" in httpx.get(f"{server.base_url}/openapi.json").json()["paths"]


def test_chat_completion(client: openai.OpenAI) -> None:
    response = chat(client, max_tokens=8, temperature=0)
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == MODEL
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert response.usage.completion_tokens == 8
    assert choice.finish_reason == "length"


def test_prompt_tokens_equal_the_upstream_prompt(client: openai.OpenAI,
                                                 tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    history = [("你好", "您好，请问有什么可以帮您？"), ("I have a fever.", "How high is it?")]
    messages = []
    for q, a in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": "38.5"})
    prompt = upstream_generate_prompt("38.5", history)
    expected = len(tokenizer.encode(prompt, add_special_tokens=False))
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    assert response.usage.prompt_tokens == expected


def test_streamed_greedy_deltas_equal_the_full_text(client: openai.OpenAI) -> None:
    full = chat(client, max_tokens=24, temperature=0).choices[0].message.content
    stream = chat(client, max_tokens=24, temperature=0, stream=True,
                  stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24


def test_sse_wire_format_ends_with_done(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_n_two_choices(client: openai.OpenAI) -> None:
    response = chat(client, max_tokens=5, temperature=1.0, n=2, seed=7)
    assert sorted(c.index for c in response.choices) == [0, 1]
    assert response.usage.completion_tokens == 10


def test_n_two_streamed(client: openai.OpenAI) -> None:
    chunks = list(chat(client, max_tokens=5, temperature=1.0, n=2, stream=True))
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    first = chat(client, max_tokens=16, temperature=1.0, seed=1234).choices[0].message.content
    second = chat(client, max_tokens=16, temperature=1.0, seed=1234).choices[0].message.content
    assert first == second


def test_stop_string_ends_the_answer(client: openai.OpenAI) -> None:
    full = chat(client, max_tokens=32, temperature=0).choices[0].message.content
    # A stop string taken from inside the greedy answer: the answer must end just before it.
    candidates = [c for c in full[2:] if c.strip() and c != "\ufffd"]
    assert candidates, f"greedy answer too short to pick a stop string: {full!r}"
    stop = candidates[0]
    response = chat(client, max_tokens=32, temperature=0, stop=[stop])
    text = response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    assert stop not in text and full.startswith(text)


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    response = chat(client, max_completion_tokens=3)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 3


def test_logprobs(client: openai.OpenAI) -> None:
    response = chat(client, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = response.choices[0].logprobs.content
    assert len(content) == 4
    assert all(len(item.top_logprobs) == 2 and item.logprob <= 0 for item in content)


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    response = chat(client, max_tokens=20, temperature=1.0, response_format={
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "string", "enum": ["yes", "no"]}}})
    assert json.loads(response.choices[0].message.content) in ("yes", "no")


def test_defaults_come_from_generation_config(server: ServerProcess,
                                              client: openai.OpenAI) -> None:
    """Leaving the sampling fields out is the same as sending the checkpoint's defaults
    (temperature 0.3, top_k 5, top_p 0.85, repetition_penalty 1.1), and not the same as
    sending other values."""
    def answer(**fields) -> list[str]:
        return [chat(client, max_tokens=24, seed=seed, **fields).choices[0].message.content
                for seed in (1, 2, 3)]

    omitted = answer()
    assert answer(temperature=0.3, top_p=0.85,
                  extra_body={"top_k": 5, "repetition_penalty": 1.1}) == omitted
    assert answer(temperature=1.5, top_p=1.0, extra_body={"top_k": -1}) != omitted


def test_system_message_is_merged(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    response = client.chat.completions.create(model=MODEL, max_tokens=1, messages=[
        {"role": "system", "content": "你是医生。"}, {"role": "user", "content": "头痛"}])
    expected = tokenizer.encode("<问>：你是医生。\n头痛\n<答>：", add_special_tokens=False)
    assert response.usage.prompt_tokens == len(expected)


def test_trimming_drops_oldest_rounds(client: openai.OpenAI) -> None:
    long_answer = "这是一段很长的回答。" * 20
    messages = []
    for i in range(6):
        messages += [{"role": "user", "content": f"问题{i}"},
                     {"role": "assistant", "content": long_answer}]
    messages.append({"role": "user", "content": "最后的问题"})
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=16)
    trimmed = int(raw.headers["x-huatuo-trimmed-turns"])
    assert trimmed >= 1
    assert raw.parse().usage.prompt_tokens <= SERVER_MAX_MODEL_LEN - 16


def test_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, content="长" * 2000, max_tokens=16)
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100000}, "max_tokens"),
        ({"presence_penalty": 5}, "presence_penalty"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 12}]}, "messages[0].content"),
        ({"messages": []}, "messages"),
        ({"top_logprobs": 30, "logprobs": True}, "top_logprobs"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"n": 2, "temperature": 0}, "n"),
    ],
)
def test_bad_requests_name_the_field(client: openai.OpenAI, kwargs: dict, param: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**body)
    assert info.value.status_code == 400
    assert info.value.param == param
    assert param.split("[")[0].split(".")[0] in info.value.message


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert info.value.param == "model"


def test_invalid_json_is_400(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=b"{bad",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_text_completions(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = "<问>：你好\n<答>："
    response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6,
                                         temperature=0, logprobs=1, echo=True)
    assert response.object == "text_completion"
    assert response.usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert response.choices[0].text.startswith(prompt)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    # echo + logprobs: the prompt's tokens (the first without a logprob), then the 6 generated.
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(ids) + 6
    assert logprobs.token_logprobs[0] is None and None not in logprobs.token_logprobs[1:]
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=6, temperature=0)
    assert prompt + by_ids.choices[0].text == response.choices[0].text
    batch = client.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=2)
    assert sorted(c.index for c in batch.choices) == [0, 1]


def test_text_completion_stream(client: openai.OpenAI) -> None:
    full = client.completions.create(model=MODEL, prompt="hello", max_tokens=10, temperature=0)
    streamed = client.completions.create(model=MODEL, prompt="hello", max_tokens=10,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == full.choices[0].text


def test_async_client_concurrent_streams(async_client: openai.AsyncOpenAI) -> None:
    async def one(i: int) -> str:
        stream = await async_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"问题 {i}"}], max_tokens=8,
            temperature=0, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def main() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    texts = asyncio.run(main())
    assert len(texts) == 8 and all(isinstance(t, str) for t in texts)
