"""POST /v1/chat/completions: HuatuoGPT2 prompt, trimming, engine, OpenAI response or stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from server.chat_prompt import chat_prompt
from server.errors import APIError
from server.generation import guarded_outputs
from server.protocol import ChatCompletionRequest
from server.sampling import build_sampling_params
from server.serving_common import (
    FINISH_REASONS,
    EngineService,
    ServingResult,
    check_max_tokens,
    check_model,
    framed_stream,
    sse,
    usage,
)
from server.telemetry import RequestRecord

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


class ChatService(EngineService):
    async def create(self, request: ChatCompletionRequest, record: RequestRecord
                     ) -> ServingResult:
        check_model(request.model, self.model)
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        check_max_tokens(request.requested_max_tokens, param, self.model, self.settings)
        fitted = chat_prompt(request.messages, request.requested_max_tokens, self.model,
                             self.settings)

        prompt_tokens = len(fitted.token_ids)
        max_tokens = request.requested_max_tokens or min(
            int(self.model.generation_defaults.get("max_new_tokens", self.model.max_model_len)),
            self.model.max_model_len - prompt_tokens,
        )
        top = request.top_logprobs or 0
        params = build_sampling_params(
            request, defaults=self.model.generation_defaults, max_tokens=max_tokens,
            stream=request.stream, logprobs=top if request.logprobs else None,
        )
        record.prompt_tokens = prompt_tokens
        record.trimmed_turns = fitted.trimmed_rounds
        if self.settings.log_content:
            record.prompt_text = fitted.text
        headers = {TRIMMED_HEADER: str(fitted.trimmed_rounds)}
        outputs = guarded_outputs(
            self.engine, self.lifecycle, fitted.token_ids, params, record.completion_id,
            queue_timeout=self.settings.queue_timeout,
            idle_timeout=self.settings.stream_idle_timeout,
        )
        if request.stream:
            return ServingResult(
                stream=framed_stream(self._stream(request, outputs, record, top), record),
                headers=headers)
        return ServingResult(body=await self._complete(request, outputs, record, top),
                             headers=headers)

    def _base(self, record: RequestRecord, obj: str) -> dict:
        return {"id": record.completion_id, "object": obj, "created": int(time.time()),
                "model": self.model.name}

    async def _complete(self, request: ChatCompletionRequest, outputs: AsyncIterator,
                        record: RequestRecord, top: int) -> dict:
        final = None
        async for output in outputs:
            final = output
        if final is None:
            raise APIError(500, "The engine returned no output.", code="engine_error")
        choices = []
        for completion in final.outputs:
            record.mark_tokens(len(completion.token_ids))
            finish = FINISH_REASONS.get(completion.finish_reason or "", "stop")
            record.finish_reasons.append(finish)
            choices.append({
                "index": completion.index,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": chat_logprobs(completion, top) if request.logprobs else None,
                "finish_reason": finish,
            })
        if self.settings.log_content:
            record.completion_text = "\n".join(c["message"]["content"] for c in choices)
        return {**self._base(record, "chat.completion"), "choices": choices,
                "usage": usage(record.prompt_tokens, record.completion_tokens)}

    async def _stream(self, request: ChatCompletionRequest, outputs: AsyncIterator,
                      record: RequestRecord, top: int) -> AsyncIterator[str]:
        base = self._base(record, "chat.completion.chunk")
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        texts: list[list[str]] = [[] for _ in range(request.n)]
        try:
            for index in range(request.n):
                yield sse({**base, "choices": [{
                    "index": index, "delta": {"role": "assistant", "content": ""},
                    "logprobs": None, "finish_reason": None}]})
            async for output in outputs:
                for completion in output.outputs:
                    record.mark_tokens(len(completion.token_ids))
                    finish = None
                    if completion.finish_reason is not None:
                        finish = FINISH_REASONS.get(completion.finish_reason, "stop")
                        record.finish_reasons.append(finish)
                    # Tokens that end inside a UTF-8 character carry no text yet.
                    if not completion.text and finish is None and not request.logprobs:
                        continue
                    if self.settings.log_content:
                        texts[completion.index].append(completion.text)
                    delta = {"content": completion.text} if completion.text else {}
                    yield sse({**base, "choices": [{
                        "index": completion.index, "delta": delta,
                        "logprobs": chat_logprobs(completion, top) if request.logprobs else None,
                        "finish_reason": finish}]})
            if include_usage:
                yield sse({**base, "choices": [],
                           "usage": usage(record.prompt_tokens, record.completion_tokens)})
        finally:
            if self.settings.log_content:
                record.completion_text = "\n".join("".join(t) for t in texts)
