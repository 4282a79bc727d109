"""Settings of `huatuo serve`: command-line flags, each with a `HUATUO_*` environment variable.

The environment variable of a flag is its name upper-cased with `-` as `_` and a `HUATUO_`
prefix (`--max-model-len` -> `HUATUO_MAX_MODEL_LEN`), so Kubernetes ConfigMaps and Secrets can
configure everything. A flag given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from server.prompt_format import SystemPolicy

ENV_PREFIX = "HUATUO_"


@dataclass
class ServeSettings:
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    # Engine
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str = "mp"
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    dtype: str = "auto"
    kv_cache_space: int | None = None
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    seed: int = 0
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    # Conversation handling
    system_policy: SystemPolicy = SystemPolicy.MERGE
    # Security and limits
    api_keys: list[str] = field(default_factory=list)
    public_metrics: bool = False
    allowed_origins: list[str] = field(default_factory=list)
    max_concurrent_requests: int = 256
    max_body_bytes: int = 4 * 1024 * 1024
    max_messages: int = 512
    max_tokens_limit: int | None = None
    queue_timeout: float = 600.0
    stream_idle_timeout: float = 120.0
    shutdown_timeout: float = 30.0
    # Observability
    log_content: bool = False
    log_level: str = "info"
    # The consultation page at /
    playground: bool = True

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        if self.model:
            return Path(self.model.rstrip("/")).name
        return "huatuo-demo"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("HUATUO_CACHE_DIR") or Path(base) / "huatuo-serve")


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"))


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {number}")
    return number


class _EnvDefaults:
    """Adds flags whose default comes from the HUATUO_* environment variable when set."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add(self, flag: str, *, type=str, default=None, help: str, **kwargs) -> None:  # noqa: A002
        name = flag.lstrip("-")
        env_value = _env(name)
        if env_value is not None:
            default = type(env_value) if type is not bool else _bool(env_value)
        env_help = f" [env {ENV_PREFIX}{name.upper().replace('-', '_')}]"
        if type is bool:
            self.parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default,
                help=help + env_help, **kwargs,
            )
        else:
            self.parser.add_argument(
                flag, type=type, default=default, help=help + env_help, **kwargs
            )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServeSettings()
    add = _EnvDefaults(parser).add
    add("--model", default=None,
        help="Checkpoint directory to serve (Llama layout, or a published Baichuan2/Yi "
             "HuatuoGPT2 checkpoint, converted once into the cache). Default: the tiny demo model.")
    add("--host", default=d.host, help="Address to bind (0.0.0.0 in containers).")
    add("--port", type=int, default=d.port, help="Port to bind.")
    add("--served-model-name", default=None,
        help="Model id clients send in 'model'. Default: the checkpoint directory's name.")
    add("--tensor-parallel-size", type=_positive_int, default=d.tensor_parallel_size,
        help="GPUs per replica to shard the model over (34B: 2 on 80 GB, 4 on 40 GB).")
    add("--pipeline-parallel-size", type=_positive_int, default=d.pipeline_parallel_size,
        help="Pipeline stages (across nodes on Ray; see k8s/README.md).")
    add("--distributed-executor-backend", default=d.distributed_executor_backend,
        choices=["mp", "ray"],
        help="How vLLM runs its workers: 'mp' (processes on this node) or 'ray' (needed when "
             "tensor x pipeline parallel spans more GPUs than one node has).")
    add("--max-model-len", type=_positive_int, default=None,
        help="Context length in tokens (prompt + answer). Default: the model's (4096 for "
             "HuatuoGPT2).")
    add("--max-num-seqs", type=_positive_int, default=None,
        help="Sequences the engine batches at once. Default: vLLM's.")
    add("--dtype", default=d.dtype, choices=["auto", "bfloat16", "float16", "float32"],
        help="Weight and activation dtype.")
    add("--kv-cache-space", type=_positive_int, default=None,
        help="KV-cache size in whole GiB on the CPU backend. Default: VLLM_CPU_KVCACHE_SPACE "
             "when set, else 1.")
    add("--gpu-memory-utilization", type=_positive_float, default=d.gpu_memory_utilization,
        help="Fraction of each GPU's memory vLLM may use (weights + KV cache).")
    add("--enable-prefix-caching", type=bool, default=d.enable_prefix_caching,
        help="Reuse the KV cache of shared prompt prefixes (multi-turn chats).")
    add("--enforce-eager", type=bool, default=d.enforce_eager,
        help="Disable CUDA graphs / compilation (faster start, slower decode).")
    add("--seed", type=int, default=d.seed, help="Engine seed.")
    add("--cache-dir", type=Path, default=d.cache_dir,
        help="Where the demo model and converted checkpoints are cached.")
    add("--system-policy", default=d.system_policy.value,
        choices=[p.value for p in SystemPolicy],
        help="System messages: 'merge' puts the system text before the first user message; "
             "'reject' answers 400.")
    parser.add_argument(
        "--api-key", default=None, action="append", dest="api_key",
        help="Accepted API key (repeatable). Also HUATUO_API_KEYS (comma-separated) and "
             "--api-key-file; all given keys are accepted.")
    add("--api-key-file", type=Path, default=None,
        help="File with one API key per line (a mounted Kubernetes Secret).")
    add("--public-metrics", type=bool, default=d.public_metrics,
        help="Serve /metrics without an API key.")
    add("--allowed-origins", type=_csv, default=[],
        help="Comma-separated CORS origins. CORS is off when empty.")
    add("--max-concurrent-requests", type=_positive_int, default=d.max_concurrent_requests,
        help="Requests admitted at once (running + waiting); beyond it: 429 with Retry-After.")
    add("--max-body-bytes", type=_positive_int, default=d.max_body_bytes,
        help="Largest request body accepted (413 beyond).")
    add("--max-messages", type=_positive_int, default=d.max_messages,
        help="Most messages accepted in one chat request.")
    add("--max-tokens-limit", type=_positive_int, default=None,
        help="Largest max_tokens accepted. Default: the context length.")
    add("--queue-timeout", type=_positive_float, default=d.queue_timeout,
        help="Seconds a request may wait for its first token before it fails with 503.")
    add("--stream-idle-timeout", type=_positive_float, default=d.stream_idle_timeout,
        help="Seconds a running request may go without a new token before it fails.")
    add("--shutdown-timeout", type=_positive_float, default=d.shutdown_timeout,
        help="On SIGTERM, seconds requests in flight get to finish before the process exits.")
    add("--log-content", type=bool, default=d.log_content,
        help="Log prompt and answer text. OFF by default: these are patients' words.")
    add("--log-level", default=d.log_level,
        choices=["debug", "info", "warning", "error"], help="Log level.")
    add("--playground", type=bool, default=d.playground,
        help="Serve the consultation page at / (public; its API calls still need a key).")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    keys = list(args.api_key or [])
    keys += _csv(os.environ.get(ENV_PREFIX + "API_KEYS", ""))
    if args.api_key_file:
        keys += [
            line.strip() for line in args.api_key_file.read_text().splitlines() if line.strip()
        ]
    return ServeSettings(
        model=args.model,
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        distributed_executor_backend=args.distributed_executor_backend,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        dtype=args.dtype,
        kv_cache_space=args.kv_cache_space,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_prefix_caching=args.enable_prefix_caching,
        enforce_eager=args.enforce_eager,
        seed=args.seed,
        cache_dir=args.cache_dir,
        system_policy=SystemPolicy(args.system_policy),
        api_keys=list(dict.fromkeys(keys)),
        public_metrics=args.public_metrics,
        allowed_origins=args.allowed_origins,
        max_concurrent_requests=args.max_concurrent_requests,
        max_body_bytes=args.max_body_bytes,
        max_messages=args.max_messages,
        max_tokens_limit=args.max_tokens_limit,
        queue_timeout=args.queue_timeout,
        stream_idle_timeout=args.stream_idle_timeout,
        shutdown_timeout=args.shutdown_timeout,
        log_content=args.log_content,
        log_level=args.log_level,
        playground=args.playground,
    )
