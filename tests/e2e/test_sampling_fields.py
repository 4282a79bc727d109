"""Every vLLM sampling extension the server accepts has its effect on the real engine; fields
it cannot honour are refused by name; fields that change nothing are accepted."""

from __future__ import annotations

import httpx
import pytest

from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e
MODEL = "tiny-huatuo"
PROMPT = "<问>：我最近总是头痛，应该怎么办？\n<答>："
EOS, BOS = 2, 1


def complete(server: ServerProcess, **fields) -> dict:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, **fields}
    response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def tokens(server: ServerProcess, **fields) -> list[str]:
    choice = complete(server, logprobs=0, **fields)["choices"][0]
    return choice["logprobs"]["tokens"]


def test_logit_bias_ignore_eos_and_min_tokens(server: ServerProcess) -> None:
    """A bias that forces EOS ends the answer at once; ignore_eos and min_tokens override it
    (without ignore_eos, benchmarks that send it get shorter answers than they asked for)."""
    forced = complete(server, logit_bias={str(EOS): 100})
    assert forced["usage"]["completion_tokens"] <= 1
    assert forced["choices"][0]["finish_reason"] == "stop"
    ignored = complete(server, logit_bias={str(EOS): 100}, ignore_eos=True)
    assert ignored["usage"]["completion_tokens"] == 8
    assert ignored["choices"][0]["finish_reason"] == "length"
    minimum = complete(server, logit_bias={str(EOS): 100}, min_tokens=5)
    assert minimum["usage"]["completion_tokens"] == 6  # 5 tokens, then the forced EOS


def test_stop_strings_and_include_stop_str_in_output(server: ServerProcess) -> None:
    greedy = complete(server, max_tokens=12)
    assert greedy["usage"]["completion_tokens"] == 12
    text = greedy["choices"][0]["text"]
    stop = text[3:5] if len(text) >= 5 else text[-1]
    cut = complete(server, max_tokens=12, stop=[stop])["choices"][0]
    assert cut["finish_reason"] == "stop" and stop not in cut["text"]
    kept = complete(server, max_tokens=12, stop=[stop], include_stop_str_in_output=True)
    assert kept["choices"][0]["text"].endswith(stop)


def test_stop_token_ids_end_the_answer(server: ServerProcess) -> None:
    allowed = [100, 101]
    # Only two tokens allowed: the answer alternates between them; stopping on one ends it.
    only = complete(server, allowed_token_ids=allowed, max_tokens=6)
    assert only["usage"]["completion_tokens"] == 6
    stopped = complete(server, allowed_token_ids=allowed, stop_token_ids=allowed, max_tokens=6)
    assert stopped["usage"]["completion_tokens"] == 1
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_allowed_token_ids_restrict_the_vocabulary(server: ServerProcess) -> None:
    free = set(tokens(server, max_tokens=8))
    restricted = tokens(server, max_tokens=8, allowed_token_ids=[100])
    assert len(set(restricted)) == 1 and set(restricted) != free


def test_bad_words_are_never_generated(server: ServerProcess) -> None:
    greedy = tokens(server, max_tokens=8)
    word = next(t for t in greedy if t.strip())
    banned = tokens(server, max_tokens=8, bad_words=[word.strip()])
    assert word not in banned and banned != greedy


def test_skip_special_tokens(server: ServerProcess) -> None:
    forced_bos = {"logit_bias": {str(BOS): 100}, "ignore_eos": True, "max_tokens": 3}
    assert complete(server, **forced_bos)["choices"][0]["text"] == ""
    shown = complete(server, skip_special_tokens=False, **forced_bos)["choices"][0]["text"]
    assert shown.count("<s>") == 3


def test_min_p_one_is_greedy(server: ServerProcess) -> None:
    greedy = complete(server, max_tokens=10)["choices"][0]["text"]
    sampled = complete(server, max_tokens=10, temperature=1.5, seed=3, min_p=1.0)
    assert sampled["choices"][0]["text"] == greedy
    wild = complete(server, max_tokens=10, temperature=1.5, seed=3, top_k=-1, top_p=1.0)
    assert wild["choices"][0]["text"] != greedy  # without min_p the same seed wanders off


@pytest.mark.parametrize("field,value", [("tools", [{"type": "function", "function": {
    "name": "f", "parameters": {}}}]), ("use_beam_search", True), ("guided_regex", "[ab]+"),
    ("continue_final_message", True), ("some_future_field", 1)])
def test_fields_that_would_change_the_answer_are_refused_by_name(
        server: ServerProcess, field: str, value: object) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "unsupported_field"


def test_bookkeeping_fields_and_router_defaults_are_accepted(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        "store": False, "metadata": {"ticket": "1"}, "continue_final_message": False,
        "skip_special_tokens": True, "ignore_eos": False, "separate_reasoning": True,
        "tool_choice": "none", "some_future_field": None})
    assert response.status_code == 200, response.text
