"""The target: a Llama config and the tensor shapes it implies; Llama sources pass through."""

from __future__ import annotations

from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.gptq import PACKED_SUFFIXES
from adapters.checkpoint.io import SourceCheckpoint
from adapters.checkpoint.plan import Plan, check_consumed, check_shapes, copy_rule

# Dropped everywhere: RoPE frequency buffers some old checkpoints saved; Llama recomputes them.
ROTARY_BUFFER_SUFFIX = "rotary_emb.inv_freq"


def _require(config: dict, key: str, path: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
        raise ConversionError(f"{path}: config.json has no valid {key!r} (got {value!r}).")
    return value


def llama_config(config: dict, *, path: str, num_key_value_heads: int | None,
                 rope_theta: float, max_positions: int, rms_norm_eps: float) -> dict:
    """A LlamaForCausalLM config.json (readable by transformers 4.x and 5.x and vLLM)."""
    hidden = _require(config, "hidden_size", path)
    heads = _require(config, "num_attention_heads", path)
    if hidden % heads:
        raise ConversionError(f"{path}: hidden_size {hidden} is not a multiple of "
                              f"num_attention_heads {heads}.")
    kv_heads = num_key_value_heads or heads
    if heads % kv_heads:
        raise ConversionError(f"{path}: num_attention_heads {heads} is not a multiple of "
                              f"num_key_value_heads {kv_heads}.")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": _require(config, "vocab_size", path),
        "hidden_size": hidden,
        "intermediate_size": _require(config, "intermediate_size", path),
        "num_hidden_layers": _require(config, "num_hidden_layers", path),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "hidden_act": config.get("hidden_act", "silu"),
        "max_position_embeddings": max_positions,
        "rms_norm_eps": rms_norm_eps,
        # Both spellings: transformers 4.x reads rope_theta, 5.x rope_parameters.
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": config.get("bos_token_id", 1),
        "eos_token_id": config.get("eos_token_id", 2),
        "pad_token_id": config.get("pad_token_id", 0),
        "initializer_range": config.get("initializer_range", 0.02),
        "use_cache": True,
    }


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every unquantized Llama tensor name with its shape."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,),
              "lm_head.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        })
    return shapes


def check_known_outputs(plan: Plan, expected: set[str], source: SourceCheckpoint) -> None:
    """Every output must be a Llama tensor (a packed GPTQ part of one, when quantised): a name
    Llama does not load would be silently ignored by vLLM, giving a different model."""
    linears = {name.removesuffix(".weight") for name in expected}
    for rule in plan.rules:
        for name in rule.outputs:
            prefix, _, suffix = name.rpartition(".")
            packed = (plan.quantization is not None and prefix in linears
                      and suffix in (*PACKED_SUFFIXES, "bias"))
            if name not in expected and not packed:
                info = source.tensors[rule.inputs[0]]
                raise ConversionError(
                    f"{info.file}: tensor {info.name!r} is not part of the {plan.layout} layout "
                    "this converter knows (no Llama tensor corresponds to it); refusing to drop "
                    "weights silently."
                )


def finish_checks(plan: Plan, source: SourceCheckpoint) -> Plan:
    check_consumed(source, plan.rules, plan.dropped, plan.layout)
    expected = expected_shapes(plan.llama_config)
    check_known_outputs(plan, set(expected), source)
    if plan.quantization is not None:
        # Packed GPTQ tensors have their own shapes; gptq.py checks the projections it splits.
        expected = {k: v for k, v in expected.items() if k.count(".") < 4 or "norm" in k}
    check_shapes(plan.rules, expected, source)
    return plan


def plan_llama(config: dict, source: SourceCheckpoint, quantization: dict | None) -> Plan:
    """An already-Llama checkpoint: tensors copied byte for byte, config kept as is."""
    path = str(source.directory / "config.json")
    rope = config.get("rope_parameters") or {}
    cfg = llama_config(
        config, path=path,
        num_key_value_heads=config.get("num_key_value_heads"),
        rope_theta=float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0),
        max_positions=config.get("max_position_embeddings", 4096),
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
    )
    # Keep the source's own settings (rope scaling, tied embeddings, ...) untouched.
    out_config = {**config}
    rules, dropped = [], []
    for info in source.tensors.values():
        if info.name.endswith(ROTARY_BUFFER_SUFFIX):
            dropped.append(info.name)
        else:
            rules.append(copy_rule(info))
    plan = Plan("llama", out_config, rules, ["weights copied unchanged"], dropped, quantization)
    check_consumed(source, rules, dropped, "llama")
    if not config.get("tie_word_embeddings") and quantization is None:
        check_shapes(rules, expected_shapes(cfg), source)
    return plan
