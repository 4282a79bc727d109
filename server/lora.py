"""LoRA adapters checked before the engine sees them, with errors that say what to do.

vLLM's own messages for a bad adapter are late (the first request, or deep in the engine core)
and name neither the adapter nor the fix; an adapter trained on another base is not refused at
all and answers nonsense. Here an adapter directory is read without loading a weight (its
`adapter_config.json` and the safetensors header) and compared with the served base:
files, rank, target modules, tensor shapes (hidden size, layers), and the base checkpoint
`huatuo train` recorded (huatuogpt2/adapter_base.py).
"""

from __future__ import annotations

import json
import re
import struct
import typing
from dataclasses import dataclass
from pathlib import Path

from huatuogpt2.adapter_base import BASE_FILE, base_fingerprint, read_config
from server.settings import ServeSettings

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# The Llama layers vLLM applies LoRA to (q/k/v and gate/up are fused inside vLLM, which splits
# the adapter's per-module weights onto them).
SUPPORTED_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                     "down_proj")
_TENSOR = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\."
                     r"(\w+)\.lora_([AB])\.weight$")
_TRAIN_FIX = "huatuo train --lora.enabled true writes a servable adapter to <export>/adapter"


def vllm_ranks() -> tuple[int, ...]:
    """The values vLLM accepts for max_lora_rank."""
    from vllm.config.lora import MaxLoRARanks

    return tuple(sorted(typing.get_args(MaxLoRARanks)))


class AdapterError(Exception):
    """An adapter that cannot be served: the message names it, the reason and the fix."""

    def __init__(self, name: str, path: Path | str, reason: str, fix: str) -> None:
        self.message = f"LoRA adapter '{name}' ({path}): {reason}. {fix}"
        super().__init__(self.message)


@dataclass(frozen=True)
class Adapter:
    """A checked adapter, ready to become an engine LoRA request."""

    name: str
    path: Path
    rank: int


@dataclass(frozen=True)
class BaseModel:
    """What the adapters are checked against: the served checkpoint's shape and fingerprint."""

    hidden_size: int
    intermediate_size: int
    vocab_size: int
    num_layers: int
    q_size: int
    kv_size: int
    fingerprint: str

    @classmethod
    def read(cls, checkpoint: Path) -> BaseModel:
        config = read_config(checkpoint)
        hidden, heads = config["hidden_size"], config["num_attention_heads"]
        head_dim = config.get("head_dim") or hidden // heads
        return cls(hidden_size=hidden, intermediate_size=config["intermediate_size"],
                   vocab_size=config["vocab_size"], num_layers=config["num_hidden_layers"],
                   q_size=heads * head_dim,
                   kv_size=config.get("num_key_value_heads", heads) * head_dim,
                   fingerprint=base_fingerprint(checkpoint))

    def module_shape(self, module: str) -> tuple[int, int]:
        """(in features, out features) of a Llama projection."""
        return {
            "q_proj": (self.hidden_size, self.q_size),
            "k_proj": (self.hidden_size, self.kv_size),
            "v_proj": (self.hidden_size, self.kv_size),
            "o_proj": (self.q_size, self.hidden_size),
            "gate_proj": (self.hidden_size, self.intermediate_size),
            "up_proj": (self.hidden_size, self.intermediate_size),
            "down_proj": (self.intermediate_size, self.hidden_size),
        }[module]


def parse_lora_flag(value: str) -> tuple[str, Path]:
    """`NAME=PATH` -> (name, path); ValueError with the expected form otherwise."""
    name, sep, path = value.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"--lora {value!r}: expected NAME=PATH (e.g. "
                         "--lora paediatrics=runs/paed/export/adapter)")
    return name.strip(), Path(path.strip()).expanduser()


def check_adapter(name: str, path: Path, base: BaseModel, *, allow_base_mismatch: bool = False
                  ) -> Adapter:
    """The adapter at `path` as served on `base`, or AdapterError saying why not."""

    def fail(reason: str, fix: str) -> AdapterError:
        return AdapterError(name, path, reason, fix)

    if not path.is_dir():
        raise fail("no such directory", f"Give the adapter's directory ({_TRAIN_FIX})")
    config = _read_config(path, fail)
    rank = _check_config(config, fail)
    _check_tensors(_read_header(path, fail), base, fail)
    _check_base_record(path, base, allow_base_mismatch, fail)
    return Adapter(name=name, path=path, rank=rank)


def _read_config(path: Path, fail) -> dict:
    file = path / CONFIG_FILE
    if not file.is_file():
        raise fail(f"no {CONFIG_FILE}; this is not a PEFT adapter directory",
                   f"Give the directory that holds {CONFIG_FILE} ({_TRAIN_FIX})")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"{CONFIG_FILE} is not valid JSON ({exc})",
                   "Re-export the adapter") from None
    if not isinstance(config, dict):
        raise fail(f"{CONFIG_FILE} is not a JSON object", "Re-export the adapter")
    return config


def _check_config(config: dict, fail) -> int:
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise fail(f"it is a {peft_type} adapter; only LoRA adapters can be served",
                   "Train a LoRA adapter (huatuo train --lora.enabled true)")
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in ranks):
        raise fail(f"{CONFIG_FILE} has no valid rank 'r' (got {config.get('r')!r})",
                   "Re-export the adapter")
    largest = max(vllm_ranks())
    if max(ranks) > largest:
        raise fail(f"its rank {max(ranks)} is above {largest}, the largest rank vLLM applies",
                   f"Retrain with --lora.r {largest} or less")
    if config.get("bias", "none") != "none":
        raise fail(f"it trains biases (bias={config['bias']!r}), which vLLM cannot apply",
                   "Retrain with bias 'none' (huatuo train's default)")
    if config.get("use_dora"):
        raise fail("it is a DoRA adapter, which vLLM cannot apply", "Retrain without DoRA")
    if config.get("modules_to_save"):
        raise fail(f"it saves whole modules ({config['modules_to_save']}), which vLLM cannot "
                   "apply to this model", "Retrain without modules_to_save")
    return max(ranks)


def _read_header(path: Path, fail) -> dict:
    file = path / WEIGHTS_FILE
    if not file.is_file():
        raise fail(f"no {WEIGHTS_FILE}", f"Re-export the adapter ({_TRAIN_FIX})")
    try:
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > file.stat().st_size:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(length))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise fail(f"{WEIGHTS_FILE} is not a safetensors file ({exc})",
                   "Re-export the adapter") from None
    header.pop("__metadata__", None)
    if not header:
        raise fail(f"{WEIGHTS_FILE} holds no tensors", "Re-export the adapter")
    return header


def _check_tensors(header: dict, base: BaseModel, fail) -> None:
    unknown: set[str] = set()
    for key, info in header.items():
        match = _TENSOR.match(key)
        module = match.group(2) if match else key.removeprefix("base_model.model.").split(
            ".lora_")[0].rsplit(".", 1)[-1]
        if match is None or module not in SUPPORTED_MODULES:
            unknown.add(module)
            continue
        layer, kind = int(match.group(1)), match.group(3)
        if layer >= base.num_layers:
            raise fail(f"it adapts layer {layer}; the base model has {base.num_layers} layers",
                       "Serve it on the base model it was trained on")
        shape = info.get("shape", [])
        expected_in, expected_out = base.module_shape(module)
        got = shape[1] if kind == "A" else shape[0]
        want = expected_in if kind == "A" else expected_out
        if len(shape) != 2 or got != want:
            what = ("hidden size" if want == base.hidden_size else f"{module} size")
            raise fail(f"it was trained on a model with {what} {got} ({key} has shape {shape}); "
                       f"the base model's is {want}",
                       "Serve it on the base model it was trained on")
    if unknown:
        raise fail(f"it targets modules vLLM cannot apply LoRA to on this model: "
                   f"{sorted(unknown)} (supported: {', '.join(SUPPORTED_MODULES)})",
                   "Retrain with --lora.target_modules limited to the supported ones")


def _check_base_record(path: Path, base: BaseModel, allow_mismatch: bool, fail) -> None:
    file = path / BASE_FILE
    if not file.is_file():
        return  # not from `huatuo train`: the shapes above are all we can check
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"{BASE_FILE} is not valid JSON ({exc})", "Re-export the adapter") from None
    for field, served in (("vocab_size", base.vocab_size), ("hidden_size", base.hidden_size)):
        trained = record.get(field)
        if trained is not None and trained != served:
            label = "vocabulary size" if field == "vocab_size" else "hidden size"
            raise fail(f"it was trained on a base with {label} {trained}; the served base has "
                       f"{served}", "Serve it on the base model it was trained on "
                       f"({record.get('base_model', 'recorded in ' + BASE_FILE)})")
    if record.get("fingerprint") != base.fingerprint and not allow_mismatch:
        raise fail(f"it was trained on a different base checkpoint ({record.get('base_model')}, "
                   f"fingerprint {str(record.get('fingerprint'))[:12]}; the served base's is "
                   f"{base.fingerprint[:12]})",
                   "Serve it on the checkpoint it was trained on, or pass "
                   "--lora-allow-base-mismatch to serve it anyway")


def engine_rank(adapters: list[Adapter], runtime: bool) -> int:
    """max_lora_rank: the largest adapter's rank rounded up to a value vLLM accepts; with
    runtime loading, at least 16 (vLLM's default), so that typical adapters can come later."""
    needed = max([a.rank for a in adapters] + [16 if runtime else 1])
    return next(r for r in vllm_ranks() if r >= needed)


def engine_lora_args(settings: ServeSettings, adapters: list[Adapter]) -> dict:
    """The engine's LoRA settings, from the adapters themselves unless flags say otherwise.
    LoRA stays off (no cost at all) when no adapter is served or loadable."""
    runtime = settings.allow_runtime_lora
    if not adapters and not runtime:
        return {}
    max_loras = settings.max_loras or (4 if runtime else min(len(adapters), 4))
    rank = settings.max_lora_rank or engine_rank(adapters, runtime)
    return {"enable_lora": True, "max_loras": max_loras, "max_lora_rank": rank,
            "max_cpu_loras": settings.max_cpu_loras or max(max_loras, len(adapters))}


def check_startup_adapters(settings: ServeSettings, model_dir: Path) -> list[Adapter]:
    """Every --lora adapter checked against the served base; ValueError for bad flags,
    AdapterError for a bad adapter."""
    if settings.allow_runtime_lora and not settings.admin_api_key:
        raise ValueError("--allow-runtime-lora needs --admin-api-key: loading adapters must be "
                         "authorised by a key of its own")
    if settings.allow_runtime_lora and settings.lora_root is None:
        raise ValueError("--allow-runtime-lora needs --lora-root: runtime adapters are loaded "
                         "only from under that directory")
    if settings.max_lora_rank is not None and settings.max_lora_rank not in vllm_ranks():
        raise ValueError(f"--max-lora-rank {settings.max_lora_rank}: vLLM accepts "
                         f"{', '.join(map(str, vllm_ranks()))}")
    specs = [parse_lora_flag(value) for value in settings.lora]
    names = [name for name, _ in specs]
    for name in names:
        if name == settings.model_name:
            raise ValueError(f"--lora {name}=...: the name is the base model's; choose another")
        if names.count(name) > 1:
            raise ValueError(f"--lora {name}=... is given twice; adapter names must be unique")
    if not specs:
        return []
    base = BaseModel.read(model_dir)
    adapters = [check_adapter(name, path, base,
                              allow_base_mismatch=settings.lora_allow_base_mismatch)
                for name, path in specs]
    if settings.max_lora_rank is not None:
        for adapter in adapters:
            if adapter.rank > settings.max_lora_rank:
                raise AdapterError(adapter.name, adapter.path,
                                   f"its rank {adapter.rank} is above --max-lora-rank "
                                   f"{settings.max_lora_rank}",
                                   "Raise --max-lora-rank or leave it out (then it follows the "
                                   "adapters)")
    return adapters
