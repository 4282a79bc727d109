"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter: adapters added and removed while
the server runs (vLLM's request shapes and answers).

Off unless --allow-runtime-lora; the admin key (--admin-api-key, checked by
`server.middleware.ApiKeyMiddleware`) authorises them, never an API key; and an adapter is
loaded only from under --lora-root, so the route cannot be used to read arbitrary files.

Unloading removes the name at once: new requests for it get 404. Requests already running
keep the adapter they were admitted with and finish normally (vLLM holds their LoRA request);
its weights leave the engine's memory when its LRU cache (--max-cpu-loras) needs the room.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from pathlib import Path

from pydantic import BaseModel as Schema

from server.errors import APIError, bad_request
from server.lora import BASE_FILE, CONFIG_FILE, WEIGHTS_FILE, BaseModel, check_adapter
from server.metrics import GatewayMetrics
from server.served_models import ServedModels
from server.settings import ServeSettings

logger = logging.getLogger("huatuo.lora")
ADMIN_PATHS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")


class LoadLoRAAdapterRequest(Schema):
    lora_name: str
    lora_path: str
    load_inplace: bool = False


class UnloadLoRAAdapterRequest(Schema):
    lora_name: str
    lora_int_id: int | None = None  # vLLM's shape; the name is what identifies an adapter


def confine(root: Path, given: str) -> Path:
    """`given` (absolute, or relative to `root`) as a real path under `root`; 400 otherwise."""

    def refuse(why: str) -> APIError:
        return bad_request(f"'lora_path' {given!r} {why}. Runtime adapters are loaded only from "
                           f"under --lora-root ({root}).", param="lora_path",
                           code="lora_path_outside_root")

    if ".." in Path(given).parts:
        raise refuse("contains '..'")
    path = Path(given) if Path(given).is_absolute() else root / given
    real_root = root.resolve()
    if not path.absolute().is_relative_to(root.absolute()) and not path.is_relative_to(
            real_root):
        raise refuse("is outside --lora-root")
    real = path.resolve()
    # The directory, and the files read from it, must stay inside once links are followed.
    inside = [real, *((real / name).resolve() for name in (CONFIG_FILE, WEIGHTS_FILE, BASE_FILE))]
    if not all(p.is_relative_to(real_root) for p in inside):
        raise refuse("leads outside --lora-root through a symbolic link")
    return real


class LoraAdmin:
    def __init__(self, settings: ServeSettings, engine, served: ServedModels,
                 base: BaseModel | None, max_rank: int | None,
                 metrics: GatewayMetrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.served = served
        self.base = base
        self.max_rank = max_rank
        self.metrics = metrics
        self._lock = asyncio.Lock()  # one change at a time: check, load, register

    def _check_enabled(self) -> None:
        if not self.settings.allow_runtime_lora or self.base is None:
            raise APIError(HTTPStatus.FORBIDDEN,
                           "Runtime LoRA loading is off on this server; start it with "
                           "--allow-runtime-lora, --admin-api-key and --lora-root.",
                           code="runtime_lora_disabled")

    async def load(self, body: LoadLoRAAdapterRequest) -> str:
        self._check_enabled()
        name = body.lora_name
        if not name or not body.lora_path:
            raise bad_request("Both 'lora_name' and 'lora_path' must be provided.",
                              param="lora_name" if not name else "lora_path")
        if name == self.served.base:
            raise bad_request(f"The lora adapter '{name}' conflicts with a served base model.",
                              param="lora_name")
        async with self._lock:
            if self.served.is_adapter(name) and not body.load_inplace:
                raise bad_request(
                    f"The lora adapter '{name}' has already been loaded. If you want to load "
                    "the adapter in place, set 'load_inplace' to True.", param="lora_name",
                    code="adapter_exists")
            path = confine(self.settings.lora_root, body.lora_path)
            adapter = await asyncio.to_thread(
                check_adapter, name, path, self.base,
                allow_base_mismatch=self.settings.lora_allow_base_mismatch)
            if adapter.rank > self.max_rank:
                raise bad_request(
                    f"LoRA adapter '{name}' ({path}): its rank {adapter.rank} is above this "
                    f"server's --max-lora-rank {self.max_rank}. Restart the server with a "
                    "larger --max-lora-rank, or retrain with a smaller rank.",
                    param="lora_path", code="invalid_adapter")
            request = self.served.new_request(adapter)
            try:
                # Loads the weights now, so the first request does not pay for it.
                await self.engine.add_lora(request)
            except Exception as exc:  # noqa: BLE001 - the engine's reason goes to the admin
                raise bad_request(f"LoRA adapter '{name}' ({path}): the engine could not load "
                                  f"it: {exc}", param="lora_path",
                                  code="invalid_adapter") from exc
            self.served.add(request)
            if self.metrics is not None:
                self.metrics.serve_model(name)
        logger.info("Loaded LoRA adapter '%s' from %s", name, path)
        return f"Success: LoRA adapter '{name}' added successfully."

    async def unload(self, body: UnloadLoRAAdapterRequest) -> str:
        self._check_enabled()
        name = body.lora_name
        if not name:
            raise bad_request("'lora_name' needs to be provided to unload a LoRA adapter.",
                              param="lora_name")
        async with self._lock:
            if not self.served.is_adapter(name):
                raise APIError(HTTPStatus.NOT_FOUND,
                               f"The lora adapter '{name}' cannot be found.",
                               param="lora_name", code="model_not_found")
            self.served.remove(name)
        logger.info("Unloaded LoRA adapter '%s'", name)
        return f"Success: LoRA adapter '{name}' removed successfully."
