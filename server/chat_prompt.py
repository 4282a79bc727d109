"""The engine prompt of a chat request: one code path for /v1/chat/completions and /tokenize.

Messages -> HuatuoGPT2 conversation (system merged or refused) -> rendered and tokenised, oldest
rounds dropped until the prompt leaves room for the answer. Errors are 400s naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.engine import ModelInfo
from server.errors import bad_request
from server.prompt_format import FittedPrompt, PromptError, fit_to_context, parse_messages
from server.settings import ServeSettings


def chat_prompt(messages: Sequence[dict], requested_max_tokens: int | None, model: ModelInfo,
                settings: ServeSettings) -> FittedPrompt:
    """The prompt text and token ids the chat endpoint sends to the engine."""
    if len(messages) > settings.max_messages:
        raise bad_request(
            f"'messages' has {len(messages)} messages; this server accepts at most "
            f"{settings.max_messages} (--max-messages).", param="messages",
        )
    try:
        conversation = parse_messages(messages, settings.system_policy)
        reserve = requested_max_tokens or model.default_max_new_tokens
        return fit_to_context(conversation, model.encode, model.max_model_len - reserve)
    except PromptError as exc:
        raise bad_request(exc.message, param=exc.param, code=exc.code) from exc
