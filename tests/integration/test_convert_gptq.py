"""GPTQ-packed HuatuoGPT2-7B-4bits/-8bits-like checkpoints convert bit-exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adapters.checkpoint.convert import Options, convert
from adapters.checkpoint.errors import ConversionError
from tests.support.published_checkpoints import (
    build_baichuan2_gptq,
    dequantize_gptq,
    load_weights,
    pack_gptq,
    save_weights,
)


@pytest.mark.parametrize("bits", [4, 8])
def test_packed_w_pack_splits_exactly(tmp_path: Path, bits: int) -> None:
    src = build_baichuan2_gptq(tmp_path / "src", bits=bits)
    manifest = convert(src, tmp_path / "out", Options(progress=False, verify=True))
    assert manifest["verification"]["passed"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "gptq"
    assert config["quantization_config"]["bits"] == bits
    assert config["torch_dtype"] == "float16"
    before, after = load_weights(src), load_weights(tmp_path / "out")
    for n in range(2):
        p = f"model.layers.{n}.self_attn."
        fused = dequantize_gptq(*(before[f"{p}W_pack.{s}"]
                                  for s in ("qweight", "qzeros", "scales", "g_idx")), bits=bits)
        for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            part = dequantize_gptq(*(after[f"{p}{proj}.{s}"]
                                     for s in ("qweight", "qzeros", "scales", "g_idx")), bits=bits)
            assert torch.equal(part, fused[i * 128:(i + 1) * 128])
        # Other packed layers are copied bit for bit.
        assert torch.equal(after[f"model.layers.{n}.mlp.up_proj.qweight"],
                           before[f"model.layers.{n}.mlp.up_proj.qweight"])
    folded = F.normalize(before["lm_head.weight"].float()).half()
    assert torch.equal(after["lm_head.weight"], folded)


def test_quantised_norm_head_is_refused(tmp_path: Path) -> None:
    src = build_baichuan2_gptq(tmp_path / "src")
    tensors = load_weights(src)
    head = tensors.pop("lm_head.weight")
    for suffix, value in pack_gptq(head, 4, 16, torch.Generator().manual_seed(0)).items():
        tensors[f"lm_head.{suffix}"] = value
    (src / "model.safetensors").unlink()
    save_weights(src, tensors, "safetensors", 1)
    with pytest.raises(ConversionError, match="lm_head is quantised.*NormHead"):
        convert(src, tmp_path / "out", Options(progress=False))


def test_packed_tensors_without_quantize_config_are_refused(tmp_path: Path) -> None:
    src = build_baichuan2_gptq(tmp_path / "src")
    (src / "quantize_config.json").unlink()
    with pytest.raises(ConversionError, match="looks GPTQ-packed"):
        convert(src, tmp_path / "out", Options(progress=False))
