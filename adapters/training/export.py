"""Export: a complete Llama-layout checkpoint that `huatuo serve --model DIR` serves as is.

safetensors weights, config.json (LlamaForCausalLM), the fast tokenizer with the HuatuoGPT2 chat
template (so any OpenAI-compatible server renders the same prompt as ours) and HuatuoGPT2's
generation_config. LoRA runs are merged into the base weights, and the adapter is kept beside
(`export/adapter`): a PEFT adapter directory that `huatuo serve --lora NAME=DIR` serves as is, with
`huatuo_base.json` recording which base checkpoint it belongs to (huatuogpt2/adapter_base.py).

The trainer first saves what it trained (`Trainer.save_model`, which also gathers ZeRO-3 shards);
the export then reloads it on the CPU, so it works the same after single- and multi-GPU runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from huatuogpt2.adapter_base import write_base_record
from huatuogpt2.checkpoint_metadata import add_chat_template, write_generation_config

logger = logging.getLogger(__name__)

DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def _torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


# Tokenizer files are copied from the base checkpoint byte for byte: training never changes the
# tokenizer, and re-saving through transformers would rewrite what the converter chose.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "added_tokens.json")


def copy_tokenizer(tokenizer_dir: Path, staging: Path) -> None:
    if not (Path(tokenizer_dir) / "tokenizer.json").exists():
        raise FileNotFoundError(f"{tokenizer_dir} has no tokenizer.json (fast tokenizer): "
                                "convert the base checkpoint with `huatuo convert` first")
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).exists():
            shutil.copy2(Path(tokenizer_dir) / name, staging / name)


def _finish(model, tokenizer_dir: Path, staging: Path, out_dir: Path, max_new_tokens: int,
            info: dict | None) -> Path:
    arch = type(model).__name__
    if arch != "LlamaForCausalLM":
        raise ValueError(f"the trained model is {arch}, not LlamaForCausalLM: convert the base "
                         "checkpoint with `huatuo convert` before training")
    model.config.use_cache = True  # training turned the KV cache off; serving wants it
    model.save_pretrained(staging, safe_serialization=True)
    copy_tokenizer(tokenizer_dir, staging)
    add_chat_template(staging)
    overrides = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    write_generation_config(staging, **overrides)
    if info is not None:
        (staging / "training_info.json").write_text(
            json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    # Replace the previous export only once the new one is complete.
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
    logger.info("Exported a servable checkpoint to %s", out_dir)
    return out_dir


def _staging(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def export_full(trained_dir: Path, tokenizer_dir: Path, out_dir: Path, dtype: str = "bf16",
                max_new_tokens: int = 0, info: dict | None = None) -> Path:
    """A fully fine-tuned model saved by the trainer -> servable checkpoint."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(trained_dir, dtype=_torch_dtype(dtype))
    return _finish(model, tokenizer_dir, _staging(out_dir), out_dir, max_new_tokens, info)


def merge_lora(base_dir: Path, adapter_dir: Path, dtype: str = "fp32"):
    """Base weights + LoRA adapter -> one plain model (W + B A * alpha / r folded in)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # Merge in fp32 so the folded weights are exact before any cast to bf16.
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    return merged.to(_torch_dtype(dtype))


# What a PEFT adapter directory needs (vLLM and PEFT read these); the trainer's other files
# (training_args.bin, README.md) are not part of the adapter.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def copy_adapter(adapter_dir: Path, base_dir: Path, out: Path) -> None:
    """The servable adapter: PEFT's files plus the record of its base checkpoint."""
    out.mkdir()
    for name in ADAPTER_FILES:
        shutil.copy2(Path(adapter_dir) / name, out / name)
    write_base_record(out, base_dir)


def export_lora(base_dir: Path, adapter_dir: Path, tokenizer_dir: Path, out_dir: Path,
                dtype: str = "bf16", max_new_tokens: int = 0, keep_adapter: bool = True,
                info: dict | None = None) -> Path:
    model = merge_lora(base_dir, adapter_dir, dtype)
    staging = _staging(out_dir)
    if keep_adapter:
        copy_adapter(adapter_dir, base_dir, staging / "adapter")
    return _finish(model, tokenizer_dir, staging, out_dir, max_new_tokens, info)
