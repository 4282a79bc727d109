"""POST /v1/completions: a raw prompt (text or token ids), for evaluation scripts.

No chat format and no trimming: the prompt is sent as given (tokenised without BOS, as
HuatuoGPT2 was trained). A list of prompts runs as one batch; choice `index` is
`prompt_index * n + i`, as OpenAI numbers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from vllm.utils.async_utils import merge_async_iterators

from server.errors import bad_request
from server.generation import guarded_outputs
from server.protocol import CompletionRequest
from server.sampling import build_sampling_params
from server.serving_common import (
    FINISH_REASONS,
    EngineService,
    RequestContext,
    ServingResult,
    check_fields,
    check_max_tokens,
    check_model,
    usage,
)
from server.sse import start_when_answered

MAX_BATCH = 64


def completion_logprobs(completion, top: int, offset: int) -> dict:
    tokens, token_logprobs, top_logprobs, text_offset = [], [], [], []
    for token_id, candidates in zip(completion.token_ids, completion.logprobs or [],
                                    strict=False):
        chosen = candidates[token_id]
        token = chosen.decoded_token or ""
        tokens.append(token)
        token_logprobs.append(chosen.logprob)
        top_logprobs.append({(c.decoded_token or ""): c.logprob for c in candidates.values()
                             if c.rank is not None and c.rank <= top})
        text_offset.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs, "text_offset": text_offset}


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

    async def create(self, request: CompletionRequest, ctx: RequestContext) -> ServingResult:
        check_model(request.model, self.model)
        check_fields(request)
        check_max_tokens(request.max_tokens, "max_tokens", self.model, self.settings)
        prompts = await asyncio.to_thread(self._prompts, request)  # tokenising: off the loop
        max_tokens = request.max_tokens or 16
        longest = max(len(ids) for _, ids in prompts)
        if longest + max_tokens > self.model.max_model_len:
            raise bad_request(
                f"The prompt has {longest} tokens and max_tokens is {max_tokens}: together more "
                f"than the model's context length ({self.model.max_model_len}).",
                param="prompt", code="context_length_exceeded",
            )
        top = request.logprobs
        params = build_sampling_params(
            request, defaults=self.model.generation_defaults, max_tokens=max_tokens,
            stream=request.stream, logprobs=top,
        )
        prompt_tokens = sum(len(ids) for _, ids in prompts) * request.n
        ctx.record.prompt_tokens = prompt_tokens
        if self.settings.log_content:
            ctx.record.prompt_text = "\n".join(text or str(ids) for text, ids in prompts)
        streams = [
            guarded_outputs(
                self.engine, self.lifecycle, ids, params,
                # One id for the whole batch: vLLM aborts all requests sharing it at once.
                ctx.engine_request_id,
                queue_timeout=self.settings.queue_timeout,
                idle_timeout=self.settings.stream_idle_timeout,
            )
            for _, ids in prompts
        ]
        merged = merge_async_iterators(*streams)
        texts = [text for text, _ in prompts]
        if request.stream:
            stream = self._stream(request, merged, ctx, texts, prompt_tokens)
            return ServingResult(
                stream=await start_when_answered(stream, self.settings.sse_ping_interval))
        return ServingResult(body=await self._complete(request, merged, ctx, texts,
                                                       prompt_tokens))

    def _choice_text(self, request: CompletionRequest, prompt_text: str | None, text: str) -> str:
        return (prompt_text or "") + text if request.echo else text

    async def _complete(self, request: CompletionRequest, merged: AsyncIterator,
                        ctx: RequestContext, texts: list[str | None], prompt_tokens: int
                        ) -> dict:
        finals: dict[int, object] = {}
        async for prompt_index, output in merged:
            finals[prompt_index] = output
        choices = []
        completion_tokens = 0
        for prompt_index in sorted(finals):
            for completion in finals[prompt_index].outputs:
                completion_tokens += len(completion.token_ids)
                ctx.record.tokens_finished(len(completion.token_ids),
                                           finals[prompt_index].metrics)
                finish = FINISH_REASONS.get(completion.finish_reason or "", "stop")
                ctx.record.finish_reasons.append(finish)
                offset = len(texts[prompt_index] or "") if request.echo else 0
                choices.append({
                    "index": prompt_index * request.n + completion.index,
                    "text": self._choice_text(request, texts[prompt_index], completion.text),
                    "logprobs": (completion_logprobs(completion, request.logprobs, offset)
                                 if request.logprobs is not None else None),
                    "finish_reason": finish,
                })
        if self.settings.log_content:
            ctx.record.completion_text = "\n".join(c["text"] for c in choices)
        return {"id": ctx.engine_request_id, "object": "text_completion",
                "created": ctx.created, "model": self.model.name, "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens)}

    async def _stream(self, request: CompletionRequest, merged: AsyncIterator,
                      ctx: RequestContext, texts: list[str | None], prompt_tokens: int
                      ) -> AsyncIterator[dict]:
        base = {"id": ctx.engine_request_id, "object": "text_completion",
                "created": ctx.created, "model": self.model.name}
        echoed: set[int] = set()
        completion_tokens = 0
        async for prompt_index, output in merged:
            for completion in output.outputs:
                completion_tokens += len(completion.token_ids)
                index = prompt_index * request.n + completion.index
                ctx.record.tokens_streamed(index, len(completion.token_ids))
                text = completion.text
                if request.echo and index not in echoed:
                    echoed.add(index)
                    text = (texts[prompt_index] or "") + text
                finish = None
                if completion.finish_reason is not None:
                    finish = FINISH_REASONS.get(completion.finish_reason, "stop")
                    ctx.record.finish_reasons.append(finish)
                if not text and finish is None:
                    continue
                yield {**base, "choices": [{
                    "index": index, "text": text,
                    "logprobs": (completion_logprobs(completion, request.logprobs, 0)
                                 if request.logprobs is not None else None),
                    "finish_reason": finish}]}
        if request.stream_options and request.stream_options.include_usage:
            yield {**base, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
