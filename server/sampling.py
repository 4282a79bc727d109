"""From an OpenAI request to vLLM SamplingParams, with the model's defaults filled in."""

from __future__ import annotations

import json

from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

from server.errors import bad_request
from server.protocol import ChatCompletionRequest, CompletionRequest

# Request fields that take the model's generation_config.json value when left out.
_DEFAULTED = ("temperature", "top_p", "top_k", "repetition_penalty")
# vLLM's own sampling extensions, passed through as the request gives them.
_PASSED_THROUGH = ("ignore_eos", "min_tokens", "stop_token_ids", "include_stop_str_in_output",
                   "skip_special_tokens", "spaces_between_special_tokens", "allowed_token_ids",
                   "bad_words")


def structured_outputs(request: ChatCompletionRequest) -> StructuredOutputsParams | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return StructuredOutputsParams(json_object=True)
    assert fmt.json_schema is not None and fmt.json_schema.schema_ is not None
    return StructuredOutputsParams(json=json.dumps(fmt.json_schema.schema_))


def build_sampling_params(
    request: ChatCompletionRequest | CompletionRequest,
    *,
    defaults: dict,
    max_tokens: int,
    stream: bool,
    logprobs: int | None,
    prompt_logprobs: int | None = None,
) -> SamplingParams:
    values = {name: getattr(request, name) for name in _DEFAULTED}
    for name in _DEFAULTED:
        if values[name] is None and name in defaults:
            values[name] = defaults[name]
    kwargs = {k: v for k, v in values.items() if v is not None}
    if request.n > 1 and kwargs.get("temperature") == 0:
        raise bad_request("'n' must be 1 with greedy sampling (temperature 0): every choice "
                          "would be the same.", param="n")
    if request.min_p is not None:
        kwargs["min_p"] = request.min_p
    if request.logit_bias:
        kwargs["logit_bias"] = {int(token): bias for token, bias in request.logit_bias.items()}
    kwargs.update({name: getattr(request, name) for name in _PASSED_THROUGH})
    # vLLM validates the values (VLLMValidationError, mapped to a 400 naming the field).
    return SamplingParams(
        n=request.n,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        seed=request.seed,
        stop=request.stop_list,
        max_tokens=max_tokens,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        structured_outputs=(
            structured_outputs(request) if isinstance(request, ChatCompletionRequest)
            else None
        ),
        # Streams get deltas as they come; non-streamed requests only the final output.
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        **kwargs,
    )
