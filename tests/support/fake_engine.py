"""A stand-in for vLLM's AsyncLLM, for in-process tests of timing-sensitive gateway paths.

It produces one token (a letter) every `token_delay` seconds after `first_delay`, honours
DELTA vs FINAL_ONLY output kinds, aborts like vLLM (a final output with reason "abort"), and can
be made to die. The real engine is exercised by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.exceptions import EngineDeadError

from server.engine import ModelInfo


@dataclass
class FakeEngine:
    first_delay: float = 0.0
    token_delay: float = 0.0
    errored: bool = False
    aborted: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    _abort_events: dict[str, asyncio.Event] = field(default_factory=dict)

    async def generate(self, prompt: dict, params, request_id: str, lora_request=None):
        self.running.add(request_id)
        abort = self._abort_events.setdefault(request_id, asyncio.Event())
        delta = params.output_kind == RequestOutputKind.DELTA
        text, ids = "", []
        try:
            for i in range(params.max_tokens):
                delay = self.first_delay if i == 0 else self.token_delay
                try:
                    await asyncio.wait_for(abort.wait(), delay)
                    yield self._output("", [], "abort", True)
                    return
                except TimeoutError:
                    pass
                if self.errored:
                    raise EngineDeadError()
                token = chr(ord("a") + i % 26)
                text, ids = text + token, ids + [i]
                last = i == params.max_tokens - 1
                if delta:
                    yield self._output(token, [i], "length" if last else None, last)
                elif last:
                    yield self._output(text, ids, "length", True)
        finally:
            self.running.discard(request_id)
            self._abort_events.pop(request_id, None)

    @staticmethod
    def _output(text: str, ids: list[int], finish: str | None, finished: bool):
        completion = SimpleNamespace(index=0, text=text, token_ids=ids, logprobs=None,
                                     finish_reason=finish)
        return SimpleNamespace(outputs=[completion], finished=finished, metrics=None)

    async def abort(self, request_ids) -> None:
        for request_id in [request_ids] if isinstance(request_ids, str) else request_ids:
            self.aborted.append(request_id)
            if request_id in self._abort_events:
                self._abort_events[request_id].set()

    async def check_health(self) -> None:
        if self.errored:
            raise EngineDeadError()

    def shutdown(self) -> None:
        pass


def fake_model(max_model_len: int = 256) -> ModelInfo:
    return ModelInfo(name="fake", max_model_len=max_model_len,
                     encode=lambda text: [ord(c) for c in text],
                     generation_defaults={"temperature": 0.3, "top_k": 5, "top_p": 0.85,
                                          "repetition_penalty": 1.1, "max_new_tokens": 64})
