"""GPTQ-packed checkpoints (HuatuoGPT2-7B-4bits/-8bits, -34B-8bits).

A GPTQ linear layer stores, for a weight of shape [out, in]:
  qweight [in * bits / 32, out] int32   (input rows packed)
  qzeros  [in / group, out * bits / 32] int32   (output columns packed)
  scales  [in / group, out]
  g_idx   [in]                          (input row -> group, identical for every output)
Splitting a fused projection along its OUTPUT dimension (Baichuan's W_pack into q/k/v) is
exact when the cut falls on a packing boundary of qzeros: then the three parts are GPTQ layers
in their own right, bit for bit. Anything else would need dequantising and requantising, which
changes the model, so we refuse.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adapters.checkpoint.errors import ConversionError

PACKED_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


def read_quantization(directory: Path, config: dict) -> dict | None:
    """The GPTQ settings from config.json's quantization_config or quantize_config.json."""
    quant = config.get("quantization_config")
    side_file = directory / "quantize_config.json"
    if quant is None and side_file.exists():
        quant = json.loads(side_file.read_text())
    if quant is None:
        return None
    method = str(quant.get("quant_method", "gptq")).lower()
    if method != "gptq":
        raise ConversionError(
            f"{directory}: quantization method {method!r} is not supported; only GPTQ-packed "
            "checkpoints (the published -4bits/-8bits variants) are."
        )
    bits = int(quant.get("bits", 0))
    if bits not in (2, 4, 8):
        raise ConversionError(
            f"{directory}: GPTQ with {bits} bits packs values across int32 boundaries; only "
            "2/4/8-bit layers can be split exactly."
        )
    return {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": int(quant.get("group_size", 128)),
        "desc_act": bool(quant.get("desc_act", False)),
        "sym": bool(quant.get("sym", True)),
        **({"checkpoint_format": quant["checkpoint_format"]}
           if "checkpoint_format" in quant else {}),
    }


def split_sizes_exact(sizes: list[int], bits: int) -> bool:
    per_int = 32 // bits
    return all(size % per_int == 0 for size in sizes)


def split_packed(name: str, tensor: torch.Tensor, sizes: list[int], bits: int
                 ) -> list[torch.Tensor]:
    """Split one packed tensor of a fused layer along the output dimension into `sizes`."""
    suffix = name.rsplit(".", 1)[-1]
    if suffix == "g_idx":
        return [tensor.clone() for _ in sizes]  # input-side: shared by every part
    if suffix == "qzeros":
        per_int = 32 // bits
        parts = [s // per_int for s in sizes]
    elif suffix in ("qweight", "scales", "bias"):
        parts = sizes
    else:
        raise ConversionError(f"tensor {name!r}: unknown GPTQ tensor kind {suffix!r}.")
    if tensor.shape[-1] != sum(parts):
        raise ConversionError(
            f"tensor {name!r}: last dimension {tensor.shape[-1]} does not match the fused "
            f"output sizes {sizes} ({parts} packed)."
        )
    return [t.clone() for t in torch.split(tensor, parts, dim=-1)]


def _unpack(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """int32 words -> the 32/bits small values they hold, little end first, along `dim`."""
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    mask = (1 << bits) - 1
    if dim == 0:
        values = (packed.unsqueeze(1) >> shifts.view(1, -1, 1)) & mask
        return values.reshape(-1, packed.shape[1])
    values = (packed.unsqueeze(2) >> shifts.view(1, 1, -1)) & mask
    return values.reshape(packed.shape[0], -1)


def dequantize(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
               g_idx: torch.Tensor, bits: int) -> torch.Tensor:
    """The float32 weight [out, in] of a GPTQ (v1 format: zeros stored minus one) layer."""
    weight = _unpack(qweight, bits, 0).float()  # [in, out]
    zeros = _unpack(qzeros, bits, 1).float() + 1  # [groups, out]
    groups = g_idx.long()
    return ((weight - zeros[groups]) * scales.float()[groups]).t().contiguous()
