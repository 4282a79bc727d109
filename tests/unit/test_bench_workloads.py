"""Workload generators of `huatuo bench`: seeded, reproducible, well-formed conversations."""

from __future__ import annotations

import json

import pytest

from huatuogpt2.prompt_format import parse_messages
from loadtests.workloads import (
    build_workload,
    estimate_tokens,
    load_jsonl,
    long_context,
    multi_turn,
    single_turn,
)


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("name", ["single", "multi", "long"])
def test_same_seed_same_requests_other_seed_other_requests(name: str) -> None:
    first = build_workload(name, 30, seed=7, max_model_len=512)
    again = build_workload(name, 30, seed=7, max_model_len=512)
    other = build_workload(name, 30, seed=8, max_model_len=512)
    assert [r.messages for r in first] == [r.messages for r in again]
    assert [r.messages for r in first] != [r.messages for r in other]
    assert len(first) == 30


def test_single_turn_languages() -> None:
    zh = single_turn(20, language="zh")
    en = single_turn(20, language="en")
    mixed = single_turn(40, language="mixed", seed=1)
    assert all(_has_cjk(r.messages[0]["content"]) for r in zh)
    assert all(r.messages[0]["content"].isascii() for r in en)
    kinds = {_has_cjk(r.messages[0]["content"]) for r in mixed}
    assert kinds == {True, False}
    assert all(len(r.messages) == 1 and r.messages[0]["role"] == "user" for r in zh + en)


def test_single_turn_max_tokens_and_language_checked() -> None:
    assert {r.max_tokens for r in single_turn(5, max_tokens=17)} == {17}
    with pytest.raises(ValueError, match="language"):
        single_turn(1, language="fr")


def test_multi_turn_resends_the_growing_history() -> None:
    requests = multi_turn(120, seed=3)
    by_conversation: dict[int, list] = {}
    for request in requests:
        by_conversation.setdefault(request.conversation, []).append(request)
        parse_messages(request.messages)  # valid HuatuoGPT2 conversation, ends with a user turn
        assert request.messages[-1]["role"] == "user"
    assert any(len(turns) >= 3 for turns in by_conversation.values())
    for turns in by_conversation.values():
        assert [r.turn for r in turns] == list(range(len(turns)))
        for earlier, later in zip(turns, turns[1:], strict=False):
            # The next turn = the previous request + an assistant answer + a new question.
            assert later.messages[:len(earlier.messages)] == earlier.messages
            assert len(later.messages) == len(earlier.messages) + 2
            assert later.messages[len(earlier.messages)]["role"] == "assistant"
            # Its rendered prompt therefore extends the previous prompt (prefix caching).
            assert later.prompt_text().startswith(earlier.prompt_text())


def test_multi_turn_interleaves_consultations() -> None:
    requests = multi_turn(40, seed=0)
    # A consultation's next turn is not sent right after its previous one.
    assert requests[0].conversation != requests[1].conversation
    assert len(requests) == 40


def test_long_context_fills_the_budget_without_overflowing() -> None:
    def count(text: str) -> int:  # a stand-in tokenizer: one token per UTF-8 byte
        return len(text.encode())

    requests = long_context(10, max_model_len=2048, max_tokens=48, fill=0.9, count_tokens=count)
    budget = int((2048 - 48) * 0.9)
    for request in requests:
        size = count(request.prompt_text())
        assert size <= budget
        assert size > budget - 300  # within one record line of the budget
        assert request.max_tokens == 48


def test_long_context_estimate_and_too_small_context() -> None:
    requests = long_context(3, max_model_len=512, max_tokens=64)
    assert all(estimate_tokens(r.prompt_text()) <= int((512 - 64) * 0.9) for r in requests)
    with pytest.raises(ValueError, match="no room"):
        long_context(1, max_model_len=64, max_tokens=60)


def test_estimate_tokens_counts_cjk_per_character() -> None:
    assert estimate_tokens("头痛") == 2
    assert estimate_tokens("abcdefgh") == 2


def test_load_jsonl_both_schemas_and_turn_expansion(tmp_path) -> None:
    path = tmp_path / "conversations.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": "头痛怎么办？"},
                      {"role": "assistant", "content": "多休息。"},
                      {"role": "user", "content": "还要吃药吗？"}], "max_tokens": 9},
        {"id": "x", "conversations": [{"from": "human", "value": "What is a fever?"},
                                      {"from": "gpt", "value": "A high temperature."}]},
    ]
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n")
    requests = load_jsonl(path, max_tokens=20)
    assert [(r.conversation, r.turn, len(r.messages), r.max_tokens) for r in requests] == [
        (0, 0, 1, 9), (0, 1, 3, 9), (1, 0, 1, 20)]
    assert requests[2].messages == [{"role": "user", "content": "What is a fever?"}]
    last_only = load_jsonl(path, expand_turns=False)
    assert [len(r.messages) for r in last_only] == [3, 1]
    cycled = build_workload("single", 5, jsonl=path)
    assert [r.messages for r in cycled] == [r.messages for r in (requests * 2)[:5]]


def test_load_jsonl_rejects_bad_lines(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "assistant", "content": "hi"}]}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_jsonl(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="not a conversation"):
        load_jsonl(path)
