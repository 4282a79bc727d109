"""`huatuo train` configuration: dataclasses with help text, loaded from YAML, overridden by flags.

Every scalar field is also a flag named `--<section>.<field>` (e.g. `--training.max_steps 20`,
`--model.path ./ckpt`, `--lora.enabled true`); lists take comma-separated values. Data sources
are YAML-only. Relative data-source paths (and `model.path`, `training.deepspeed`) resolve
against the YAML file's directory when they exist there, otherwise against the working
directory. `training.output_dir` is always relative to the working directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# `model.path` value that builds a tiny random Llama (huatuogpt2.demo_checkpoint) whose tokenizer is
# trained on the training data: for the CPU demo and tests.
TINY_RANDOM = "tiny-random"


def _f(default, help_text: str, **kwargs):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help_text}, **kwargs)
    return field(default=default, metadata={"help": help_text}, **kwargs)


@dataclass
class SourceConfig:
    name: str = _f("", "Source name (shown in the summary and the source-mix plot).")
    path: str = _f("", "Data file (JSON list or JSONL).")
    format: str = _f("conversations", "conversations | upstream | sharegpt.")
    priority: float = _f(1.0, "Sampling weight of each sample slot (upstream: web 32 ... SFT 1).")
    epochs: float = _f(1.0, "Data epochs: slots per sample (upstream repeats SFT 3 times).")


@dataclass
class ModelConfig:
    path: str = _f("", f"Base checkpoint in Llama layout (after `huatuo convert`), or "
                       f"'{TINY_RANDOM}' for a tiny random Llama built on the spot.")
    dtype: str = _f("bf16", "Training precision: bf16 | fp32.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass "
                                             "(less memory, ~30% slower).")
    tiny_hidden_size: int = _f(128, f"Hidden size of the '{TINY_RANDOM}' model.")
    tiny_layers: int = _f(2, f"Layers of the '{TINY_RANDOM}' model.")
    tiny_heads: int = _f(2, f"Attention heads of the '{TINY_RANDOM}' model (head_dim >= 32).")
    tiny_vocab_size: int = _f(2048, f"Tokenizer vocabulary of the '{TINY_RANDOM}' model.")


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list,
                                        metadata={"help": "Data sources (YAML only)."})
    max_seq_len: int = _f(4096, "Packed row length in tokens (upstream: 4096).")
    seed: int = _f(42, "Seed of the priority-sampling draw (fixes the training order).")
    skip_invalid: bool = _f(False, "Skip and count malformed records instead of failing.")
    packing: str = _f("bfd", "How samples fill rows: bfd (best-fit decreasing within windows "
                             "of the priority order, ~97%+ full) | greedy (upstream: in order).")
    packing_window_rows: int = _f(64, "bfd: window of the training order packed together, in "
                                      "rows' worth of tokens (larger: fuller rows, samples "
                                      "move further from their drawn position).")
    truncate_long_samples: bool = _f(True, "A sample longer than max_seq_len: true = cut it to "
                                           "max_seq_len (upstream; counted, logged and in "
                                           "data_summary.json); false = fail naming it.")


@dataclass
class TrainingConfig:
    output_dir: str = _f("runs/huatuo", "Run directory: checkpoints, logs, plots, export.")
    learning_rate: float = _f(1e-4, "Peak learning rate (upstream: 1e-4).")
    weight_decay: float = _f(0.1, "AdamW weight decay (upstream: 0.1; not on norms/biases).")
    num_epochs: float = _f(2.0, "Passes over the packed data (upstream: 2).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: use num_epochs).")
    per_device_batch_size: int = _f(1, "Packed rows per device per micro-step.")
    gradient_accumulation_steps: int = _f(8, "Micro-steps per optimizer step.")
    warmup_ratio: float = _f(0.01, "Linear warm-up, as a fraction of all steps (upstream: 1%).")
    lr_scheduler: str = _f("cosine", "Schedule after warm-up (transformers name): cosine, ...")
    max_grad_norm: float = _f(1.0, "Gradient clipping.")
    logging_steps: int = _f(10, "Log the loss every N steps.")
    save_steps: int = _f(500, "Save a resumable checkpoint every N steps.")
    save_total_limit: int = _f(3, "Keep at most N checkpoints (0: keep all).")
    resume: str = _f("", "Resume: a checkpoint directory, or 'latest' (newest checkpoint-* in "
                         "output_dir). Empty: start fresh.")
    seed: int = _f(42, "Seed for initialisation (LoRA) and dropout.")
    deepspeed: str = _f("", "DeepSpeed config JSON (multi-GPU ZeRO; see configs/ds_zero3.json).")
    dataloader_workers: int = _f(0, "DataLoader worker processes.")
    use_cpu: bool = _f(False, "Train on the CPU even when a GPU is visible.")


@dataclass
class LoraSettings:
    enabled: bool = _f(False, "Train LoRA adapters (peft) instead of all weights.")
    r: int = _f(16, "LoRA rank.")
    alpha: int = _f(32, "LoRA alpha (scale = alpha / r).")
    dropout: float = _f(0.05, "LoRA dropout.")
    target_modules: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Llama modules that get adapters.")
    save_adapter: bool = _f(True, "Also export the adapter alone (export/adapter).")


@dataclass
class ExportConfig:
    dir: str = _f("", "Where the servable checkpoint goes (default: <output_dir>/export).")
    dtype: str = _f("", "Saved weight dtype: bf16 | fp32 (default: the training dtype).")
    max_new_tokens: int = _f(0, "generation_config max_new_tokens (0: HuatuoGPT2's 2048).")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    export: ExportConfig = field(default_factory=ExportConfig)

    @property
    def export_dir(self) -> Path:
        return Path(self.export.dir or Path(self.training.output_dir) / "export")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


class ConfigError(ValueError):
    pass


def _section_types() -> dict[str, type]:
    return typing.get_type_hints(TrainConfig)


def _build(cls: type, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if hint == list[SourceConfig]:
            if not isinstance(value, list):
                raise ConfigError(f"{where}.{key}: must be a list")
            kwargs[key] = [_build(SourceConfig, v, f"{where}.{key}[{i}]")
                           for i, v in enumerate(value)]
        else:
            kwargs[key] = _coerce(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value, hint, where: str):
    if value is None:
        raise ConfigError(f"{where}: must not be empty")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint == list[str]:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [str(v) for v in value]
        raise ConfigError(f"{where}: expected a list")
    try:
        return hint(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from exc


def load_config(path: Path | None, overrides: dict[str, str] | None = None) -> TrainConfig:
    """YAML file (optional) + `section.field -> value` overrides; paths resolved (see module)."""
    raw: dict = {}
    if path is not None:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{section}: must be a mapping")
        raw[section][key] = value
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    types = _section_types()
    config = TrainConfig(**{name: _build(types[name], raw.get(name, {}), name)
                            for name in SECTIONS})
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    for source in config.data.sources:
        source.path = _resolve(source.path, base)
    if config.model.path and config.model.path != TINY_RANDOM:
        config.model.path = _resolve(config.model.path, base)
    if config.training.deepspeed:
        config.training.deepspeed = _resolve(config.training.deepspeed, base)
    validate(config)
    return config


def _resolve(value: str, base: Path) -> str:
    candidate = Path(value).expanduser()
    if not candidate.is_absolute() and (base / candidate).exists():
        return str((base / candidate).resolve())
    return str(candidate)


def validate(config: TrainConfig) -> None:
    if not config.model.path:
        raise ConfigError("model.path is required (a Llama-layout checkpoint, or "
                          f"'{TINY_RANDOM}')")
    if config.model.dtype not in ("bf16", "fp32"):
        raise ConfigError(f"model.dtype must be bf16 or fp32, got {config.model.dtype!r}")
    if config.export.dtype not in ("", "bf16", "fp32"):
        raise ConfigError(f"export.dtype must be bf16 or fp32, got {config.export.dtype!r}")
    if not config.data.sources:
        raise ConfigError("data.sources: at least one source is required")
    if config.data.packing not in ("bfd", "greedy"):
        raise ConfigError(f"data.packing must be bfd or greedy, got {config.data.packing!r}")
    if config.data.packing_window_rows < 1:
        raise ConfigError("data.packing_window_rows must be >= 1")
    names = [s.name for s in config.data.sources]
    for i, source in enumerate(config.data.sources):
        if not source.name or not source.path:
            raise ConfigError(f"data.sources[{i}]: 'name' and 'path' are required")
        if source.format not in ("conversations", "upstream", "sharegpt"):
            raise ConfigError(f"data.sources[{i}].format: conversations, upstream or sharegpt")
        if source.priority <= 0 or source.epochs <= 0:
            raise ConfigError(f"data.sources[{i}]: priority and epochs must be > 0")
    if len(set(names)) != len(names):
        raise ConfigError("data.sources: names must be unique")
    if config.data.max_seq_len < 8:
        raise ConfigError("data.max_seq_len is too small")


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """One `--section.field` flag per scalar/list field, help text from the dataclasses."""
    types = _section_types()
    for section, cls in types.items():
        group = parser.add_argument_group(f"{section} (overrides the YAML)")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] == list[SourceConfig]:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kind = hints[f.name]
            metavar = {bool: "BOOL", int: "N", float: "X", list[str]: "A,B"}.get(kind, "VALUE")
            group.add_argument(f"--{section}.{f.name}", dest=f"override:{section}.{f.name}",
                               metavar=metavar, default=None,
                               # argparse %-formats help text.
                               help=f"{f.metadata.get('help', '')} (default: {default!r})"
                               .replace("%", "%%"))


def overrides_from_args(args: argparse.Namespace) -> dict[str, str]:
    return {k.split(":", 1)[1]: v for k, v in vars(args).items()
            if k.startswith("override:") and v is not None}
