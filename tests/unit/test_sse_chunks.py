"""The streaming hot path's encoded chunks: byte for byte what encoding the dict would give."""

from __future__ import annotations

import json

import orjson
import pytest

from server.serving_chat import TextDeltaChunk
from server.sse import DONE_EVENT, encode_event

BASE = {"id": "chatcmpl-0f3a", "object": "chat.completion.chunk", "created": 1764590000,
        "model": "huatuo2-7b"}


@pytest.mark.parametrize("text", ["头痛", "a \"quoted\" \\ line\nand\ttab", "\u2028\x00 é 😀", " "])
@pytest.mark.parametrize("index", [0, 3])
def test_text_delta_template_matches_the_dict_encoding(text: str, index: int) -> None:
    payload = {**BASE, "choices": [{"index": index, "delta": {"content": text},
                                    "logprobs": None, "finish_reason": None}]}
    encoded = TextDeltaChunk(BASE).encode(index, text)
    assert encoded == orjson.dumps(payload)
    assert json.loads(encoded) == payload


def test_events_are_data_lines_of_utf8_json() -> None:
    payload = {"choices": [{"delta": {"content": "发烧"}}]}
    assert encode_event(payload) == b"data: " + json.dumps(
        payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert DONE_EVENT == b"data: [DONE]\n\n"
