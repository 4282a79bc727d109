"""GPTQ: splitting a packed fused projection along its outputs is bit-exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapters.checkpoint import gptq
from adapters.checkpoint.errors import ConversionError
from tests.support.published_checkpoints import dequantize_gptq, pack_gptq


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_split_equals_rows_of_the_dequantised_fused_weight(bits: int) -> None:
    hidden, in_features = 64, 96
    packed = pack_gptq(torch.zeros(3 * hidden, in_features), bits, 32,
                       torch.Generator().manual_seed(bits))
    fused = dequantize_gptq(*packed.values(), bits=bits)
    parts = {name: gptq.split_packed(f"x.W_pack.{name}", t, [hidden] * 3, bits)
             for name, t in packed.items()}
    for i in range(3):
        part = dequantize_gptq(*(parts[n][i] for n in gptq.PACKED_SUFFIXES), bits=bits)
        assert torch.equal(part, fused[i * hidden:(i + 1) * hidden])
    # The converter's own dequantiser (used by --verify) agrees with the independent one.
    assert torch.equal(gptq.dequantize(*packed.values(), bits=bits), fused)


def test_split_exactness_rule() -> None:
    assert gptq.split_sizes_exact([4096] * 3, 4)
    assert not gptq.split_sizes_exact([4100] * 3, 4)  # 4100 / 8 values per int32


def test_mismatched_packed_width() -> None:
    with pytest.raises(ConversionError, match="does not match the fused output sizes"):
        gptq.split_packed("x.W_pack.scales", torch.zeros(2, 10), [4, 4, 4], 4)


def test_quantization_settings(tmp_path: Path) -> None:
    assert gptq.read_quantization(tmp_path, {}) is None
    (tmp_path / "quantize_config.json").write_text(json.dumps({"bits": 4, "group_size": 128}))
    assert gptq.read_quantization(tmp_path, {})["bits"] == 4
    with pytest.raises(ConversionError, match="3 bits"):
        gptq.read_quantization(tmp_path, {"quantization_config": {"bits": 3}})
    with pytest.raises(ConversionError, match="'awq' is not supported"):
        gptq.read_quantization(tmp_path, {"quantization_config": {"quant_method": "awq"}})
