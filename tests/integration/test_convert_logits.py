"""Converted checkpoints compute what the published architectures compute.

For each published layout, as .safetensors and .bin, single and sharded: the converted model,
loaded by transformers' LlamaForCausalLM, gives the reference forward's logits within 1e-5
(float32). The references (tests/support/published_checkpoints.py) follow the published
modeling code and never touch the converter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adapters.checkpoint.convert import Options, convert
from tests.support.published_checkpoints import (
    baichuan2_7b_reference,
    build_baichuan2_7b,
    build_yi,
    load_weights,
    yi_reference,
)

QUIET = Options(progress=False)


def llama_logits(directory: Path, input_ids: torch.Tensor) -> torch.Tensor:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids).logits


def token_batch(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (3, 24), generator=torch.Generator().manual_seed(5))


CASES = [
    ("baichuan2", "safetensors", 1),
    ("baichuan2", "bin", 3),
    ("yi", "safetensors", 2),
    ("yi", "bin", 1),
]


@pytest.mark.parametrize(("layout", "fmt", "shards"), CASES)
def test_logits_match_the_published_architecture(tmp_path: Path, layout: str, fmt: str,
                                                 shards: int) -> None:
    build, reference = ((build_baichuan2_7b, baichuan2_7b_reference) if layout == "baichuan2"
                        else (build_yi, yi_reference))
    src = build(tmp_path / "src", fmt=fmt, shards=shards)
    # A small shard limit so the output is sharded too.
    manifest = convert(src, tmp_path / "out", Options(progress=False, shard_bytes=300_000))
    assert manifest["source"]["layout"] == layout
    assert len(manifest["output"]["files"]) > 1
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    ids = token_batch(config["vocab_size"])
    expected = reference(src, ids)
    got = llama_logits(tmp_path / "out", ids)
    assert (got - expected).abs().max().item() < 1e-5
    # Not trivially small logits: a wrong conversion would be far off.
    assert expected.abs().max().item() > 1.0


def test_a_wrong_conversion_is_caught_by_the_reference(tmp_path: Path) -> None:
    """The comparison has teeth: without the NormHead fold the logits differ a lot."""
    src = build_baichuan2_7b(tmp_path / "src")
    convert(src, tmp_path / "out", QUIET)
    ids = token_batch(json.loads((src / "config.json").read_text())["vocab_size"])
    out = tmp_path / "out" / "model-00001-of-00001.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(out))
    tensors["lm_head.weight"] = load_weights(src)["lm_head.weight"]  # un-normalised rows
    save_file(tensors, str(out), metadata={"format": "pt"})
    diff = (llama_logits(tmp_path / "out", ids) - baichuan2_7b_reference(src, ids)).abs().max()
    assert diff.item() > 0.1


def test_gqa_and_rope_theta_are_kept(tmp_path: Path) -> None:
    src = build_yi(tmp_path / "src", heads=4, kv_heads=1, rope_theta=123456.0)
    convert(src, tmp_path / "out", QUIET)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 1)
    assert config["rope_parameters"]["rope_theta"] == 123456.0
    ids = token_batch(config["vocab_size"])
    assert (llama_logits(tmp_path / "out", ids) - yi_reference(src, ids)).abs().max() < 1e-5


def test_bf16_source_keeps_its_dtype_and_exact_weights(tmp_path: Path) -> None:
    src = build_baichuan2_7b(tmp_path / "src", dtype=torch.bfloat16)
    manifest = convert(src, tmp_path / "out", QUIET)
    assert manifest["output"]["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    before, after = load_weights(src), load_weights(tmp_path / "out")
    assert all(t.dtype == torch.bfloat16 for t in after.values())
    q, k, v = before["model.layers.1.self_attn.W_pack.weight"].chunk(3)
    assert torch.equal(after["model.layers.1.self_attn.q_proj.weight"], q)
    assert torch.equal(after["model.layers.1.self_attn.k_proj.weight"], k)
    assert torch.equal(after["model.layers.1.self_attn.v_proj.weight"], v)
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    folded = F.normalize(before["lm_head.weight"].float()).to(torch.bfloat16)
    assert torch.equal(after["lm_head.weight"], folded)


def test_bf16_source_to_float32(tmp_path: Path) -> None:
    src = build_baichuan2_7b(tmp_path / "src", dtype=torch.bfloat16, fmt="bin")
    manifest = convert(src, tmp_path / "out", Options(dtype="float32", progress=False))
    assert manifest["output"]["dtype"] == "float32"
    assert "cast floating tensors to float32" in manifest["transformations"]
    ids = token_batch(json.loads((src / "config.json").read_text())["vocab_size"])
    expected = baichuan2_7b_reference(src, ids)  # upcasts the bf16 source itself
    assert (llama_logits(tmp_path / "out", ids) - expected).abs().max() < 1e-5


def test_llama_checkpoint_is_copied_unchanged_with_serving_metadata(tmp_path: Path) -> None:
    from huatuogpt2.demo_checkpoint import build_tiny_llama
    from huatuogpt2.prompt_format import CHAT_TEMPLATE

    src = build_tiny_llama(tmp_path / "src")
    manifest = convert(src, tmp_path / "out", QUIET)
    assert manifest["source"]["layout"] == "llama"
    assert manifest["transformations"][0] == "weights copied unchanged"
    before, after = load_weights(src), load_weights(tmp_path / "out")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)
    tokenizer_config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == CHAT_TEMPLATE
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (
        src / "tokenizer.json").read_bytes()


def test_manifest_records_sources_and_transformations(tmp_path: Path) -> None:
    src = build_baichuan2_7b(tmp_path / "src", fmt="bin", shards=2)
    convert(src, tmp_path / "out", Options(progress=False, verify=True))
    manifest = json.loads((tmp_path / "out" / "conversion.json").read_text())
    files = {f["name"]: f for f in manifest["source"]["files"]}
    for path in src.iterdir():
        assert files[path.name]["bytes"] == path.stat().st_size
        assert files[path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    steps = "\n".join(manifest["transformations"])
    assert "W_pack" in steps and "NormHead" in steps and "inv_freq" in steps
    assert manifest["dropped_tensors"] == [f"model.layers.{n}.self_attn.rotary_emb.inv_freq"
                                           for n in range(2)]
    assert manifest["verification"]["passed"] is True
    assert manifest["verification"]["max_abs_logit_diff"] < 1e-5
    generation = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["top_k"], generation["top_p"]) == (2, 5, 0.85)
    # Remote code is not carried over: the output is plain Llama.
    assert not list((tmp_path / "out").glob("*.py"))
