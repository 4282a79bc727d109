"""POST /v1/chat/completions: HuatuoGPT2 prompt, trimming, engine, OpenAI response or stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import orjson
from vllm.lora.request import LoRARequest
from vllm.sampling_params import SamplingParams

from huatuogpt2.prompt_format import FittedPrompt, fit_to_context, parse_messages
from server.engine import ModelInfo
from server.errors import APIError, bad_request
from server.generation import guarded_outputs
from server.protocol import ChatCompletionRequest
from server.sampling import build_sampling_params
from server.serving_common import (
    FINISH_REASONS,
    EngineService,
    RequestContext,
    ServingResult,
    check_fields,
    check_max_tokens,
    messages_size,
    run_sized,
    usage,
)
from server.settings import ServeSettings
from server.sse import Last, Payloads, start_when_answered

TRIMMED_HEADER = "X-Huatuo-Trimmed-Turns"


def chat_logprobs(completion, top: int) -> dict | None:
    """OpenAI's `choices[].logprobs` from a vLLM CompletionOutput (None when not requested)."""
    if completion.logprobs is None:
        return None
    content = []
    for token_id, candidates in zip(completion.token_ids, completion.logprobs, strict=False):
        chosen = candidates[token_id]
        token = chosen.decoded_token or ""
        ranked = sorted(candidates.values(), key=lambda lp: lp.rank or 0)
        content.append({
            "token": token,
            "logprob": max(chosen.logprob, -9999.0),
            "bytes": list(token.encode()),
            "top_logprobs": [
                {"token": c.decoded_token or "", "logprob": max(c.logprob, -9999.0),
                 "bytes": list((c.decoded_token or "").encode())}
                for c in ranked if c.rank is not None and c.rank <= top
            ][:top],
        })
    return {"content": content}


def build_chat_prompt(messages: Sequence[dict], requested_max_tokens: int | None,
                      model: ModelInfo, settings: ServeSettings) -> FittedPrompt:
    """The HuatuoGPT2 prompt the engine gets for a chat request (also what `/tokenize` answers
    for it): messages checked, system text merged, oldest rounds dropped until it fits the
    context with room for the answer."""
    if len(messages) > settings.max_messages:
        raise bad_request(
            f"'messages' has {len(messages)} messages; this server accepts at most "
            f"{settings.max_messages} (--max-messages).", param="messages",
        )
    conversation = parse_messages(messages, settings.system_policy)
    reserve = requested_max_tokens or model.default_max_new_tokens
    return fit_to_context(conversation, model.encode, model.max_model_len - reserve)


@dataclass(frozen=True)
class PreparedChat:
    """What a chat request becomes before the engine sees it: the prompt (its token ids are
    exactly what the engine gets) and the sampling parameters. The render endpoint answers
    with this, so a router's view of the prompt is the engine's."""

    fitted: FittedPrompt
    params: SamplingParams
    top_logprobs: int
    lora: LoRARequest | None  # the adapter `model` names; None for the base model


class TextDeltaChunk:
    """The encoded JSON of the commonest chunk, a piece of text and nothing else, built from a
    template: the per-request part is encoded once, only the text per chunk. Byte for byte
    what encoding the equivalent dict gives (tests/unit/test_sse_chunks.py)."""

    def __init__(self, base: dict) -> None:
        self._head = orjson.dumps(base)[:-1] + b',"choices":[{"index":'
        self._tail = b'},"logprobs":null,"finish_reason":null}]}'

    def encode(self, index: int, text: str) -> bytes:
        return (self._head + str(index).encode() + b',"delta":{"content":' + orjson.dumps(text)
                + self._tail)


class ChatService(EngineService):
    async def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        lora = self.served.resolve(request.model)
        check_fields(request)
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        check_max_tokens(request.requested_max_tokens, param, self.model, self.settings)
        fitted = await run_sized(messages_size(request.messages), build_chat_prompt,
                                 request.messages, request.requested_max_tokens, self.model,
                                 self.settings)
        max_tokens = request.requested_max_tokens or min(
            int(self.model.generation_defaults.get("max_new_tokens", self.model.max_model_len)),
            self.model.max_model_len - len(fitted.token_ids),
        )
        top = request.top_logprobs or 0
        params = build_sampling_params(
            request, defaults=self.model.generation_defaults, max_tokens=max_tokens,
            stream=request.stream, logprobs=top if request.logprobs else None,
        )
        return PreparedChat(fitted, params, top, lora)

    async def create(self, request: ChatCompletionRequest, ctx: RequestContext
                     ) -> ServingResult:
        prepared = await self.prepare(request)
        ctx.model = request.model
        fitted, params, top = prepared.fitted, prepared.params, prepared.top_logprobs
        prompt_tokens = len(fitted.token_ids)
        ctx.record.prompt_tokens = prompt_tokens
        ctx.record.trimmed_turns = fitted.trimmed_rounds
        if self.settings.log_content:
            ctx.record.prompt_text = fitted.text
        headers = {TRIMMED_HEADER: str(fitted.trimmed_rounds)}
        outputs = guarded_outputs(
            self.engine, self.lifecycle, fitted.token_ids, params, ctx.engine_request_id,
            queue_timeout=self.settings.queue_timeout,
            idle_timeout=self.settings.stream_idle_timeout, lora_request=prepared.lora,
        )
        if request.stream:
            stream = self._stream(request, outputs, ctx, fitted.token_ids, top)
            return ServingResult(
                stream=await start_when_answered(stream, self.settings.sse_ping_interval),
                headers=headers)
        return ServingResult(
            body=await self._complete(request, outputs, ctx, fitted.token_ids, top),
            headers=headers)

    def _base(self, ctx: RequestContext, obj: str) -> dict:
        return {"id": ctx.engine_request_id, "object": obj, "created": ctx.created,
                "model": ctx.model}

    async def _complete(self, request: ChatCompletionRequest, outputs: AsyncIterator,
                        ctx: RequestContext, prompt_ids: list[int], top: int) -> dict:
        final = None
        async for output in outputs:
            final = output
        if final is None:
            raise APIError(HTTPStatus.INTERNAL_SERVER_ERROR, "The engine returned no output.",
                           code="engine_error")
        choices = []
        completion_tokens = 0
        for completion in final.outputs:
            completion_tokens += len(completion.token_ids)
            ctx.record.tokens_finished(len(completion.token_ids), final.metrics)
            finish = FINISH_REASONS.get(completion.finish_reason or "", "stop")
            ctx.record.finish_reasons.append(finish)
            choices.append({
                "index": completion.index,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": chat_logprobs(completion, top) if request.logprobs else None,
                "finish_reason": finish,
                **({"token_ids": list(completion.token_ids)} if request.return_token_ids else {}),
            })
        if self.settings.log_content:
            ctx.record.completion_text = "\n".join(c["message"]["content"] for c in choices)
        body = {**self._base(ctx, "chat.completion"), "choices": choices,
                "usage": usage(len(prompt_ids), completion_tokens)}
        if request.return_token_ids:  # vLLM's extension: the ids the engine got and gave
            body["prompt_token_ids"] = list(prompt_ids)
        return body

    async def _stream(self, request: ChatCompletionRequest, outputs: AsyncIterator,
                      ctx: RequestContext, prompt_ids: list[int], top: int
                      ) -> AsyncIterator[Payloads]:
        base = self._base(ctx, "chat.completion.chunk")
        text_chunk = TextDeltaChunk(base)
        plain_text = not request.logprobs and not request.return_token_ids
        prompt_tokens = len(prompt_ids)
        # vLLM's extension: the prompt's ids on the first chunk, each delta's ids on its chunk.
        first_extra = {"prompt_token_ids": list(prompt_ids)} if request.return_token_ids else {}
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        texts: list[list[str]] = [[] for _ in range(request.n)]
        completion_tokens = 0
        started = False
        final: list[dict | bytes] = []  # the finished output's payloads, sent with [DONE]
        try:
            async with contextlib.aclosing(outputs):
                async for output in outputs:
                    # What one engine output gives goes out in one write (server.sse.Payloads).
                    batch: list[dict | bytes] = []
                    if not started:
                        # Only once the engine has answered: until then the request may still
                        # fail with an HTTP status (server.sse.start_when_answered).
                        started = True
                        batch += [{**base, "choices": [{
                            "index": index, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None}], **first_extra}
                            for index in range(request.n)]
                    for completion in output.outputs:
                        completion_tokens += len(completion.token_ids)
                        ctx.record.tokens_streamed(completion.index,
                                                   len(completion.token_ids))
                        finish = None
                        if completion.finish_reason is not None:
                            finish = FINISH_REASONS.get(completion.finish_reason, "stop")
                            ctx.record.finish_reasons.append(finish)
                        # Tokens that end inside a UTF-8 character carry no text yet.
                        if not completion.text and finish is None and plain_text:
                            continue
                        if self.settings.log_content:
                            texts[completion.index].append(completion.text)
                        if finish is None and plain_text:
                            batch.append(text_chunk.encode(completion.index, completion.text))
                            continue
                        delta = {"content": completion.text} if completion.text else {}
                        logprobs = chat_logprobs(completion, top) if request.logprobs else None
                        choice = {"index": completion.index, "delta": delta,
                                  "logprobs": logprobs, "finish_reason": finish}
                        if request.return_token_ids:
                            choice["token_ids"] = list(completion.token_ids)
                        batch.append({**base, "choices": [choice]})
                    if output.finished:
                        # Sent after the loop, which then ends at once: a generator closed
                        # before its end would make vLLM abort the finished request.
                        final = batch
                    elif batch:
                        yield batch if len(batch) > 1 else batch[0]
            if include_usage:
                final.append({**base, "choices": [],
                              "usage": usage(prompt_tokens, completion_tokens)})
            yield Last(final)
        finally:
            if self.settings.log_content:
                ctx.record.completion_text = "\n".join("".join(t) for t in texts)
