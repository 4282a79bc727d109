"""Yi (HuatuoGPT2-34B) -> Llama.

Yi is Llama with grouped-query attention (8 KV heads for 56 query heads) and rope_theta 5e6.
The remote code that HuatuoGPT2-34B names (`YiForCausalLM`, model_type "Yi") called the two
per-layer RMSNorms `ln1` (before attention) and `ln2` (before the MLP); everything else already
has Llama's names and layout.
"""

from __future__ import annotations

import re

from adapters.checkpoint.io import SourceCheckpoint
from adapters.checkpoint.llama import ROTARY_BUFFER_SUFFIX, finish_checks, llama_config
from adapters.checkpoint.plan import Plan, copy_rule

RENAMES = (
    (re.compile(r"^(model\.layers\.\d+)\.ln1\.weight$"), r"\1.input_layernorm.weight"),
    (re.compile(r"^(model\.layers\.\d+)\.ln2\.weight$"), r"\1.post_attention_layernorm.weight"),
)


def llama_name(name: str) -> str:
    for pattern, replacement in RENAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return name


def uses_old_norm_names(names: list[str]) -> bool:
    return any(".ln1." in n or ".ln2." in n for n in names)


def plan_yi(config: dict, source: SourceCheckpoint, quant: dict | None) -> Plan:
    path = str(source.directory / "config.json")
    cfg = llama_config(
        config, path=path, num_key_value_heads=config.get("num_key_value_heads"),
        rope_theta=float(config.get("rope_theta", 5000000.0)),
        max_positions=config.get("max_position_embeddings", 4096),
        rms_norm_eps=config.get("rms_norm_eps", 1e-5),
    )
    if config.get("rope_scaling"):
        cfg["rope_scaling"] = config["rope_scaling"]
    if quant is not None:
        cfg["quantization_config"] = quant
        cfg["torch_dtype"] = "float16"
    rules, dropped, renamed = [], [], 0
    for info in source.tensors.values():
        if info.name.endswith(ROTARY_BUFFER_SUFFIX):
            dropped.append(info.name)
            continue
        new = llama_name(info.name)
        renamed += new != info.name
        rules.append(copy_rule(info, new))
    steps = []
    if renamed:
        steps.append(f"renamed {renamed} norms: ln1 -> input_layernorm, "
                     "ln2 -> post_attention_layernorm")
    steps.append(f"config: YiForCausalLM -> LlamaForCausalLM (GQA {cfg['num_attention_heads']}/"
                 f"{cfg['num_key_value_heads']} heads, rope_theta {cfg['rope_theta']:g})")
    if dropped:
        steps.append(f"dropped {len(dropped)} saved rotary inv_freq buffers (recomputed)")
    return finish_checks(Plan("yi", cfg, rules, steps, dropped, quant), source)
