"""Baichuan2-7B (HuatuoGPT2-7B) -> Llama.

Baichuan2-7B is Llama with two differences in how the weights are stored:
- q, k and v are one fused `W_pack` linear of shape [3 * hidden, hidden]; its output is
  unflattened as (3, hidden), so rows [0, h) are q, [h, 2h) are k, [2h, 3h) are v;
- `lm_head` is a NormHead: at inference every row is L2-normalised (`F.normalize(weight)`)
  before the matmul. Saving the normalised rows makes it a plain Llama `lm_head`.
The rotary embedding (base 10000, rotate-half) and RMSNorm are Llama's own.
"""

from __future__ import annotations

import torch

from adapters.checkpoint import gptq
from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.io import SourceCheckpoint
from adapters.checkpoint.llama import ROTARY_BUFFER_SUFFIX, finish_checks, llama_config
from adapters.checkpoint.plan import Plan, Rule, copy_rule

W_PACK = ".self_attn.W_pack."
PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def has_norm_head(config: dict) -> bool:
    """Baichuan2 (not Baichuan 1) normalises lm_head rows; its configs carry z_loss_weight
    and its tokenizer has 125696 pieces."""
    return "z_loss_weight" in config or config.get("vocab_size") == 125696


def normalise_rows(tensors: list[torch.Tensor], dtype: torch.dtype,
                   chunk_rows: int = 4096) -> list[torch.Tensor]:
    """F.normalize of every row (x / max(||x||, 1e-12)), computed in float32 whatever the
    storage dtype (the fold is then exact up to the final rounding), chunk by chunk and in
    place when the dtype stays: Baichuan2's lm_head is 125696 x 4096, and a float32 copy of it
    would more than double the converter's peak memory. Each row is computed alone, so the
    result does not depend on chunk_rows. The float32 chunk is one buffer reused: a fresh
    64 MB allocation per chunk costs more in page faults than the arithmetic."""
    weight = tensors[0]
    out = weight if weight.dtype == dtype else torch.empty(weight.shape, dtype=dtype)
    rows = torch.empty((min(chunk_rows, weight.shape[0]), *weight.shape[1:]),
                       dtype=torch.float32)
    norms = torch.empty((rows.shape[0], 1), dtype=torch.float32)
    for start in range(0, weight.shape[0], chunk_rows):
        chunk = weight[start:start + chunk_rows]
        block, norm = rows[:chunk.shape[0]], norms[:chunk.shape[0]]
        block.copy_(chunk)
        torch.linalg.vector_norm(block, dim=-1, keepdim=True, out=norm).clamp_min_(1e-12)
        out[start:start + chunk_rows].copy_(block.div_(norm))
    return [out]


def _split_rule(info, hidden: int, quant: dict | None) -> Rule:
    prefix, suffix = info.name.split(W_PACK)
    outputs = tuple(f"{prefix}.self_attn.{p}.{suffix}" for p in PROJECTIONS)
    if suffix == "weight":
        if info.shape != (3 * hidden, hidden):
            raise ConversionError(
                f"{info.file}: tensor {info.name!r} has shape {list(info.shape)}; a fused W_pack "
                f"for hidden_size {hidden} must be {[3 * hidden, hidden]}."
            )
        shapes = ((hidden, hidden),) * 3

        def split(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            # Row blocks of a contiguous tensor are contiguous views: no copy needed.
            return list(torch.split(tensors[0], hidden, dim=0))

        return Rule((info.name,), outputs, shapes, (info.dtype,) * 3, split, views=True)
    if quant is None:
        raise ConversionError(f"{info.file}: tensor {info.name!r} looks GPTQ-packed but the "
                              "checkpoint has no quantization_config / quantize_config.json.")
    bits = quant["bits"]
    if not gptq.split_sizes_exact([hidden] * 3, bits):
        raise ConversionError(
            f"{info.file}: tensor {info.name!r}: splitting W_pack into q/k/v of {hidden} outputs "
            f"each is not aligned to the {bits}-bit packing of qzeros ({32 // bits} values per "
            "int32), so it cannot be split exactly; dequantise and requantise the model instead."
        )
    if suffix == "g_idx":
        shapes = (info.shape,) * 3
    else:
        per = (hidden // (32 // bits)) if suffix == "qzeros" else hidden
        if info.shape[-1] != 3 * per:
            raise ConversionError(f"{info.file}: tensor {info.name!r} has shape "
                                  f"{list(info.shape)}; expected last dimension {3 * per}.")
        shapes = ((*info.shape[:-1], per),) * 3

    def split_packed(tensors: list[torch.Tensor], name: str = info.name) -> list[torch.Tensor]:
        return gptq.split_packed(name, tensors[0], [hidden] * 3, bits)

    return Rule((info.name,), outputs, shapes, (info.dtype,) * 3, split_packed)


def plan_baichuan2(config: dict, source: SourceCheckpoint, quant: dict | None) -> Plan:
    path = str(source.directory / "config.json")
    cfg = llama_config(
        config, path=path, num_key_value_heads=None, rope_theta=10000.0,
        max_positions=config.get("max_position_embeddings") or config.get("model_max_length")
        or 4096,
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
    )
    if quant is not None:
        cfg["quantization_config"] = quant
        cfg["torch_dtype"] = "float16"
    hidden = cfg["hidden_size"]
    norm_head = has_norm_head(config)
    rules, dropped = [], []
    for info in source.tensors.values():
        if info.name.endswith(ROTARY_BUFFER_SUFFIX):
            dropped.append(info.name)
        elif W_PACK in info.name:
            rules.append(_split_rule(info, hidden, quant))
        elif info.name.startswith("lm_head.") and info.name != "lm_head.weight":
            if norm_head:
                raise ConversionError(
                    f"{info.file}: tensor {info.name!r}: lm_head is quantised, and Baichuan2's "
                    "NormHead row normalisation cannot be folded into packed weights exactly."
                )
            rules.append(copy_rule(info))
        elif info.name == "lm_head.weight" and norm_head:
            rules.append(Rule((info.name,), (info.name,), (info.shape,), (info.dtype,),
                              normalise_rows, takes_dtype=True))
        else:
            rules.append(copy_rule(info))
    steps = ["split self_attn.W_pack into q_proj/k_proj/v_proj (rows [0,h), [h,2h), [2h,3h))"]
    if quant is not None:
        steps.append(f"GPTQ {quant['bits']}-bit W_pack tensors (qweight, qzeros, scales, g_idx) "
                     "split along the output dimension, bit-exact")
    if norm_head:
        steps.append("NormHead folded: lm_head rows L2-normalised in float32 (F.normalize)")
    steps.append("config: BaichuanForCausalLM -> LlamaForCausalLM (RoPE base 10000)")
    if dropped:
        steps.append(f"dropped {len(dropped)} saved rotary inv_freq buffers (recomputed)")
    return finish_checks(Plan("baichuan2", cfg, rules, steps, dropped, quant), source)
