"""The HuatuoGPT2 prompt format: the single source of truth.

Used by the gateway, the training adapter, the checkpoint converter (through the Jinja chat
template below) and the tests. Byte-exact with upstream HuatuoGPT-II:

    <问>：{user 1}\n<答>：{assistant 1}\n<问>：{user 2}\n<答>：

The colon is FULL-WIDTH (U+FF1A); `<问>`/`<答>` are plain text; no BOS; finished turns carry no
EOS in the prompt. There is no system role upstream: a system message is either merged in front
of the first user message (policy "merge") or refused (policy "reject").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

USER_TAG = "<问>："
ASSISTANT_TAG = "<答>："
TURN_SEPARATOR = "\n"
# Between a merged system text and the first user message.
SYSTEM_SEPARATOR = "\n"


class SystemPolicy(StrEnum):
    MERGE = "merge"
    REJECT = "reject"


class PromptError(ValueError):
    """A conversation that cannot be rendered; `param` names the offending request field."""

    def __init__(self, message: str, param: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Round:
    """One exchange: a user message and, for all but the last round, the assistant's answer."""

    user: str
    assistant: str | None = None


@dataclass(frozen=True)
class Conversation:
    system: str | None
    rounds: tuple[Round, ...]


def format_round(round_: Round) -> str:
    if round_.assistant is None:
        return f"{USER_TAG}{round_.user}{TURN_SEPARATOR}{ASSISTANT_TAG}"
    return f"{USER_TAG}{round_.user}{TURN_SEPARATOR}{ASSISTANT_TAG}{round_.assistant}"


def render(conversation: Conversation) -> str:
    """The prompt string for a conversation whose last round awaits an answer."""
    rounds = list(conversation.rounds)
    if conversation.system:
        first = rounds[0]
        rounds[0] = Round(conversation.system + SYSTEM_SEPARATOR + first.user, first.assistant)
    return TURN_SEPARATOR.join(format_round(r) for r in rounds)


def content_text(content: object, param: str) -> str:
    """OpenAI message content: a string or a list of text parts (joined with newlines)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise PromptError(
                    f"Only text content parts are supported; '{param}[{i}]' is not a text part.",
                    f"{param}[{i}]",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise PromptError(f"'{param}[{i}].text' must be a string.", f"{param}[{i}].text")
            texts.append(text)
        return "\n".join(texts)
    raise PromptError(f"'{param}' must be a string or a list of text parts.", param)


def parse_messages(
    messages: Sequence[dict], system_policy: SystemPolicy = SystemPolicy.MERGE
) -> Conversation:
    """Validate OpenAI-style messages and group them into rounds.

    Messages must be: optional system messages first, then user/assistant alternating, ending
    with a user message.
    """
    if not messages:
        raise PromptError("'messages' must contain at least one message.", "messages")
    system = ""
    rounds: list[Round] = []
    pending_user: str | None = None
    seen_dialogue = False
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise PromptError(f"'{param}' must be an object.", param)
        role = message.get("role")
        text = content_text(message.get("content"), f"{param}.content")
        if role in ("system", "developer"):
            if system_policy is SystemPolicy.REJECT:
                raise PromptError(
                    "HuatuoGPT2 has no system role and this server is configured to reject "
                    f"system messages ('{param}.role' is '{role}').",
                    f"{param}.role",
                )
            if seen_dialogue:
                raise PromptError(
                    f"System messages must come before the conversation ('{param}').",
                    f"{param}.role",
                )
            # Joined exactly as CHAT_TEMPLATE joins them (empty parts add nothing).
            system = system + ("\n" if system else "") + text
        elif role == "user":
            if pending_user is not None:
                raise PromptError(
                    f"Messages must alternate between user and assistant; '{param}' is a "
                    "second user message in a row.",
                    f"{param}.role",
                )
            pending_user = text
            seen_dialogue = True
        elif role == "assistant":
            if pending_user is None:
                raise PromptError(
                    f"Messages must alternate between user and assistant; '{param}' is an "
                    "assistant message without a user message before it.",
                    f"{param}.role",
                )
            rounds.append(Round(pending_user, text))
            pending_user = None
        else:
            raise PromptError(
                f"'{param}.role' must be one of 'system', 'user', 'assistant'; got {role!r}.",
                f"{param}.role",
            )
    if pending_user is None:
        raise PromptError("The last message must be a user message.", "messages")
    rounds.append(Round(pending_user))
    return Conversation(system=system or None, rounds=tuple(rounds))


@dataclass(frozen=True)
class FittedPrompt:
    text: str
    token_ids: list[int]
    trimmed_rounds: int


# Tokens by which tokenising pieces apart may differ from tokenising them joined (merges across
# a piece boundary), per boundary. Piece counts only steer the search; the kept prompt
# is always tokenised whole.
_BOUNDARY_SLACK = 8
# When a text is much longer than the budget, a prefix of this many characters per budget
# token is tokenised first: if the prefix alone is over the budget, so is the text.
_PROBE_CHARS_PER_TOKEN = 16


def fit_to_context(
    conversation: Conversation, encode: Callable[[str], list[int]], max_prompt_tokens: int
) -> FittedPrompt:
    """Drop whole oldest rounds (as upstream does) until the prompt fits `max_prompt_tokens`.

    The result is the prompt with the fewest rounds dropped that fits, tokenised whole, as if
    every suffix of the conversation had been tried oldest first; but the work is proportional
    to what is kept, not to what was sent: rounds are counted newest first, each at most once,
    until the budget is spent, and a round far longer than the budget is only counted up to a
    prefix that already exceeds it. The system text, when merged, stays in front of the first
    round that is kept. Raises PromptError(code="context_length_exceeded") when even the last
    user message does not fit.
    """
    rounds, budget = conversation.rounds, max_prompt_tokens
    # The common case, a conversation that fits whole, costs one tokenisation. Only a text
    # short enough to possibly fit is tried whole, so a huge one still costs what is kept.
    whole = render(conversation)
    if len(whole) <= max(budget, 0) * _PROBE_CHARS_PER_TOKEN + 64:
        token_ids = encode(whole)
        if len(token_ids) <= budget:
            return FittedPrompt(whole, token_ids, 0)
    last = len(rounds) - 1
    # Estimated tokens of the prompt that keeps rounds[i:], for the rounds counted, newest
    # first; counting stops at the first round that clearly does not fit.
    estimate: dict[int, int] = {}
    total = _count(encode, conversation.system + SYSTEM_SEPARATOR, budget) \
        if conversation.system else 0
    for index in range(last, -1, -1):
        piece = format_round(rounds[index]) + (TURN_SEPARATOR if index < last else "")
        total += _count(encode, piece, budget - total)
        estimate[index] = total
        if total > budget + _slack(last - index):
            break
    if estimate[last] > budget + _slack(0):
        raise _too_long(estimate[last], budget)
    dropped = min((i for i, tokens in estimate.items() if tokens <= budget), default=last)
    # Exact: tokenise the kept prompt whole; step one round at a time where the estimate was off.
    fitted = _fitted(conversation, encode, dropped)
    while len(fitted.token_ids) > budget:
        if dropped == last:
            raise _too_long(len(fitted.token_ids), budget)
        dropped += 1
        fitted = _fitted(conversation, encode, dropped)
    while dropped - 1 in estimate and estimate[dropped - 1] <= budget + _slack(last - dropped + 1):
        longer = _fitted(conversation, encode, dropped - 1)
        if len(longer.token_ids) > budget:
            break
        fitted, dropped = longer, dropped - 1
    return fitted


def _too_long(tokens: int, budget: int) -> PromptError:
    return PromptError(
        f"The last user message alone needs {tokens} tokens or more, more than the {budget} "
        "the model's context leaves after max_tokens. Shorten the message or lower max_tokens.",
        "messages",
        code="context_length_exceeded",
    )


def _slack(boundaries: int) -> int:
    return _BOUNDARY_SLACK * (boundaries + 1)


def _fitted(conversation: Conversation, encode: Callable[[str], list[int]],
            dropped: int) -> FittedPrompt:
    text = render(Conversation(conversation.system, conversation.rounds[dropped:]))
    return FittedPrompt(text, encode(text), dropped)


def _count(encode: Callable[[str], list[int]], text: str, limit: int) -> int:
    """The token count of `text`; for a text far over `limit`, any count over it."""
    probe = max(limit, 0) * _PROBE_CHARS_PER_TOKEN + 64
    if len(text) > probe:
        head = len(encode(text[:probe]))
        if head > limit + _BOUNDARY_SLACK:
            return head
    return len(encode(text))


def generate_prompt(query: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """Upstream's (query, history) interface, for scripts ported from HuatuoGPT-II."""
    rounds = tuple(Round(q, a) for q, a in history) + (Round(query),)
    return render(Conversation(None, rounds))


# The same format as a Jinja chat template, written into converted and trained checkpoints so
# that any OpenAI-compatible server (vLLM's own included) renders byte-identical prompts.
# System messages are merged in front of the first user message, as the "merge" policy does.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='', out='', first=true) -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set text = message['content'] | map(attribute='text') | join('\\n') -%}"
    "{%- endif -%}"
    "{%- if message['role'] in ['system', 'developer'] -%}"
    "{%- set ns.system = ns.system + ('\\n' if ns.system else '') + text -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{%- if ns.system and ns.first -%}{%- set text = ns.system + '\\n' + text -%}{%- endif -%}"
    "{%- set ns.out = ns.out + ('' if ns.first else '\\n') + '<问>：' + text + '\\n<答>：' -%}"
    "{%- set ns.first = false -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- set ns.out = ns.out + text -%}"
    "{%- else -%}{{- raise_exception('Unsupported role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- ns.out -}}"
)
