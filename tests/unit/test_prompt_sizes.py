"""How big a prompt is, as the gateway measures it on the event loop to decide whether to
tokenise it there or in a thread (server/serving_common.py)."""

from __future__ import annotations

from server.serving_common import THREAD_THRESHOLD, messages_size, prompt_size


def test_messages_count_the_text_of_strings_and_of_content_parts() -> None:
    messages = [{"role": "system", "content": "你是医生"},
                {"role": "user", "content": [{"type": "text", "text": "头痛"},
                                             {"type": "text", "text": "三天了"}]},
                {"role": "assistant", "content": None}]
    assert messages_size(messages) == 4 + 2 + 3


def test_a_huge_text_part_is_large_enough_for_a_thread() -> None:
    huge = [{"role": "user", "content": [{"type": "text", "text": "痛" * (THREAD_THRESHOLD + 1)}]}]
    assert messages_size(huge) > THREAD_THRESHOLD


def test_odd_shapes_count_without_failing() -> None:
    assert messages_size(["not a message", {"content": 12}, {"content": [None, {"text": 3}]}]) == 2


def test_completion_prompts_count_characters_or_token_ids() -> None:
    assert prompt_size("头痛") == 2
    assert prompt_size([1, 2, 3]) == 3
    assert prompt_size(["ab", [1, 2], "c"]) == 5
    assert prompt_size(None) == 0
