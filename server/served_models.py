"""The names a client may send in `model`: the base model and each LoRA adapter.

A request's `model` picks the weights: the base name runs the base model, an adapter's name runs
the base plus that adapter (vLLM batches requests for different adapters together). An unknown
name is a 404 that lists what is served.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from server.errors import APIError

if TYPE_CHECKING:
    from vllm.lora.request import LoRARequest

    from server.lora import Adapter


@dataclass
class ServedAdapter:
    request: LoRARequest
    created: int = field(default_factory=lambda: int(time.time()))


class ServedModels:
    """The base model's name and the adapters served now (startup and runtime-loaded)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._adapters: dict[str, ServedAdapter] = {}
        # vLLM identifies an adapter by an int id; ids are never reused, so a name unloaded and
        # loaded again from other weights never meets the old weights in the engine's cache.
        self._ids = itertools.count(1)

    def names(self) -> list[str]:
        return [self.base, *self._adapters]

    def serves(self, name: str) -> bool:
        return name == self.base or name in self._adapters

    def is_adapter(self, name: str) -> bool:
        return name in self._adapters

    def resolve(self, name: str) -> LoRARequest | None:
        """The engine's LoRA request for `name` (None: the base model); 404 when not served."""
        if name == self.base:
            return None
        adapter = self._adapters.get(name)
        if adapter is None:
            served = ", ".join(f"'{n}'" for n in self.names())
            raise APIError(HTTPStatus.NOT_FOUND,
                           f"The model '{name}' does not exist. This server serves: {served}.",
                           param="model", code="model_not_found")
        return adapter.request

    def new_request(self, adapter: Adapter) -> LoRARequest:
        from vllm.lora.request import LoRARequest

        return LoRARequest(lora_name=adapter.name, lora_int_id=next(self._ids),
                           lora_path=str(adapter.path), base_model_name=self.base)

    def add(self, request: LoRARequest) -> None:
        self._adapters[request.lora_name] = ServedAdapter(request)

    def remove(self, name: str) -> LoRARequest:
        return self._adapters.pop(name).request

    def cards(self, base_created: int, max_model_len: int) -> list[dict]:
        """`/v1/models` entries: the base, then each adapter with `parent` = the base's id."""
        cards = [{"id": self.base, "object": "model", "created": base_created,
                  "owned_by": "huatuo-serve", "root": self.base, "parent": None,
                  "max_model_len": max_model_len}]
        for name, adapter in self._adapters.items():
            cards.append({"id": name, "object": "model", "created": adapter.created,
                          "owned_by": "huatuo-serve", "root": adapter.request.lora_path,
                          "parent": self.base, "max_model_len": max_model_len})
        return cards
