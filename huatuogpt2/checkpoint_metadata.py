"""Serving metadata shared by every checkpoint we write (demo, converted, trained).

Keeps the HuatuoGPT2 generation defaults and the chat template in one place, so the converter,
the training exporter and the demo model agree with the gateway.
"""

from __future__ import annotations

import json
from pathlib import Path

from huatuogpt2.prompt_format import CHAT_TEMPLATE

BOS_TOKEN_ID = 1
EOS_TOKEN_ID = 2
PAD_TOKEN_ID = 0

# Upstream HuatuoGPT2 generation_config.json (13B/34B).
HUATUO_GENERATION_DEFAULTS: dict = {
    "temperature": 0.3,
    "top_k": 5,
    "top_p": 0.85,
    "repetition_penalty": 1.1,
    "max_new_tokens": 2048,
    "do_sample": True,
}


def write_generation_config(directory: Path, **overrides: object) -> None:
    config = {
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "pad_token_id": PAD_TOKEN_ID,
        **HUATUO_GENERATION_DEFAULTS,
        **overrides,
    }
    (directory / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n")


def add_chat_template(directory: Path) -> None:
    """Put the HuatuoGPT2 chat template into tokenizer_config.json (keeping everything else)."""
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def read_generation_defaults(directory: Path) -> dict:
    """Sampling defaults from a checkpoint's generation_config.json (empty when absent)."""
    path = directory / "generation_config.json"
    if not path.exists():
        return {}
    config = json.loads(path.read_text())
    keys = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")
    defaults = {k: config[k] for k in keys if config.get(k) is not None}
    if config.get("do_sample") is False:
        defaults["temperature"] = 0.0
    return defaults
