"""POST /v1/completions: a raw prompt (text or token ids), for evaluation scripts.

No chat format and no trimming: the prompt is sent as given (tokenised without BOS, as
HuatuoGPT2 was trained). A list of prompts runs as one batch, one engine request per prompt
(`{id}-{i}`); choice `index` is `prompt_index * n + i`, as OpenAI numbers them.

Scoring (as vLLM's server does it): with `echo` and `logprobs`, the prompt's tokens come back
with their log-probabilities in front of the generated ones (the first prompt token's are null),
in the first chunk of each choice when streaming. `max_tokens: 0` (only with `echo`) scores the
prompt without generating: the engine samples one token that is not returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from vllm.lora.request import LoRARequest
from vllm.sampling_params import SamplingParams
from vllm.utils.async_utils import merge_async_iterators

from server.errors import bad_request
from server.generation import guarded_outputs
from server.logprobs import LegacyLogprobs
from server.protocol import CompletionRequest
from server.sampling import build_sampling_params
from server.serving_common import (
    FINISH_REASONS,
    EngineService,
    RequestContext,
    ServingResult,
    check_fields,
    check_max_tokens,
    prompt_size,
    run_sized,
    usage,
)
from server.sse import start_when_answered

MAX_BATCH = 64


def completion_logprobs(completion, top: int, offset: int) -> dict:
    """The generated tokens' logprobs, their text offsets starting at `offset`."""
    return LegacyLogprobs(offset).extend(completion.token_ids, completion.logprobs,
                                         top).as_dict()


@dataclass(frozen=True)
class PreparedCompletion:
    """What a completion request becomes before the engine sees it: per prompt its text (None
    for token ids) and the token ids the engine gets; the echoed texts; the sampling
    parameters. The render endpoint answers with this."""

    prompts: list[tuple[str | None, list[int]]]
    texts: list[str | None]
    params: SamplingParams
    lora: LoRARequest | None  # the adapter `model` names; None for the base model


class CompletionService(EngineService):
    def _prompts(self, request: CompletionRequest) -> list[tuple[str | None, list[int]]]:
        prompt = request.prompt
        if isinstance(prompt, str):
            items: list = [prompt]
        elif prompt and all(isinstance(p, int) for p in prompt):
            items = [prompt]
        else:
            items = list(prompt)
        if not items or len(items) > MAX_BATCH:
            raise bad_request(f"'prompt' must hold 1 to {MAX_BATCH} prompts.", param="prompt")
        result = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                ids = self.model.encode(item)
                result.append((item, ids))
            else:
                if any(t < 0 for t in item):
                    raise bad_request(f"'prompt[{i}]' holds a negative token id.", "prompt")
                result.append((None, list(item)))
            if not result[-1][1]:
                raise bad_request("'prompt' must not be empty.", param="prompt")
        return result

    def _decode_token(self, token_id: int) -> str:
        return self.engine.get_tokenizer().decode([token_id])

    def _echo_texts(self, request: CompletionRequest,
                    prompts: list[tuple[str | None, list[int]]]) -> list[str | None]:
        """The prompt text each choice echoes: as sent, or decoded from token ids."""
        if not request.echo:
            return [text for text, _ in prompts]
        tokenizer = self.engine.get_tokenizer()
        vocab = len(tokenizer)
        texts = []
        for i, (text, ids) in enumerate(prompts):
            if text is None:
                if any(t >= vocab for t in ids):
                    raise bad_request(f"'prompt[{i}]' holds a token id outside the vocabulary "
                                      f"(0 to {vocab - 1}).", param="prompt")
                text = tokenizer.decode(ids)
            texts.append(text)
        return texts

    async def prepare(self, request: CompletionRequest) -> PreparedCompletion:
        lora = self.served.resolve(request.model)
        check_fields(request)
        check_max_tokens(request.max_tokens, "max_tokens", self.model, self.settings)
        if request.max_tokens == 0 and not request.echo:
            raise bad_request("'max_tokens' 0 is only allowed with 'echo' (to score a prompt "
                              "without generating).", param="max_tokens")
        prompts, texts = await run_sized(prompt_size(request.prompt), self._prompts_and_texts,
                                         request)
        max_tokens = 16 if request.max_tokens is None else request.max_tokens
        # Scoring only: the engine must sample a token; it is not returned.
        engine_max_tokens = max(max_tokens, 1)
        longest = max(len(ids) for _, ids in prompts)
        if longest + engine_max_tokens > self.model.max_model_len:
            raise bad_request(
                f"The prompt has {longest} tokens and max_tokens is {max_tokens}: together more "
                f"than the model's context length ({self.model.max_model_len}).",
                param="prompt", code="context_length_exceeded",
            )
        top = request.logprobs
        params = build_sampling_params(
            request, defaults=self.model.generation_defaults, max_tokens=engine_max_tokens,
            stream=request.stream, logprobs=top,
            prompt_logprobs=top if request.echo else None,
        )
        return PreparedCompletion(prompts, texts, params, lora)

    async def create(self, request: CompletionRequest, ctx: RequestContext) -> ServingResult:
        prepared = await self.prepare(request)
        ctx.model = request.model
        prompts, texts, params = prepared.prompts, prepared.texts, prepared.params
        prompt_tokens = sum(len(ids) for _, ids in prompts) * request.n
        ctx.record.prompt_tokens = prompt_tokens
        if self.settings.log_content:
            ctx.record.prompt_text = "\n".join(text or str(ids) for text, ids in prompts)
        # One engine request per prompt; the life cycle aborts them all with the request.
        engine_ids = ([ctx.engine_request_id] if len(prompts) == 1 else
                      [f"{ctx.engine_request_id}-{i}" for i in range(len(prompts))])
        if len(prompts) > 1:
            self.lifecycle.track(ctx.engine_request_id, engine_ids)
        streams = [
            guarded_outputs(
                self.engine, self.lifecycle, ids, params, engine_id,
                queue_timeout=self.settings.queue_timeout,
                idle_timeout=self.settings.stream_idle_timeout, lora_request=prepared.lora,
            )
            for (_, ids), engine_id in zip(prompts, engine_ids, strict=True)
        ]
        merged = merge_async_iterators(*streams)
        if request.stream:
            stream = self._stream(request, merged, ctx, texts, prompt_tokens)
            return ServingResult(
                stream=await start_when_answered(stream, self.settings.sse_ping_interval))
        return ServingResult(body=await self._complete(request, merged, ctx, texts,
                                                       prompt_tokens))

    def _prompts_and_texts(self, request: CompletionRequest
                           ) -> tuple[list[tuple[str | None, list[int]]], list[str | None]]:
        prompts = self._prompts(request)
        return prompts, self._echo_texts(request, prompts)

    def _choice_text(self, request: CompletionRequest, prompt_text: str | None, text: str) -> str:
        return (prompt_text or "") + text if request.echo else text

    def _logprobs(self, request: CompletionRequest, completion, prompt_ids: list[int] | None,
                  prompt_positions, prompt_text: str | None, offset: int) -> dict:
        """The choice's logprobs: with echo, the prompt's tokens first (`prompt_ids` given)."""
        top = request.logprobs
        assert top is not None
        if prompt_ids is None:
            return completion_logprobs(completion, top, offset)
        result = LegacyLogprobs(offset).extend(prompt_ids, prompt_positions, top,
                                               self._decode_token)
        if request.max_tokens != 0:
            # The generated text starts right after the echoed prompt text.
            result.extend(completion.token_ids, completion.logprobs, top,
                          start=offset + len(prompt_text or ""))
        return result.as_dict()

    async def _complete(self, request: CompletionRequest, merged: AsyncIterator,
                        ctx: RequestContext, texts: list[str | None], prompt_tokens: int
                        ) -> dict:
        finals: dict[int, object] = {}
        async for prompt_index, output in merged:
            finals[prompt_index] = output
        scoring_only = request.max_tokens == 0
        choices = []
        completion_tokens = 0
        for prompt_index in sorted(finals):
            final = finals[prompt_index]
            for completion in final.outputs:
                generated = "" if scoring_only else completion.text
                if not scoring_only:
                    completion_tokens += len(completion.token_ids)
                    ctx.record.tokens_finished(len(completion.token_ids), final.metrics)
                finish = FINISH_REASONS.get(completion.finish_reason or "", "stop")
                ctx.record.finish_reasons.append(finish)
                logprobs = None
                if request.logprobs is not None:
                    if request.echo:
                        logprobs = self._logprobs(request, completion, final.prompt_token_ids,
                                                  final.prompt_logprobs, texts[prompt_index], 0)
                    else:
                        logprobs = completion_logprobs(completion, request.logprobs, 0)
                choices.append({
                    "index": prompt_index * request.n + completion.index,
                    "text": self._choice_text(request, texts[prompt_index], generated),
                    "logprobs": logprobs,
                    "finish_reason": finish,
                })
        if self.settings.log_content:
            ctx.record.completion_text = "\n".join(c["text"] for c in choices)
        return {"id": ctx.engine_request_id, "object": "text_completion",
                "created": ctx.created, "model": ctx.model, "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens)}

    async def _stream(self, request: CompletionRequest, merged: AsyncIterator,
                      ctx: RequestContext, texts: list[str | None], prompt_tokens: int
                      ) -> AsyncIterator[dict]:
        base = {"id": ctx.engine_request_id, "object": "text_completion",
                "created": ctx.created, "model": ctx.model}
        scoring_only = request.max_tokens == 0
        completion_tokens = 0
        echoed: set[int] = set()
        # Per prompt: its token ids and logprobs, from the first output (vLLM sends them once).
        prompt_info: dict[int, tuple] = {}
        # Per choice: where its next token starts in its text.
        offsets: dict[int, int] = {}
        async for prompt_index, output in merged:
            if request.echo and prompt_index not in prompt_info:
                prompt_info[prompt_index] = (output.prompt_token_ids, output.prompt_logprobs)
            for completion in output.outputs:
                index = prompt_index * request.n + completion.index
                echo_now = request.echo and index not in echoed
                if scoring_only:
                    text, token_ids = "", ()
                else:
                    text, token_ids = completion.text, completion.token_ids
                    completion_tokens += len(token_ids)
                    ctx.record.tokens_streamed(index, len(token_ids))
                if echo_now:
                    echoed.add(index)
                    text = (texts[prompt_index] or "") + text
                finish = None
                if completion.finish_reason is not None:
                    finish = FINISH_REASONS.get(completion.finish_reason, "stop")
                    ctx.record.finish_reasons.append(finish)
                if scoring_only and not echo_now and finish is None:
                    continue
                # Tokens that end inside a UTF-8 character carry no text yet: sent only for
                # their logprobs.
                if not text and finish is None and (request.logprobs is None or not token_ids):
                    continue
                logprobs = None
                if request.logprobs is not None:
                    offset = offsets.get(index, 0)
                    if echo_now:
                        prompt_ids, positions = prompt_info.get(prompt_index, (None, None))
                        logprobs = self._logprobs(request, completion, prompt_ids or [],
                                                  positions, texts[prompt_index], offset)
                    elif scoring_only:
                        logprobs = LegacyLogprobs().as_dict()
                    else:
                        logprobs = completion_logprobs(completion, request.logprobs, offset)
                    if logprobs["tokens"]:
                        offsets[index] = logprobs["text_offset"][-1] + len(logprobs["tokens"][-1])
                yield {**base, "choices": [{
                    "index": index, "text": text, "logprobs": logprobs,
                    "finish_reason": finish}]}
        if request.stream_options and request.stream_options.include_usage:
            yield {**base, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
