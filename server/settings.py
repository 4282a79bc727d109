"""Settings of `huatuo serve`, each declared once.

A field of `ServeSettings` declared with `flag(...)` is everything about one option: its type
(the annotation), its default, its help and its parser. The command-line flag
(`max_model_len` -> `--max-model-len`), the environment variable (`HUATUO_MAX_MODEL_LEN`, for
Kubernetes ConfigMaps and Secrets), `--help` and the settings object are all derived from it.
A flag given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huatuogpt2.prompt_format import SystemPolicy

ENV_PREFIX = "HUATUO_"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("HUATUO_CACHE_DIR") or Path(base) / "huatuo-serve")


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {number}")
    return number


@dataclass(frozen=True)
class Flag:
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    # A list flag is repeatable on the command line; its environment variable is
    # comma-separated, and both are accepted together (e.g. API keys from a Secret and a flag).
    repeatable: bool = False
    env: str | None = None  # when the variable's name is not derived from the field's
    default_text: str | None = None  # what --help shows when the default is computed

    def env_name(self, field_name: str) -> str:
        return ENV_PREFIX + (self.env or field_name.upper())


def flag(default: Any = None, help: str = "", **kwargs: Any) -> Any:  # noqa: A002
    """A settings field with its option: `flag(8000, "Port to bind.", parse=int)`."""
    spec = Flag(help=help, **kwargs)
    if callable(default) and not isinstance(default, type):
        return field(default_factory=default, metadata={"flag": spec})
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"flag": spec})
    return field(default=default, metadata={"flag": spec})


@dataclass
class ServeSettings:
    model: str | None = flag(
        None, "Checkpoint directory to serve (Llama layout, or a published Baichuan2/Yi "
        "HuatuoGPT2 checkpoint, converted once into the cache).", default_text="the demo model")
    host: str = flag("127.0.0.1", "Address to bind (0.0.0.0 in containers).")
    port: int = flag(8000, "Port to bind.", parse=int)
    served_model_name: str | None = flag(
        None, "Model id clients send in 'model'.", default_text="the checkpoint directory's name")
    # Engine
    tensor_parallel_size: int = flag(
        1, "GPUs per replica to shard the model over (34B: 2 on 80 GB, 4 on 40 GB).",
        parse=positive_int)
    pipeline_parallel_size: int = flag(
        1, "Pipeline stages (across nodes on Ray; see k8s/README.md).", parse=positive_int)
    distributed_executor_backend: str = flag(
        "mp", "How vLLM runs its workers: 'mp' (processes on this node) or 'ray' (needed when "
        "tensor x pipeline parallel spans more GPUs than one node has).", choices=("mp", "ray"))
    max_model_len: int | None = flag(
        None, "Context length in tokens (prompt + answer).", parse=positive_int,
        default_text="the model's (4096 for HuatuoGPT2)")
    max_num_seqs: int | None = flag(
        None, "Sequences the engine batches at once.", parse=positive_int, default_text="vLLM's")
    dtype: str = flag("auto", "Weight and activation dtype.",
                      choices=("auto", "bfloat16", "float16", "float32"))
    kv_cache_space: int | None = flag(
        None, "KV-cache size in whole GiB on the CPU backend.", parse=positive_int,
        default_text="VLLM_CPU_KVCACHE_SPACE when set, else 1")
    gpu_memory_utilization: float = flag(
        0.9, "Fraction of each GPU's memory vLLM may use (weights + KV cache).",
        parse=positive_float)
    enable_prefix_caching: bool = flag(
        True, "Reuse the KV cache of shared prompt prefixes (multi-turn chats).")
    enforce_eager: bool = flag(
        False, "Disable CUDA graphs / compilation (faster start, slower decode).")
    seed: int = flag(0, "Engine seed.", parse=int)
    cache_dir: Path = flag(default_cache_dir, "Where the demo model and converted checkpoints "
                           "are cached.", parse=Path, default_text="~/.cache/huatuo-serve")
    # LoRA adapters (docs/lora.md)
    lora: list[str] = flag(
        [], "LoRA adapter to serve beside the base model, NAME=PATH (repeatable; the env var is "
        "comma-separated): a PEFT adapter directory as `huatuo train` exports it. Clients pick "
        "it with 'model': NAME.", repeatable=True)
    max_loras: int | None = flag(
        None, "Adapters the engine applies in one batch.", parse=positive_int,
        default_text="the number of --lora adapters, at most 4 (4 with --allow-runtime-lora)")
    max_cpu_loras: int | None = flag(
        None, "Adapters whose weights the engine keeps in memory; others are reloaded from "
        "their directory when asked for.", parse=positive_int,
        default_text="the larger of --max-loras and the number of --lora adapters")
    max_lora_rank: int | None = flag(
        None, "Largest adapter rank the engine accepts (one of vLLM's: 1, 8, 16, 32, 64, 128, "
        "256, 320, 512).", parse=positive_int,
        default_text="the largest --lora rank rounded up (at least 16 with --allow-runtime-lora)")
    lora_allow_base_mismatch: bool = flag(
        False, "Serve an adapter that `huatuo train` recorded for a different base checkpoint.")
    allow_runtime_lora: bool = flag(
        False, "Enable POST /v1/load_lora_adapter and /v1/unload_lora_adapter (needs "
        "--admin-api-key and --lora-root).")
    admin_api_key: list[str] = flag(
        [], "Key that authorises the runtime adapter routes (repeatable); API keys do not.",
        repeatable=True, env="ADMIN_API_KEYS")
    lora_root: Path | None = flag(
        None, "Directory runtime-loaded adapters must lie under (a path outside it, '..' or a "
        "symlink out of it is refused).", parse=Path)
    # Conversation handling
    system_policy: SystemPolicy = flag(
        SystemPolicy.MERGE, "System messages: 'merge' puts the system text before the first "
        "user message; 'reject' answers 400.", parse=SystemPolicy,
        choices=tuple(p.value for p in SystemPolicy))
    # Security and limits
    api_key: list[str] = flag(
        [], "Accepted API key (repeatable); all keys given here, in the environment and in "
        "--api-key-file are accepted.", repeatable=True, env="API_KEYS")
    api_key_file: Path | None = flag(
        None, "File with one API key per line (a mounted Kubernetes Secret).", parse=Path)
    public_metrics: bool = flag(False, "Serve /metrics without an API key.")
    allowed_origins: list[str] = flag(
        [], "CORS origin allowed to call the API (repeatable, or comma-separated). CORS is off "
        "when none is given.", repeatable=True)
    max_concurrent_requests: int = flag(
        256, "Requests admitted at once (running + waiting); beyond it: 429 with Retry-After.",
        parse=positive_int)
    max_body_bytes: int = flag(4 * 1024 * 1024, "Largest request body accepted (413 beyond).",
                               parse=positive_int)
    max_messages: int = flag(512, "Most messages accepted in one chat request.",
                             parse=positive_int)
    max_tokens_limit: int | None = flag(
        None, "Largest max_tokens accepted.", parse=positive_int,
        default_text="the context length")
    queue_timeout: float = flag(
        600.0, "Seconds a request may wait for its first token before it fails (503, or an "
        "error event once a stream has started).", parse=positive_float)
    stream_idle_timeout: float = flag(
        120.0, "Seconds a running request may go without a new token before it fails.",
        parse=positive_float)
    sse_ping_interval: float = flag(
        15.0, "Seconds between SSE keep-alive comments on a stream, so that proxies do not cut "
        "one that waits in the queue (0: none).", parse=non_negative_float)
    shutdown_timeout: float = flag(
        30.0, "On SIGTERM, seconds requests in flight get to finish before the process exits.",
        parse=positive_float)
    # Observability
    log_content: bool = flag(
        False, "Log prompt and answer text. OFF by default: these are patients' words.")
    log_level: str = flag("info", "Log level.", choices=("debug", "info", "warning", "error"))
    # The consultation page
    playground: bool = flag(
        True, "Serve the consultation page at / (public; its API calls still need a key).")

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        if self.model:
            return Path(self.model.rstrip("/")).name
        return "huatuo-demo"

    @property
    def api_keys(self) -> list[str]:
        """Every accepted key: flags, HUATUO_API_KEYS and --api-key-file, without repeats."""
        keys = list(self.api_key)
        if self.api_key_file is not None:
            keys += [line.strip() for line in self.api_key_file.read_text().splitlines()
                     if line.strip()]
        return list(dict.fromkeys(keys))


def _flags() -> list[tuple[dataclasses.Field, Flag]]:
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(ServeSettings)]


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _default_text(spec: Flag, default: Any) -> str | None:
    if spec.default_text is not None:
        return spec.default_text
    if isinstance(default, bool):
        return "on" if default else "off"
    if default in (None, []):
        return None
    return str(getattr(default, "value", default))


def _help(f: dataclasses.Field, spec: Flag, default: Any) -> str:
    shown = _default_text(spec, default)
    text = spec.help.replace("%", "%%")
    if shown is not None:
        text += f" (default: {shown.replace('%', '%%')})"
    return text + f" [env {spec.env_name(f.name)}]"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Every settings field as a flag; a set environment variable becomes the default."""
    for f, spec in _flags():
        option = "--" + f.name.replace("_", "-")
        default = _default(f)
        env_value = os.environ.get(spec.env_name(f.name))
        if env_value is not None:
            default = _from_env(parser, spec, f, env_value)
        kwargs: dict[str, Any] = {"dest": f.name, "help": _help(f, spec, default)}
        if isinstance(_default(f), bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=default,
                                **kwargs)
        elif spec.repeatable:
            # Values from the command line are added to those from the environment.
            parser.add_argument(option, action=_Extend, default=default, type=_csv, **kwargs)
        else:
            parser.add_argument(option, type=spec.parse, default=default, choices=_choices(spec),
                                **kwargs)


def _choices(spec: Flag) -> list | None:
    if spec.choices is None:
        return None
    return [spec.parse(choice) for choice in spec.choices]


def _from_env(parser: argparse.ArgumentParser, spec: Flag, f: dataclasses.Field,
              value: str) -> Any:
    try:
        if isinstance(_default(f), bool):
            return _bool(value)
        if spec.repeatable:
            return _csv(value)
        parsed = spec.parse(value)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"{spec.env_name(f.name)}={value!r}: {exc}")
    if spec.choices is not None and parsed not in _choices(spec):
        parser.error(f"{spec.env_name(f.name)}={value!r}: choose from {', '.join(spec.choices)}")
    return parsed


class _Extend(argparse.Action):
    """A repeatable option whose values extend its default (from the environment)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        current = list(getattr(namespace, self.dest) or [])
        setattr(namespace, self.dest, current + list(values))


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(**{f.name: getattr(args, f.name) for f, _ in _flags()})


def flag_table() -> list[tuple[str, str, str, str]]:
    """(flag, environment variable, default, help) for every option: what the README lists."""
    rows = []
    for f, spec in _flags():
        shown = _default_text(spec, _default(f)) or "none"
        rows.append(("--" + f.name.replace("_", "-"), spec.env_name(f.name), shown, spec.help))
    return rows
