"""Layout detection from config.json and weight names, and the refusals."""

from __future__ import annotations

import pytest

from adapters.checkpoint.detect import guess_layout
from adapters.checkpoint.errors import ConversionError

BAICHUAN_NAMES = ["model.layers.0.self_attn.W_pack.weight", "lm_head.weight"]
BAICHUAN2_7B = {"architectures": ["BaichuanForCausalLM"], "model_type": "baichuan",
                "hidden_size": 4096, "max_position_embeddings": 4096, "model_max_length": 4096}
# Baichuan2-13B-Base config.json as released: no max_position_embeddings, hidden 5120.
BAICHUAN2_13B = {"architectures": ["BaichuanForCausalLM"], "model_type": "baichuan",
                 "hidden_size": 5120, "model_max_length": 4096}


def test_baichuan2_7b() -> None:
    assert guess_layout(BAICHUAN2_7B, BAICHUAN_NAMES) == "baichuan2"


def test_baichuan2_13b_is_refused_with_the_reason() -> None:
    with pytest.raises(ConversionError, match="ALiBi.*Llama has no ALiBi"):
        guess_layout(BAICHUAN2_13B, BAICHUAN_NAMES)


def test_explicit_alibi_setting_wins() -> None:
    with pytest.raises(ConversionError, match="ALiBi"):
        guess_layout({**BAICHUAN2_7B, "position_embedding": "ALIBI"}, BAICHUAN_NAMES)


def test_baichuan_config_without_w_pack() -> None:
    with pytest.raises(ConversionError, match="W_pack"):
        guess_layout(BAICHUAN2_7B, ["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("config", [
    {"architectures": ["YiForCausalLM"], "model_type": "Yi"},
    {"model_type": "yi"},
    {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},  # with old norm names
])
def test_yi(config: dict) -> None:
    assert guess_layout(config, ["model.layers.0.ln1.weight"]) == "yi"


def test_llama() -> None:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    assert guess_layout(config, ["model.layers.0.input_layernorm.weight"]) == "llama"


@pytest.mark.parametrize("config", [
    {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
    {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"},
    {},
])
def test_unknown_layouts_are_refused(config: dict) -> None:
    with pytest.raises(ConversionError, match="Unknown layout.*Llama underneath"):
        guess_layout(config, ["transformer.h.0.attn.c_attn.weight"])
