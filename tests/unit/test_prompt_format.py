"""The HuatuoGPT2 prompt format, byte-exact with upstream, and its validation and trimming."""

from __future__ import annotations

import re

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from huatuogpt2.prompt_format import (
    CHAT_TEMPLATE,
    Conversation,
    PromptError,
    Round,
    SystemPolicy,
    fit_to_context,
    generate_prompt,
    parse_messages,
    render,
)
from tests.support.upstream import upstream_generate_prompt

MESSAGES = [
    "我最近总是头痛，应该怎么办？",
    "What should I do about a persistent cough?",
    "",
    " ",
    "\n",
    "血压 140/90 mmHg，需要吃药吗？ Is that high?",
    "长" * 3000,
    "emoji 🩺💊 and rare 𠀀 characters",
]


def conversations(turns: int):
    """40 conversations of `turns` rounds drawing every message in every position."""
    for start in range(40):
        combo = [MESSAGES[(start + 3 * k) % len(MESSAGES)] for k in range(2 * turns - 1)]
        history = [(combo[2 * i], combo[2 * i + 1]) for i in range(turns - 1)]
        yield combo[-1], history


def as_messages(query: str, history: list[tuple[str, str]]) -> list[dict]:
    messages = []
    for q, a in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages + [{"role": "user", "content": query}]


@pytest.mark.parametrize("turns", [1, 2, 3, 4, 5])
def test_render_is_byte_identical_to_upstream(turns: int) -> None:
    checked = 0
    for query, history in conversations(turns):
        expected = upstream_generate_prompt(query, history).encode()
        assert generate_prompt(query, history).encode() == expected
        assert render(parse_messages(as_messages(query, history))).encode() == expected
        checked += 1
    assert checked > 0


def test_format_details() -> None:
    prompt = generate_prompt("问题", [("你好", "您好")])
    assert prompt == "<问>：你好\n<答>：您好\n<问>：问题\n<答>："
    assert "\uff1a" in prompt and ":" not in prompt  # the FULL-WIDTH colon
    assert not prompt.startswith("<s>")


def _jinja(messages: list[dict]) -> str:
    # The environment transformers uses to render chat templates.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)


@pytest.mark.parametrize("turns", [1, 2, 3, 5])
def test_chat_template_matches_prompt_module(turns: int) -> None:
    for query, history in conversations(turns):
        messages = as_messages(query, history)
        assert _jinja(messages) == render(parse_messages(messages))
        with_system = [{"role": "system", "content": "你是一名医生。"}, *messages]
        assert _jinja(with_system) == render(parse_messages(with_system))


def test_text_parts_are_joined_like_the_template() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"},
                                             {"type": "text", "text": "b"}]}]
    assert render(parse_messages(messages)) == "<问>：a\nb\n<答>："
    assert _jinja(messages) == render(parse_messages(messages))


def test_system_merge_puts_text_before_first_user_message() -> None:
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"}]
    assert render(parse_messages(messages)) == (
        "<问>：Be brief.\nQ1\n<答>：A1\n<问>：Q2\n<答>："
    )


def test_system_reject_policy() -> None:
    with pytest.raises(PromptError) as info:
        parse_messages([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
                       SystemPolicy.REJECT)
    assert info.value.param == "messages[0].role"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "assistant", "content": "a"}], "messages[0].role"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
         "messages[1].role"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "messages"),
        ([{"role": "tool", "content": "a"}], "messages[0].role"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
         "messages[0].content[0]"),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}],
         "messages[0].content[0].text"),
        (["hello"], "messages[0]"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "late"},
          {"role": "user", "content": "b"}], "messages[1].role"),
    ],
)
def test_invalid_messages_name_the_field(messages: list, param: str) -> None:
    with pytest.raises(PromptError) as info:
        parse_messages(messages)
    assert info.value.param == param


def char_encode(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_fit_keeps_everything_when_it_fits() -> None:
    conversation = Conversation(None, (Round("a", "b"), Round("c")))
    fitted = fit_to_context(conversation, char_encode, 1000)
    assert fitted.trimmed_rounds == 0
    assert fitted.text == render(conversation)
    assert fitted.token_ids == char_encode(fitted.text)


def test_fit_drops_whole_oldest_rounds() -> None:
    rounds = (Round("q1" * 20, "a1" * 20), Round("q2" * 20, "a2" * 20), Round("q3"))
    conversation = Conversation("sys", rounds)
    last_two = render(Conversation("sys", rounds[1:]))
    fitted = fit_to_context(conversation, char_encode, len(last_two))
    assert fitted.trimmed_rounds == 1
    assert fitted.text == last_two
    assert fitted.text.startswith("<问>：sys\nq2")  # the system text survives trimming
    only_last = fit_to_context(conversation, char_encode, len(last_two) - 1)
    assert only_last.trimmed_rounds == 2
    assert only_last.text == "<问>：sys\nq3\n<答>："


def test_fit_refuses_when_last_message_alone_is_too_long() -> None:
    conversation = Conversation(None, (Round("x" * 100),))
    with pytest.raises(PromptError) as info:
        fit_to_context(conversation, char_encode, 50)
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"


def reference_fit(conversation: Conversation, encode, max_prompt_tokens: int):
    """Today's contract, spelled out: try every suffix, oldest first; the first that fits."""
    for dropped in range(len(conversation.rounds)):
        text = render(Conversation(conversation.system, conversation.rounds[dropped:]))
        if len(encode(text)) <= max_prompt_tokens:
            return text, dropped
    return None


@pytest.fixture(scope="module")
def bpe_encode(tmp_path_factory: pytest.TempPathFactory):
    """The demo checkpoint's byte-level BPE tokenizer: merges cross piece boundaries."""
    from tokenizers import Tokenizer

    from huatuogpt2.demo_checkpoint import build_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(directory)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


def merging_encode(text: str) -> list[int]:
    """Joining rounds saves tokens: a turn boundary is one token, counted apart it is five."""
    return [ord(t[-1]) for t in re.findall(r"\n<问>：|.", text, re.S)]


def splitting_encode(text: str) -> list[int]:
    """Joining rounds costs tokens: a turn boundary costs three more than its pieces."""
    return char_encode(text) + [0] * (3 * text.count("\n<"))


@pytest.mark.parametrize("encoder", ["chars", "bpe", "merging", "splitting"])
def test_fit_equals_trying_every_suffix(encoder: str, bpe_encode) -> None:
    """The fast trimming keeps exactly what trying every suffix would, byte for byte, also
    where counting rounds apart over- or under-estimates the joined prompt."""
    import random

    encode = {"chars": char_encode, "bpe": bpe_encode, "merging": merging_encode,
              "splitting": splitting_encode}[encoder]
    rng = random.Random(7)
    checked = refused = 0
    for _ in range(400):
        rounds = [Round(rng.choice(MESSAGES)[: rng.randint(0, 300)],
                        rng.choice(MESSAGES)[: rng.randint(0, 300)])
                  for _ in range(rng.randint(0, 8))]
        rounds.append(Round(rng.choice(MESSAGES)[: rng.randint(0, 400)]))
        conversation = Conversation(rng.choice([None, "你是医生。", "sys\n" * 30]),
                                    tuple(rounds))
        budget = rng.randint(5, 900)
        expected = reference_fit(conversation, encode, budget)
        if expected is None:
            refused += 1
            with pytest.raises(PromptError) as info:
                fit_to_context(conversation, encode, budget)
            assert info.value.code == "context_length_exceeded"
            continue
        fitted = fit_to_context(conversation, encode, budget)
        assert (fitted.text, fitted.trimmed_rounds) == expected
        assert fitted.token_ids == encode(fitted.text)
        checked += 1
    assert checked > 150 and refused > 20  # both outcomes were exercised


def test_fit_work_is_proportional_to_what_is_kept() -> None:
    """511 long messages, a small budget: the characters tokenised stay near what is kept."""
    encoded: list[int] = []

    def counting_encode(text: str) -> list[int]:
        encoded.append(len(text))
        return char_encode(text)

    rounds = tuple(Round("问" * 5000, "答" * 5000) for _ in range(255)) + (Round("q" * 100),)
    fitted = fit_to_context(Conversation("sys", rounds), counting_encode, 1000)
    assert fitted.trimmed_rounds == 255
    sent = sum(len(r.user) + len(r.assistant or "") for r in rounds)
    assert sum(encoded) < 40_000 < sent // 50  # tens of thousands of 2.5 million characters


def test_a_huge_last_message_is_refused_without_tokenising_all_of_it() -> None:
    encoded: list[int] = []

    def counting_encode(text: str) -> list[int]:
        encoded.append(len(text))
        return char_encode(text)

    conversation = Conversation(None, (Round("x" * 4_000_000),))
    with pytest.raises(PromptError) as info:
        fit_to_context(conversation, counting_encode, 1000)
    assert info.value.code == "context_length_exceeded"
    assert sum(encoded) < 50_000


def test_developer_messages_merge_like_system_and_several_join_with_newlines() -> None:
    conversation = parse_messages([
        {"role": "system", "content": "你是医生。"}, {"role": "developer", "content": "简短回答。"},
        {"role": "user", "content": "头痛"}])
    assert conversation.system == "你是医生。\n简短回答。"
    assert render(conversation) == "<问>：你是医生。\n简短回答。\n头痛\n<答>："


@pytest.mark.parametrize("messages,message", [
    ([], "'messages' must contain at least one message."),
    (["hi"], "'messages[0]' must be an object."),
    ([{"role": "user", "content": 3}],
     "'messages[0].content' must be a string or a list of text parts."),
    ([{"role": "user", "content": [{"type": "image_url"}]}],
     "Only text content parts are supported; 'messages[0].content[0]' is not a text part."),
    ([{"role": "user", "content": [{"type": "text", "text": 1}]}],
     "'messages[0].content[0].text' must be a string."),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
     "Messages must alternate between user and assistant; 'messages[1]' is a second user "
     "message in a row."),
    ([{"role": "assistant", "content": "a"}],
     "Messages must alternate between user and assistant; 'messages[0]' is an assistant "
     "message without a user message before it."),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
      {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
     "System messages must come before the conversation ('messages[1]')."),
    ([{"role": "tool", "content": "a"}],
     "'messages[0].role' must be one of 'system', 'user', 'assistant'; got 'tool'."),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
     "The last message must be a user message."),
])
def test_invalid_messages_say_what_is_wrong(messages: list, message: str) -> None:
    with pytest.raises(PromptError) as info:
        parse_messages(messages)
    assert info.value.message == message == str(info.value)


def test_rejected_system_message_names_the_policy() -> None:
    with pytest.raises(PromptError) as info:
        parse_messages([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                       SystemPolicy.REJECT)
    assert info.value.message == ("HuatuoGPT2 has no system role and this server is configured "
                                  "to reject system messages ('messages[0].role' is 'system').")


def test_a_conversation_that_fits_is_tokenised_once() -> None:
    calls: list[str] = []

    def counting_encode(text: str) -> list[int]:
        calls.append(text)
        return char_encode(text)

    conversation = Conversation("sys", (Round("q" * 10, "a" * 10), Round("last")))
    fitted = fit_to_context(conversation, counting_encode, 1000)
    assert fitted.trimmed_rounds == 0 and calls == [render(conversation)] == [fitted.text]


def test_a_conversation_far_over_the_budget_is_not_tokenised_whole() -> None:
    calls: list[str] = []

    def counting_encode(text: str) -> list[int]:
        calls.append(text)
        return char_encode(text)

    rounds = tuple(Round("q" * 500, "a" * 500) for _ in range(40)) + (Round("last"),)
    conversation = Conversation(None, rounds)
    fitted = fit_to_context(conversation, counting_encode, 100)
    assert fitted.trimmed_rounds == 40
    assert max(len(text) for text in calls) < 100 * 16 + 64 < len(render(conversation))


def test_fit_counts_each_kept_round_once_and_tokenises_the_prompt_once() -> None:
    """With exact piece counts the search needs no retries: after the whole conversation is
    found too long, the system text, the kept rounds and the first round that does not fit are
    counted once each, then one whole tokenisation."""
    calls: list[str] = []

    def counting_encode(text: str) -> list[int]:
        calls.append(text)
        return char_encode(text)

    rounds = tuple(Round(f"q{i}" * 10, f"a{i}" * 10) for i in range(6)) + (Round("last"),)
    conversation = Conversation("sys", rounds)
    budget = len(render(Conversation("sys", rounds[4:])))
    fitted = fit_to_context(conversation, counting_encode, budget)
    assert fitted.trimmed_rounds == 4 and len(fitted.token_ids) == budget
    assert calls[0] == render(conversation)
    # the whole, the system, rounds 6, 5, 4 (kept) and 3 (not), the prompt
    assert len(calls) == 1 + 1 + 4 + 1
    assert calls[-1] == fitted.text


def test_too_long_names_the_count_and_the_budget() -> None:
    with pytest.raises(PromptError) as info:
        fit_to_context(Conversation(None, (Round("x" * 60),)), char_encode, 50)
    assert info.value.message == (
        "The last user message alone needs 69 tokens or more, more than the 50 the model's "
        "context leaves after max_tokens. Shorten the message or lower max_tokens.")
