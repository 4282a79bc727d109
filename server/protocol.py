"""Request schemas of the OpenAI API subset we serve, in the order of the OpenAI reference.

Messages stay plain dicts here: `huatuogpt2.prompt_format.parse_messages` validates them and names
the offending field (`messages[2].role`) in its errors. Responses are built as plain dicts in the
serving modules (the hot path), shaped exactly like OpenAI's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or
                                           self.json_schema.schema_ is None):
            raise ValueError("json_schema.schema is required when type is 'json_schema'")
        return self


# Fields clients and routers send that change nothing here: accepted, documented, unused.
NO_EFFECT_FIELDS = frozenset({
    "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier", "request_id",
    # vllm-router's bookkeeping and reasoning-model switches (HuatuoGPT2 does not reason).
    "separate_reasoning", "stream_reasoning", "return_hidden_states", "rid", "lora_path",
    "bootstrap_host", "bootstrap_port", "bootstrap_room", "session_params", "include_reasoning",
})
# Fields that would change the answer and that this server does not do, with the value that
# means "not used" (what routers send by default). Any other value is a 400 naming the field.
UNSUPPORTED_FIELDS: dict[str, tuple] = {
    "tools": (None, []), "tool_choice": (None, "none", "auto"), "functions": (None, []),
    "function_call": (None, "none", "auto"), "parallel_tool_calls": (None, True, False),
    "audio": (None,), "modalities": (None, ["text"]), "prediction": (None,),
    "reasoning_effort": (None,), "web_search_options": (None,), "suffix": (None, ""),
    "best_of": (None, 1), "use_beam_search": (None, False), "length_penalty": (None, 1.0),
    "continue_final_message": (None, False), "add_generation_prompt": (None, True),
    "chat_template": (None,), "chat_template_kwargs": (None, {}), "documents": (None,),
    "guided_json": (None,), "guided_regex": (None,), "guided_choice": (None,),
    "guided_grammar": (None,), "structured_outputs": (None,), "truncate_prompt_tokens": (None,),
    "return_tokens_as_token_ids": (None, False), "priority": (None, 0),
    "echo": (None, False), "prompt_logprobs": (None,),
    # vllm-router sends false (stop strings trimmed from the answer, as here).
    "no_stop_trim": (None, False),
}


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions. None means: the model's default.

    Fields this schema does not know are kept (`model_extra`) and checked by
    `unsupported_field`: a field that changes nothing is accepted, one that would change the
    answer is refused with a 400 naming it, never silently dropped.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str
    frequency_penalty: Penalty | None = None
    n: Annotated[int, Field(ge=1, le=16)] = 1
    presence_penalty: Penalty | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    user: str | None = None
    # Extensions (vLLM-compatible names), sent through the SDK's `extra_body`.
    top_k: Annotated[int, Field(ge=-1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=2.0)] | None = None
    min_p: Probability | None = None
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0)] = 0
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    allowed_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    bad_words: list[str] | None = None
    # OpenAI's: token id (as a string) -> bias added to its logit.
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None

    @model_validator(mode="after")
    def _stop_bounded(self) -> SamplingFields:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4 and not isinstance(self.stop, str):
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return self

    @model_validator(mode="after")
    def _logit_bias_keys_are_token_ids(self) -> SamplingFields:
        for key in self.logit_bias or {}:
            if not key.isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return self

    def unsupported_field(self) -> str | None:
        """The first field sent that would change the answer and that is not supported."""
        for name, value in (self.model_extra or {}).items():
            if name in NO_EFFECT_FIELDS:
                continue
            if value not in UNSUPPORTED_FIELDS.get(name, (None,)):
                return name
        return None

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(SamplingFields):
    messages: list[dict[str, Any]]
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormat | None = None
    # vLLM's extension: answer with `prompt_token_ids` (exactly what the engine got) and each
    # choice's `token_ids`.
    return_token_ids: bool = False

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    # 0 only with echo: score the prompt without generating (checked in serving_completions).
    max_tokens: Annotated[int, Field(ge=0)] | None = 16

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens
