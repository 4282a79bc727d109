"""POST /v1/chat/completions/render, POST /v1/completions/render: what the engine would get.

A prefix-aware router (vllm-router's `cache_aware` policy, llm-d's endpoint picker) asks a worker
for a request's token ids before it picks one, and routes the request to the replica whose
prefix cache holds the longest part of them. The ids must therefore be exactly the ones the
engine will be given: the HuatuoGPT2 prompt with the oldest rounds trimmed, no BOS. They come
from `ChatService.prepare` / `CompletionService.prepare`, the very code the two endpoints run,
so the render cannot drift from the generation.

The answers have vLLM 0.32's shape (`GenerateRequest`: `request_id`, `token_ids`,
`sampling_params`, `model`, `stream`, ...; a list of them for completions, one per prompt), with
the sampling parameters as msgspec writes vLLM's `SamplingParams` (defaults left out). Nothing
is generated: no admission slot, no engine request.
"""

from __future__ import annotations

import uuid

import msgspec

from server.protocol import ChatCompletionRequest, CompletionRequest
from server.serving_chat import ChatService
from server.serving_completions import CompletionService


def _generate_request(request_id: str, token_ids: list[int], params,
                      request: ChatCompletionRequest | CompletionRequest) -> dict:
    stream = bool(request.stream)
    return {
        "request_id": request_id,
        "token_ids": list(token_ids),
        "token_offsets": None,
        "features": None,
        "sampling_params": msgspec.to_builtins(params),
        "model": request.model,
        "stream": stream,
        "stream_options": (request.stream_options.model_dump()
                           if stream and request.stream_options else None),
        "cache_salt": None,
        "priority": 0,
    }


class RenderService:
    def __init__(self, chat: ChatService, completions: CompletionService) -> None:
        self.chat = chat
        self.completions = completions

    async def render_chat(self, request: ChatCompletionRequest) -> dict:
        prepared = await self.chat.prepare(request)
        return _generate_request(f"chatcmpl-{uuid.uuid4().hex}", prepared.fitted.token_ids,
                                 prepared.params, request)

    async def render_completion(self, request: CompletionRequest) -> list[dict]:
        prepared = await self.completions.prepare(request)
        base = f"cmpl-{uuid.uuid4().hex}"
        many = len(prepared.prompts) > 1
        return [_generate_request(f"{base}-{i}" if many else base, ids, prepared.params, request)
                for i, (_, ids) in enumerate(prepared.prompts)]
