"""Request schemas of the OpenAI API subset we serve, in the order of the OpenAI reference.

Messages stay plain dicts here: `server.prompt_format.parse_messages` validates them and names
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


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions. None means: the model's default."""

    # Clients (the openai SDK among them) send fields we do not use; they are ignored.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

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

    @model_validator(mode="after")
    def _stop_bounded(self) -> SamplingFields:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4 and not isinstance(self.stop, str):
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return self

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
