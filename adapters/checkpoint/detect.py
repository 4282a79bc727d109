"""Which layout is this checkpoint? Decided from config.json and the weight names together."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.checkpoint import baichuan, gptq, llama, yi
from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.io import SourceCheckpoint
from adapters.checkpoint.plan import Plan


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not directory.is_dir():
        raise ConversionError(f"{directory}: not a directory.")
    if not path.is_file():
        raise ConversionError(f"{path}: missing; a checkpoint directory needs its config.json.")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: expected a JSON object.")
    return config


def _identity(config: dict) -> tuple[str, str]:
    architectures = config.get("architectures") or [""]
    return str(architectures[0]), str(config.get("model_type", "")).lower()


def uses_alibi(config: dict) -> bool:
    """Baichuan2-13B: ALiBi attention biases instead of RoPE. Its config has no
    max_position_embeddings (only model_max_length) and hidden_size 5120; 7B has both."""
    explicit = str(config.get("position_embedding", "")).lower()
    if explicit:
        return explicit == "alibi"
    return "max_position_embeddings" not in config or config.get("hidden_size") == 5120


def guess_layout(config: dict, names: list[str]) -> str:
    """'llama', 'baichuan2' or 'yi'; raises ConversionError explaining a refusal."""
    architecture, model_type = _identity(config)
    fused = any(baichuan.W_PACK in n for n in names)
    if fused or model_type == "baichuan" or architecture.startswith("Baichuan"):
        if uses_alibi(config):
            raise ConversionError(
                "This is a Baichuan 13B-style checkpoint (ALiBi position biases, no rotary "
                "embedding). Llama has no ALiBi, so it cannot be served through vLLM's Llama "
                "path; it would need an ALiBi-capable model class (vLLM <= 0.23 had "
                "BaichuanForCausalLM). Only the RoPE variant (Baichuan2-7B, HuatuoGPT2-7B) is "
                "converted."
            )
        if not fused:
            raise ConversionError(
                f"config.json says {architecture or model_type} but no tensor is named "
                "'*.self_attn.W_pack.*': not the published Baichuan2 layout."
            )
        return "baichuan2"
    if model_type == "yi" or architecture == "YiForCausalLM" or yi.uses_old_norm_names(names):
        return "yi"
    if model_type == "llama" or architecture == "LlamaForCausalLM":
        return "llama"
    raise ConversionError(
        f"Unknown layout: architecture {architecture or '?'} (model_type {model_type or '?'}). "
        "This converter knows Baichuan2-7B (HuatuoGPT2-7B), Yi (HuatuoGPT2-34B) and Llama "
        "checkpoints; another architecture would need its own mapping onto Llama, and only "
        "models that are Llama underneath (RoPE, RMSNorm, SwiGLU, no biases) can have one."
    )


def plan_conversion(directory: Path, source: SourceCheckpoint | None = None) -> Plan:
    config = read_config(directory)
    source = source or SourceCheckpoint(directory)
    quant = gptq.read_quantization(directory, config)
    layout = guess_layout(config, list(source.tensors))
    if layout == "baichuan2":
        return baichuan.plan_baichuan2(config, source, quant)
    if layout == "yi":
        return yi.plan_yi(config, source, quant)
    return llama.plan_llama(config, source, quant)

