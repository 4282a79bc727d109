"""`huatuo convert --verify`: prove the conversion numerically on the real checkpoint.

Two forward passes over the same tokens, in float32, layer by layer (one layer's weights in
memory at a time, so it runs on 34B too):
- the SOURCE as its published architecture reads it: Baichuan2's fused W_pack and NormHead,
  Yi's ln1/ln2 names and rope_theta, each from the source config;
- the OUTPUT as Llama reads it, from the converted config.json.
Their logits must agree to float32 rounding when both are float32, and to the output dtype's
rounding otherwise; a wrong split, norm name, head count or RoPE base shows up as a large gap.
The tests separately prove that transformers' LlamaForCausalLM equals this Llama reading.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from adapters.checkpoint import baichuan, gptq
from adapters.checkpoint.detect import guess_layout, read_config
from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.io import SourceCheckpoint

logger = logging.getLogger("huatuo.convert")

Getter = Callable[[str], torch.Tensor]


def _linear_loader(ckpt: SourceCheckpoint, bits: int | None) -> Getter:
    """Float32 [out, in] weight of a linear layer by its prefix, dequantising GPTQ layers."""
    def load(prefix: str) -> torch.Tensor:
        if prefix + ".weight" in ckpt.tensors:
            return ckpt.load(prefix + ".weight").float()
        if bits is None or prefix + ".qweight" not in ckpt.tensors:
            raise ConversionError(f"{ckpt.directory}: no weight for {prefix!r}.")
        parts = [ckpt.load(f"{prefix}.{s}") for s in gptq.PACKED_SUFFIXES]
        return gptq.dequantize(*parts, bits=bits)
    return load


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE (Llama, Baichuan2-7B and Yi all use it) on [heads, seq, dim]."""
    dim, seq = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    half = dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * emb.cos() + rotated * emb.sin()


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def forward(tokens: torch.Tensor, *, embed: torch.Tensor, layer: Callable[[int], dict],
            norm: torch.Tensor, head: torch.Tensor, n_layers: int, heads: int, kv_heads: int,
            theta: float, eps: float) -> torch.Tensor:
    x = embed[tokens]
    seq = x.shape[0]
    mask = torch.full((seq, seq), float("-inf")).triu(1)
    for n in range(n_layers):
        w = layer(n)
        h = _rms(x, w["ln_in"], eps)
        q = (h @ w["q"].t()).view(seq, heads, -1).transpose(0, 1)
        k = (h @ w["k"].t()).view(seq, kv_heads, -1).transpose(0, 1)
        v = (h @ w["v"].t()).view(seq, kv_heads, -1).transpose(0, 1)
        q, k = _rope(q, theta), _rope(k, theta)
        k = k.repeat_interleave(heads // kv_heads, dim=0)
        v = v.repeat_interleave(heads // kv_heads, dim=0)
        scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5 + mask
        attn = (scores.softmax(-1) @ v).transpose(0, 1).reshape(seq, -1)
        x = x + attn @ w["o"].t()
        h = _rms(x, w["ln_post"], eps)
        x = x + (F.silu(h @ w["gate"].t()) * (h @ w["up"].t())) @ w["down"].t()
    return _rms(x, norm, eps) @ head.t()


def _source_forward(src: Path, tokens: torch.Tensor) -> torch.Tensor:
    config = read_config(src)
    ckpt = SourceCheckpoint(src)
    layout = guess_layout(config, list(ckpt.tensors))
    quant = gptq.read_quantization(src, config)
    linear = _linear_loader(ckpt, quant["bits"] if quant else None)
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if layout == "baichuan2":
        kv_heads, theta, eps = heads, 10000.0, config.get("rms_norm_eps", 1e-6)
    else:
        kv_heads = config.get("num_key_value_heads") or heads
        rope = config.get("rope_parameters") or {}
        default = 5e6 if layout == "yi" else 1e4
        theta = float(config.get("rope_theta") or rope.get("rope_theta") or default)
        eps = config.get("rms_norm_eps", 1e-5 if layout == "yi" else 1e-6)
    old_names = any(".ln1." in n for n in ckpt.tensors)

    def layer(n: int) -> dict:
        p = f"model.layers.{n}."
        w = {"o": linear(p + "self_attn.o_proj"), "gate": linear(p + "mlp.gate_proj"),
             "up": linear(p + "mlp.up_proj"), "down": linear(p + "mlp.down_proj")}
        if layout == "baichuan2":
            # Published forward: proj.unflatten(-1, (3, hidden)) -> q, k, v
            w["q"], w["k"], w["v"] = linear(p + "self_attn.W_pack").view(3, hidden, -1)
        else:
            for key in ("q", "k", "v"):
                w[key] = linear(f"{p}self_attn.{key}_proj")
        ln_in, ln_post = ("ln1", "ln2") if old_names else ("input_layernorm",
                                                          "post_attention_layernorm")
        w["ln_in"] = ckpt.load(p + ln_in + ".weight").float()
        w["ln_post"] = ckpt.load(p + ln_post + ".weight").float()
        return w

    head = ckpt.load("lm_head.weight").float()
    if layout == "baichuan2" and baichuan.has_norm_head(config):
        head = F.normalize(head, dim=-1)  # NormHead at inference
    return forward(tokens, embed=ckpt.load("model.embed_tokens.weight").float(), layer=layer,
                   norm=ckpt.load("model.norm.weight").float(), head=head,
                   n_layers=config["num_hidden_layers"], heads=heads, kv_heads=kv_heads,
                   theta=theta, eps=eps)


def _llama_forward(dst: Path, tokens: torch.Tensor) -> torch.Tensor:
    config = json.loads((dst / "config.json").read_text())
    ckpt = SourceCheckpoint(dst)
    quant = config.get("quantization_config")
    linear = _linear_loader(ckpt, quant["bits"] if quant else None)
    rope = config.get("rope_parameters") or {}

    def layer(n: int) -> dict:
        p = f"model.layers.{n}."
        names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                 "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
                 "down": "mlp.down_proj"}
        w = {key: linear(p + name) for key, name in names.items()}
        w["ln_in"] = ckpt.load(p + "input_layernorm.weight").float()
        w["ln_post"] = ckpt.load(p + "post_attention_layernorm.weight").float()
        return w

    return forward(tokens, embed=ckpt.load("model.embed_tokens.weight").float(), layer=layer,
                   norm=ckpt.load("model.norm.weight").float(),
                   head=ckpt.load("lm_head.weight").float(),
                   n_layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
                   kv_heads=config["num_key_value_heads"],
                   theta=float(rope.get("rope_theta") or config["rope_theta"]),
                   eps=config["rms_norm_eps"])


def verify_conversion(src: Path, dst: Path, num_tokens: int = 16) -> dict:
    """Compare logits of the source and converted checkpoints; raise when they disagree."""
    started = time.monotonic()
    config = json.loads((dst / "config.json").read_text())
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, config["vocab_size"], (num_tokens,), generator=generator)
    logger.info("Verifying: forward pass of %d tokens through source and output.", num_tokens)
    with torch.no_grad():
        reference = _source_forward(src, tokens)
        converted = _llama_forward(dst, tokens)
    diff = (reference - converted).abs().max().item()
    scale = max(reference.abs().max().item(), 1.0)
    exact = config.get("torch_dtype") == "float32" and all(
        info.dtype == torch.float32 for info in SourceCheckpoint(src).tensors.values()
        if info.dtype.is_floating_point)
    # float32 both sides: only summation-order rounding; otherwise the output's own rounding.
    tolerance = (1e-5 if exact else 3e-2) * scale
    agree = (reference.argmax(-1) == converted.argmax(-1)).float().mean().item()
    report = {
        "tokens": num_tokens,
        "max_abs_logit_diff": diff,
        "max_abs_logit": scale,
        "tolerance": tolerance,
        "argmax_agreement": agree,
        "passed": diff <= tolerance and (agree == 1.0 or not exact),
        "seconds": round(time.monotonic() - started, 2),
    }
    logger.info("Verification: max |logit diff| %.3g (tolerance %.3g), argmax agreement %.0f%%.",
                diff, tolerance, 100 * agree)
    if not report["passed"]:
        raise ConversionError(
            f"verification failed: converted logits differ from the source by {diff:.3g} "
            f"(tolerance {tolerance:.3g}, argmax agreement {agree:.0%}); the output was not "
            "published."
        )
    return report
