"""POST /tokenize, POST /detokenize, GET /tokenizer_info: vLLM's tokenizer endpoints.

Evaluation clients (lm-evaluation-harness's `tokenizer_backend=remote`) tokenise through these,
so they must give exactly the ids the completion endpoints send to the engine:

- `/tokenize` with `prompt`: the text as `/v1/completions` tokenises it. `add_special_tokens`
  defaults to false (vLLM's default is true): HuatuoGPT2 prompts carry no BOS, and our
  completions endpoint never adds one.
- `/tokenize` with `messages`: the HuatuoGPT2 prompt `/v1/chat/completions` would build for them
  (system merged, oldest rounds dropped to leave room for `max_tokens`): the same code path.
- `/detokenize`: ids -> text, special tokens kept.
- `/tokenizer_info`: the tokenizer's configuration (as vLLM returns it), with the values this
  server actually applies: `add_bos_token` false and the HuatuoGPT2 `chat_template`.

Behind the API keys like every route but /health; tokenisation of large inputs runs in a thread.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from huatuogpt2.prompt_format import CHAT_TEMPLATE
from server.engine import ModelInfo
from server.errors import bad_request
from server.served_models import ServedModels
from server.serving_chat import build_chat_prompt
from server.serving_common import messages_size, run_sized
from server.settings import ServeSettings


class TokenizeRequest(BaseModel):
    """vLLM's two forms in one: `prompt` (completion) or `messages` (chat)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool = False
    add_generation_prompt: bool = True
    return_token_strs: bool = False
    # Chat form: the answer budget the chat request would reserve (changes trimming only).
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("exactly one of 'prompt' and 'messages' is required")
        return self


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: list[int]


def _token_str(value: Any) -> str | None:
    """A special token as a string (tokenizers may hold AddedToken objects)."""
    return value if value is None or isinstance(value, str) else getattr(value, "content",
                                                                           str(value))


class TokenizeService:
    def __init__(self, engine, model: ModelInfo, settings: ServeSettings,
                 served: ServedModels | None = None) -> None:
        self.engine = engine
        self.model = model
        self.settings = settings
        self.served = served or ServedModels(model.name)

    @property
    def tokenizer(self):
        return self.engine.get_tokenizer()

    def _check_model(self, requested: str | None) -> None:
        if requested is not None:
            self.served.resolve(requested)  # adapters share the base's tokenizer

    async def tokenize(self, request: TokenizeRequest) -> dict:
        self._check_model(request.model)
        if request.messages is not None:
            if not request.add_generation_prompt:
                raise bad_request(
                    "HuatuoGPT2 prompts always end with the answer tag '<答>：'; "
                    "'add_generation_prompt' false is not supported.",
                    param="add_generation_prompt")
            requested = request.max_completion_tokens or request.max_tokens
            fitted = await run_sized(messages_size(request.messages), build_chat_prompt,
                                     request.messages, requested, self.model, self.settings)
            tokens = fitted.token_ids
            if request.add_special_tokens:
                tokens = await run_sized(len(fitted.text), self._encode, fitted.text, True)
        else:
            tokens = await run_sized(len(request.prompt), self._encode, request.prompt,
                                     request.add_special_tokens)
        token_strs = (self.tokenizer.convert_ids_to_tokens(tokens)
                      if request.return_token_strs else None)
        return {"count": len(tokens), "max_model_len": self.model.max_model_len,
                "tokens": tokens, "token_strs": token_strs}

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        if not add_special_tokens:
            return self.model.encode(text)  # exactly what /v1/completions sends
        return self.tokenizer.encode(text, add_special_tokens=True)

    async def detokenize(self, request: DetokenizeRequest) -> dict:
        self._check_model(request.model)
        tokenizer = self.tokenizer
        vocab = len(tokenizer)
        for i, token in enumerate(request.tokens):
            if token < 0 or token >= vocab:
                raise bad_request(
                    f"'tokens[{i}]' is {token}: not a token id of this model's tokenizer "
                    f"(0 to {vocab - 1}).", param="tokens")
        text = await run_sized(len(request.tokens), tokenizer.decode, request.tokens)
        return {"prompt": text}

    def tokenizer_info(self) -> dict:
        tokenizer = self.tokenizer
        info = {key: _json_value(value)
                for key, value in (getattr(tokenizer, "init_kwargs", None) or {}).items()
                if key not in ("vocab_file", "merges_file", "tokenizer_file", "name_or_path")}
        info.update({
            "tokenizer_class": _tokenizer_class(tokenizer),
            "bos_token": _token_str(getattr(tokenizer, "bos_token", None)),
            "eos_token": _token_str(getattr(tokenizer, "eos_token", None)),
            "pad_token": _token_str(getattr(tokenizer, "pad_token", None)),
            "unk_token": _token_str(getattr(tokenizer, "unk_token", None)),
            "model_max_length": self.model.max_model_len,
            # What this server does, whatever the tokenizer's config says.
            "add_bos_token": False,
            "add_eos_token": False,
            "chat_template": CHAT_TEMPLATE,
            "vocab_size": len(tokenizer),
        })
        return info


def _tokenizer_class(tokenizer) -> str:
    """The transformers class under vLLM's caching wrappers (e.g. PreTrainedTokenizerFast)."""
    for cls in type(tokenizer).__mro__:
        if cls.__module__.startswith("transformers."):
            return cls.__name__
    return type(tokenizer).__name__


def _json_value(value: Any) -> Any:
    if hasattr(value, "content"):
        return value.content
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
