"""OpenAI's legacy logprobs object from vLLM's per-position logprobs (server/logprobs.py)."""

from __future__ import annotations

from vllm.logprobs import Logprob

from server.logprobs import LegacyLogprobs


def test_prompt_then_generated_tokens() -> None:
    prompt_ids = [7, 8, 9]
    positions = [
        None,  # nothing precedes the first prompt token
        {8: Logprob(-1.5, rank=3, decoded_token="b"), 1: Logprob(-0.2, rank=1, decoded_token="x")},
        {9: Logprob(float("-inf"), rank=900, decoded_token="c"),
         1: Logprob(-0.1, rank=1, decoded_token="x")},
    ]
    result = LegacyLogprobs().extend(prompt_ids, positions, 1, lambda i: {7: "aa"}[i])
    result.extend([4], [{4: Logprob(-0.3, rank=1, decoded_token="dd")}], 1, start=10)
    out = result.as_dict()
    assert out["tokens"] == ["aa", "b", "c", "dd"]
    assert out["token_logprobs"] == [None, -1.5, -9999.0, -0.3]
    # The chosen token is always there, plus the `top` most likely.
    assert out["top_logprobs"] == [None, {"b": -1.5, "x": -0.2}, {"c": -9999.0, "x": -0.1},
                                   {"dd": -0.3}]
    assert out["text_offset"] == [0, 2, 3, 10]


def test_zero_top_still_holds_the_chosen_token() -> None:
    out = LegacyLogprobs(5).extend([3], [{3: Logprob(-2.0, rank=4, decoded_token="z")}],
                                   0).as_dict()
    assert out["top_logprobs"] == [{"z": -2.0}] and out["text_offset"] == [5]
