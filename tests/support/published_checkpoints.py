"""Tiny random checkpoints in the PUBLISHED layouts, and reference forward passes for them.

Nothing here imports the converter: the builders write what the published HuatuoGPT2 repos
hold (config.json as released, weight names of the remote code, a SentencePiece model), and the
reference forwards follow the published modeling code (Baichuan2-7B `modeling_baichuan.py`,
Yi `modeling_yi.py`) in plain torch. The tests compare the converter's output against these.
"""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Text: a varied corpus to train the SentencePiece models and to compare tokenizers on.

_ZH = ("我最近总是头痛应该怎么办高血压患者饮食需要注意什么减少盐的摄入多吃蔬菜水果控制体重戒烟限酒"
       "按医嘱规律服药并监测血压发烧三十八度五要吃退烧药吗可以在医生或药师指导下服用对乙酰氨基酚"
       "或布洛芬糖尿病的早期症状有哪些常见的有多饮多尿多食和体重下降建议定期检查血糖咳嗽胸痛心悸"
       "患者应遵医嘱用药不要自行增减剂量如有过敏史请告知医生孕妇儿童老人慢性肾病肝功能异常")
_EN = ("the patient presents with persistent cough fever and shortness of breath blood pressure "
       "was elevated prescribe ibuprofen twice daily after meals follow up in two weeks "
       "history of diabetes hypertension asthma allergy to penicillin MRI CT scan normal").split()
_PUNCT = "，。？！；：、（）《》“”…—,.?!;:()[]{}<>/\\|@#$%^&*-_=+~`'\""
_RARE = "龘靐齉麤爩𠀀𪚥㐀ǅﬁ①Ⅻ½™©®°±×÷µ§¶†‡‰′″€£¥₩₿αβγδΩЖжЯאבגاكتب한국어ひらがなカタカナ"
_EMOJI = "😀😷🤒🩺💊🏥❤️👍🏽🇨🇳🧬🦠✅⚠️🔥"
_SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\u3000", "\r\n", "    "]


def _phrase(rng: random.Random, code_points: bool) -> str:
    kind = rng.random()
    if kind < 0.35:
        start = rng.randrange(len(_ZH) - 12)
        return _ZH[start:start + rng.randint(2, 12)]
    if kind < 0.6:
        return " ".join(rng.choice(_EN) for _ in range(rng.randint(1, 5)))
    if kind < 0.72:
        return str(rng.choice([rng.randint(0, 99), rng.randint(100, 10**9),
                               round(rng.uniform(0, 500), rng.randint(1, 3))]))
    if kind < 0.76:
        return "".join(rng.choice(_RARE) for _ in range(rng.randint(1, 3)))
    if kind < 0.8 and code_points:  # any code point of the CJK blocks or the supplementary planes
        low, high = rng.choice([(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x1F300, 0x1FAFF),
                                (0x20000, 0x2A6DF), (0x0370, 0x052F)])
        return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 3)))
    if kind < 0.86:
        return "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 2)))
    if kind < 0.94:
        return rng.choice(_PUNCT) * rng.randint(1, 2)
    return rng.choice(["<问>：", "\n<答>：", "mg/kg", "2024-03-15", "38.5℃", "BP 140/90 mmHg"])


def text_corpus(count: int, seed: int = 0, code_points: bool = True) -> list[str]:
    """`count` varied strings: Chinese, English, digits, runs of spaces and newlines, emoji,
    rare characters, and (with `code_points`) random code points of large blocks that a small
    vocabulary cannot cover: they exercise byte fallback."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = [_phrase(rng, code_points) for _ in range(rng.randint(1, 8))]
        text = ""
        for part in parts:
            text += part + (rng.choice(_SPACES) if rng.random() < 0.4 else "")
        if rng.random() < 0.1:
            text = rng.choice(_SPACES) + text
        texts.append(text)
    return texts


# Baichuan2's tokenizer.model normaliser/trainer settings (as read from the released model).
BAICHUAN2_SPM = {
    "model_type": "bpe",
    "normalization_rule_name": "identity",
    "add_dummy_prefix": False,
    "remove_extra_whitespaces": False,
    "split_digits": True,
    "byte_fallback": True,
    "allow_whitespace_only_pieces": True,
    "max_sentencepiece_length": 16,
    "split_by_unicode_script": True,
    "character_coverage": 0.9995,
}
# The classic LLaMA-1 style settings: the converter must honour these too.
LLAMA_STYLE_SPM = {
    "model_type": "bpe",
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": True,
    "remove_extra_whitespaces": True,
    "split_digits": True,
    "byte_fallback": True,
    "character_coverage": 0.9995,
}


def train_sentencepiece(path: Path, vocab_size: int = 1200, settings: dict | None = None,
                        seed: int = 1) -> Path:
    """Train a SentencePiece model (ids: 0 <unk>, 1 <s>, 2 </s>, as Baichuan2/Yi) at `path`."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text_corpus(4000, seed=seed, code_points=False)), model_writer=model,
        vocab_size=vocab_size, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
        num_threads=1, **(settings or BAICHUAN2_SPM),
    )
    path.write_bytes(model.getvalue())
    return path


# ----------------------------------------------------------------------------------------------
# Checkpoint files


def save_weights(directory: Path, tensors: dict[str, torch.Tensor], fmt: str, shards: int
                 ) -> None:
    """As published: one file, or `shards` files with the HF index (safetensors or .bin)."""
    from safetensors.torch import save_file

    names = list(tensors)
    per = math.ceil(len(names) / shards)
    groups = [names[i:i + per] for i in range(0, len(names), per)]
    suffix = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    weight_map = {}
    for i, group in enumerate(groups):
        file = (f"{stem}.{suffix}" if len(groups) == 1
                else f"{stem}-{i + 1:05d}-of-{len(groups):05d}.{suffix}")
        part = {n: tensors[n].contiguous() for n in group}
        if fmt == "safetensors":
            save_file(part, str(directory / file), metadata={"format": "pt"})
        else:
            torch.save(part, directory / file)
        weight_map.update(dict.fromkeys(group, file))
    if len(groups) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
                 "weight_map": weight_map}
        (directory / f"{stem}.{suffix}.index.json").write_text(json.dumps(index, indent=2))


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory (tiny models only)."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    for path in sorted(directory.glob("*.bin")):
        tensors.update(torch.load(path, map_location="cpu", weights_only=True))
    return tensors


def _random_layers(gen: torch.Generator, layers: int, hidden: int, inter: int, q_rows: int,
                   kv_rows: int) -> dict[str, torch.Tensor]:
    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.08

    out = {}
    for n in range(layers):
        p = f"model.layers.{n}."
        out[p + "q"] = w(q_rows, hidden)
        out[p + "k"] = w(kv_rows, hidden)
        out[p + "v"] = w(kv_rows, hidden)
        out[p + "self_attn.o_proj.weight"] = w(hidden, q_rows)
        out[p + "mlp.gate_proj.weight"] = w(inter, hidden)
        out[p + "mlp.up_proj.weight"] = w(inter, hidden)
        out[p + "mlp.down_proj.weight"] = w(hidden, inter)
        out[p + "norm1"] = 1 + torch.randn(hidden, generator=gen) * 0.1
        out[p + "norm2"] = 1 + torch.randn(hidden, generator=gen) * 0.1
    return out


def _sp_vocab(directory: Path) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model")).vocab_size()


def build_baichuan2_7b(directory: Path, *, hidden: int = 128, heads: int = 2, layers: int = 2,
                       fmt: str = "safetensors", shards: int = 1,
                       dtype: torch.dtype = torch.float32, seed: int = 0,
                       with_inv_freq: bool = True) -> Path:
    """HuatuoGPT2-7B as published: BaichuanForCausalLM, fused W_pack, NormHead lm_head."""
    directory.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(directory / "tokenizer.model")
    vocab = _sp_vocab(directory)
    inter = hidden * 8 // 3 // 8 * 8
    config = {
        "_from_model_config": True,
        "architectures": ["BaichuanForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_baichuan.BaichuanConfig",
                     "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"},
        "tokenizer_class": "BaichuanTokenizer",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": inter, "max_position_embeddings": 4096, "model_max_length": 4096,
        "model_type": "baichuan", "num_attention_heads": heads, "num_hidden_layers": layers,
        "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
        "torch_dtype": str(dtype).removeprefix("torch."), "transformers_version": "4.29.2",
        "use_cache": True, "vocab_size": vocab, "z_loss_weight": 0,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BaichuanTokenizer", "add_bos_token": False, "add_eos_token": False,
        "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]},
        "model_max_length": 4096, "use_fast": False}, indent=2))
    # Remote code ships next to the weights; the conversion does not need it.
    (directory / "tokenization_baichuan.py").write_text("# remote code\n")
    gen = torch.Generator().manual_seed(seed)
    raw = _random_layers(gen, layers, hidden, inter, hidden, hidden)
    tensors: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": torch.randn(vocab, hidden, generator=gen) * 0.5}
    for n in range(layers):
        p = f"model.layers.{n}."
        tensors[p + "self_attn.W_pack.weight"] = torch.cat(
            [raw.pop(p + "q"), raw.pop(p + "k"), raw.pop(p + "v")])
        tensors[p + "input_layernorm.weight"] = raw.pop(p + "norm1")
        tensors[p + "post_attention_layernorm.weight"] = raw.pop(p + "norm2")
        for key in [k for k in raw if k.startswith(p)]:
            tensors[key] = raw.pop(key)
        if with_inv_freq:  # the old remote code saved this buffer
            tensors[p + "self_attn.rotary_emb.inv_freq"] = 1.0 / (
                10000 ** (torch.arange(0, hidden // heads, 2).float() / (hidden // heads)))
    tensors["model.norm.weight"] = 1 + torch.randn(hidden, generator=gen) * 0.1
    # Rows of very different norms: a converter that forgets the NormHead fold is caught.
    tensors["lm_head.weight"] = torch.randn(vocab, hidden, generator=gen) * torch.rand(
        vocab, 1, generator=gen) * 3
    tensors = {k: (v.to(dtype) if not k.endswith("inv_freq") else v) for k, v in tensors.items()}
    save_weights(directory, tensors, fmt, shards)
    return directory


def build_baichuan2_13b(directory: Path) -> Path:
    """A Baichuan2-13B-like checkpoint: ALiBi (config without max_position_embeddings)."""
    build_baichuan2_7b(directory, with_inv_freq=False)
    config = json.loads((directory / "config.json").read_text())
    del config["max_position_embeddings"]
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def build_yi(directory: Path, *, hidden: int = 128, heads: int = 4, kv_heads: int = 2,
             layers: int = 2, fmt: str = "safetensors", shards: int = 1,
             dtype: torch.dtype = torch.float32, seed: int = 0,
             rope_theta: float = 5000000.0) -> Path:
    """HuatuoGPT2-34B as published: YiForCausalLM, `ln1`/`ln2` norms, GQA, rope_theta 5e6."""
    directory.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(directory / "tokenizer.model")
    vocab = _sp_vocab(directory)
    head_dim = hidden // heads
    inter = hidden * 8 // 3 // 8 * 8
    config = {
        "architectures": ["YiForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_yi.YiConfig",
                     "AutoModelForCausalLM": "modeling_yi.YiForCausalLM"},
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": inter, "max_position_embeddings": 4096, "model_type": "Yi",
        "num_attention_heads": heads, "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-05, "rope_theta": rope_theta,
        "tie_word_embeddings": False, "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.34.0", "use_cache": True, "vocab_size": vocab,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "YiTokenizer", "add_bos_token": False, "add_eos_token": False,
        "auto_map": {"AutoTokenizer": ["tokenization_yi.YiTokenizer", None]},
        "model_max_length": 4096}, indent=2))
    gen = torch.Generator().manual_seed(seed)
    raw = _random_layers(gen, layers, hidden, inter, heads * head_dim, kv_heads * head_dim)
    tensors: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": torch.randn(vocab, hidden, generator=gen) * 0.5}
    for n in range(layers):
        p = f"model.layers.{n}."
        tensors[p + "self_attn.q_proj.weight"] = raw.pop(p + "q")
        tensors[p + "self_attn.k_proj.weight"] = raw.pop(p + "k")
        tensors[p + "self_attn.v_proj.weight"] = raw.pop(p + "v")
        tensors[p + "ln1.weight"] = raw.pop(p + "norm1")
        tensors[p + "ln2.weight"] = raw.pop(p + "norm2")
        for key in [k for k in raw if k.startswith(p)]:
            tensors[key] = raw.pop(key)
    tensors["model.norm.weight"] = 1 + torch.randn(hidden, generator=gen) * 0.1
    tensors["lm_head.weight"] = torch.randn(vocab, hidden, generator=gen) * 0.1
    save_weights(directory, {k: v.to(dtype) for k, v in tensors.items()}, fmt, shards)
    return directory


def pack_gptq(weight: torch.Tensor, bits: int, group_size: int, gen: torch.Generator
              ) -> dict[str, torch.Tensor]:
    """A GPTQ (AutoGPTQ v1 format) packing of a random quantisation of `weight` [out, in]."""
    out_features, in_features = weight.shape
    per_int = 32 // bits
    groups = in_features // group_size
    q = torch.randint(0, 2**bits, (in_features, out_features), generator=gen, dtype=torch.int64)
    zeros = torch.randint(1, 2**bits, (groups, out_features), generator=gen, dtype=torch.int64)
    scales = (torch.rand(groups, out_features, generator=gen) * 0.01 + 0.001).half()

    def pack(values: torch.Tensor, dim: int) -> torch.Tensor:
        values = values.movedim(dim, 0)
        values = values.reshape(values.shape[0] // per_int, per_int, *values.shape[1:])
        packed = torch.zeros(values.shape[0], *values.shape[2:], dtype=torch.int64)
        for i in range(per_int):
            packed |= values[:, i] << (bits * i)
        packed = torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)
        return packed.movedim(0, dim)

    return {
        "qweight": pack(q, 0),
        "qzeros": pack(zeros - 1, 1),  # v1 format stores zero - 1
        "scales": scales,
        "g_idx": torch.arange(in_features, dtype=torch.int32) // group_size,
    }


def dequantize_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                    g_idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Weight [out, in] of a GPTQ layer, written independently of the converter's version."""
    per_int = 32 // bits
    mask = 2**bits - 1
    qw = qweight.to(torch.int64) & 0xFFFFFFFF
    qz = qzeros.to(torch.int64) & 0xFFFFFFFF
    q = torch.stack([(qw >> (bits * i)) & mask for i in range(per_int)], 1).reshape(
        -1, qw.shape[1])
    z = torch.stack([(qz >> (bits * i)) & mask for i in range(per_int)], 2).reshape(
        qz.shape[0], -1) + 1
    groups = g_idx.long()
    return ((q - z[groups]).float() * scales.float()[groups]).t()


def build_baichuan2_gptq(directory: Path, *, bits: int = 4, group_size: int = 16,
                         hidden: int = 128) -> Path:
    """HuatuoGPT2-7B-4bits-like: every decoder linear GPTQ-packed, fp16 embeddings/lm_head."""
    build_baichuan2_7b(directory, hidden=hidden, dtype=torch.float16)
    tensors = load_weights(directory)
    for path in list(directory.glob("*.safetensors")):
        path.unlink()
    gen = torch.Generator().manual_seed(7)
    packed: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.startswith("model.layers.") and name.endswith("proj.weight") or "W_pack" in name:
            prefix = name.removesuffix(".weight")
            for suffix, value in pack_gptq(tensor, bits, group_size, gen).items():
                packed[f"{prefix}.{suffix}"] = value
        else:
            packed[name] = tensor
    save_weights(directory, packed, "safetensors", 1)
    quant = {"bits": bits, "group_size": group_size, "damp_percent": 0.01, "desc_act": False,
             "static_groups": False, "sym": True, "true_sequential": True,
             "model_name_or_path": None, "model_file_base_name": "model"}
    (directory / "quantize_config.json").write_text(json.dumps(quant, indent=2))
    return directory


# ----------------------------------------------------------------------------------------------
# Reference forward passes, following the published modeling code.


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def _rotary(q: torch.Tensor, k: torch.Tensor, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    dim, seq = q.shape[-1], q.shape[-2]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    t = torch.arange(seq, dtype=torch.float32)
    freqs = torch.einsum("i,j->ij", t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    seq = q.shape[-2]
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1])
    causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)
    scores = scores.masked_fill(causal, torch.finfo(scores.dtype).min)
    return torch.matmul(F.softmax(scores, dim=-1, dtype=torch.float32), v)


def _mlp(x: torch.Tensor, w: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    gate = F.linear(x, w[p + "mlp.gate_proj.weight"])
    up = F.linear(x, w[p + "mlp.up_proj.weight"])
    return F.linear(F.silu(gate) * up, w[p + "mlp.down_proj.weight"])


def baichuan2_7b_reference(directory: Path, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [batch, seq, vocab] of Baichuan2-7B's published forward (float32)."""
    config = json.loads((directory / "config.json").read_text())
    w = {k: v.float() for k, v in load_weights(directory).items()}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["rms_norm_eps"]
    bsz, q_len = input_ids.shape
    x = F.embedding(input_ids, w["model.embed_tokens.weight"])
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        residual = x
        h = _rms_norm(x, w[p + "input_layernorm.weight"], eps)
        proj = F.linear(h, w[p + "self_attn.W_pack.weight"])
        proj = proj.unflatten(-1, (3, hidden)).unsqueeze(0).transpose(0, -2).squeeze(-2)
        q = proj[0].view(bsz, q_len, heads, -1).transpose(1, 2)
        k = proj[1].view(bsz, q_len, heads, -1).transpose(1, 2)
        v = proj[2].view(bsz, q_len, heads, -1).transpose(1, 2)
        q, k = _rotary(q, k, 10000.0)
        out = _attention(q, k, v).transpose(1, 2).reshape(bsz, q_len, hidden)
        x = residual + F.linear(out, w[p + "self_attn.o_proj.weight"])
        x = x + _mlp(_rms_norm(x, w[p + "post_attention_layernorm.weight"], eps), w, p)
    x = _rms_norm(x, w["model.norm.weight"], eps)
    norm_head = F.normalize(w["lm_head.weight"])  # NormHead, inference branch
    return F.linear(x, norm_head)


def yi_reference(directory: Path, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [batch, seq, vocab] of Yi's published forward (float32), GQA and ln1/ln2."""
    config = json.loads((directory / "config.json").read_text())
    w = {k: v.float() for k, v in load_weights(directory).items()}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config["num_key_value_heads"]
    head_dim = hidden // heads
    eps = config["rms_norm_eps"]
    bsz, q_len = input_ids.shape
    x = F.embedding(input_ids, w["model.embed_tokens.weight"])

    def repeat_kv(t: torch.Tensor) -> torch.Tensor:
        n_rep = heads // kv_heads
        t = t[:, :, None].expand(bsz, kv_heads, n_rep, q_len, head_dim)
        return t.reshape(bsz, heads, q_len, head_dim)

    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        residual = x
        h = _rms_norm(x, w[p + "ln1.weight"], eps)
        q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(bsz, q_len, heads, head_dim)
        k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(bsz, q_len, kv_heads, head_dim)
        v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(bsz, q_len, kv_heads, head_dim)
        q, k = _rotary(q.transpose(1, 2), k.transpose(1, 2), config["rope_theta"])
        out = _attention(q, repeat_kv(k), repeat_kv(v.transpose(1, 2)))
        out = out.transpose(1, 2).reshape(bsz, q_len, hidden)
        x = residual + F.linear(out, w[p + "self_attn.o_proj.weight"])
        x = x + _mlp(_rms_norm(x, w[p + "ln2.weight"], eps), w, p)
    x = _rms_norm(x, w["model.norm.weight"], eps)
    return F.linear(x, w["lm_head.weight"])
