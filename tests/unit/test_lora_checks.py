"""Adapters checked before the engine sees them: each refusal with its exact message, the
engine's LoRA settings derived from the adapters, and runtime paths confined to --lora-root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from huatuogpt2.adapter_base import BASE_FILE, base_fingerprint, write_base_record
from server.errors import APIError
from server.lora import (
    AdapterError,
    BaseModel,
    check_adapter,
    check_startup_adapters,
    engine_lora_args,
    parse_lora_flag,
)
from server.lora_admin import confine
from server.settings import ServeSettings

HIDDEN, INTER, LAYERS = 64, 96, 2


def make_base(path: Path, hidden: int = HIDDEN, vocab: int = 100, seed: int = 0) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": INTER,
        "num_hidden_layers": LAYERS, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": vocab}))
    torch.manual_seed(seed)
    save_file({"model.embed_tokens.weight": torch.randn(vocab, hidden)},
              path / "model.safetensors")
    return path


def make_adapter(path: Path, base: Path | None, r: int = 4, hidden: int = HIDDEN,
                 modules: tuple[str, ...] = ("q_proj", "v_proj"), layers: int = LAYERS,
                 **config: object) -> Path:
    path.mkdir(parents=True)
    out = {"q_proj": hidden, "v_proj": hidden // 2}  # 2 heads of 32; 1 KV head
    tensors = {}
    for layer in range(layers):
        for module in modules:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.zeros(r, hidden)
            tensors[f"{prefix}.lora_B.weight"] = torch.zeros(out.get(module, hidden), r)
    save_file(tensors, path / "adapter_model.safetensors")
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "bias": "none",
        "target_modules": list(modules), **config}))
    if base is not None:
        write_base_record(path, base)
    return path


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return make_base(tmp_path / "base")


def refusal(name: str, path: Path, base_dir: Path, **kwargs: bool) -> str:
    with pytest.raises(AdapterError) as caught:
        check_adapter(name, path, BaseModel.read(base_dir), **kwargs)
    return caught.value.message


def test_a_good_adapter_passes(base_dir: Path, tmp_path: Path) -> None:
    adapter = check_adapter("paed", make_adapter(tmp_path / "a", base_dir),
                            BaseModel.read(base_dir))
    assert (adapter.name, adapter.rank) == ("paed", 4)


def test_missing_directory_and_files(base_dir: Path, tmp_path: Path) -> None:
    fix = "huatuo train --lora.enabled true writes a servable adapter to <export>/adapter"
    missing = tmp_path / "nowhere"
    assert refusal("paed", missing, base_dir) == (
        f"LoRA adapter 'paed' ({missing}): no such directory. Give the adapter's directory "
        f"({fix})")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert refusal("paed", empty, base_dir) == (
        f"LoRA adapter 'paed' ({empty}): no adapter_config.json; this is not a PEFT adapter "
        f"directory. Give the directory that holds adapter_config.json ({fix})")
    no_weights = make_adapter(tmp_path / "nw", base_dir)
    (no_weights / "adapter_model.safetensors").unlink()
    assert refusal("paed", no_weights, base_dir) == (
        f"LoRA adapter 'paed' ({no_weights}): no adapter_model.safetensors. Re-export the "
        f"adapter ({fix})")


def test_malformed_files(base_dir: Path, tmp_path: Path) -> None:
    bad_json = make_adapter(tmp_path / "j", base_dir)
    (bad_json / "adapter_config.json").write_text("{")
    assert refusal("paed", bad_json, base_dir).startswith(
        f"LoRA adapter 'paed' ({bad_json}): adapter_config.json is not valid JSON (")
    bad_weights = make_adapter(tmp_path / "w", base_dir)
    (bad_weights / "adapter_model.safetensors").write_bytes(b"\xff" * 16)
    assert refusal("paed", bad_weights, base_dir) == (
        f"LoRA adapter 'paed' ({bad_weights}): adapter_model.safetensors is not a safetensors "
        "file (header longer than the file). Re-export the adapter")


def test_rank_vllm_cannot_apply(base_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "a", base_dir, r=1024)
    assert refusal("paed", adapter, base_dir) == (
        f"LoRA adapter 'paed' ({adapter}): its rank 1024 is above 512, the largest rank vLLM "
        "applies. Retrain with --lora.r 512 or less")


def test_module_vllm_cannot_apply(base_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "a", base_dir)
    save_file({"base_model.model.model.embed_tokens.lora_A.weight": torch.zeros(4, 100)},
              adapter / "adapter_model.safetensors")
    assert refusal("paed", adapter, base_dir) == (
        f"LoRA adapter 'paed' ({adapter}): it targets modules vLLM cannot apply LoRA to on this "
        "model: ['embed_tokens'] (supported: q_proj, k_proj, v_proj, o_proj, gate_proj, "
        "up_proj, down_proj). Retrain with --lora.target_modules limited to the supported ones")


def test_bias_and_dora_are_refused(base_dir: Path, tmp_path: Path) -> None:
    biased = make_adapter(tmp_path / "b", base_dir, bias="all")
    assert refusal("paed", biased, base_dir) == (
        f"LoRA adapter 'paed' ({biased}): it trains biases (bias='all'), which vLLM cannot "
        "apply. Retrain with bias 'none' (huatuo train's default)")
    dora = make_adapter(tmp_path / "d", base_dir, use_dora=True)
    assert refusal("paed", dora, base_dir) == (
        f"LoRA adapter 'paed' ({dora}): it is a DoRA adapter, which vLLM cannot apply. "
        "Retrain without DoRA")


def test_adapter_for_another_hidden_size(base_dir: Path, tmp_path: Path) -> None:
    # No huatuo_base.json (not from huatuo train): the tensor shapes still tell.
    adapter = make_adapter(tmp_path / "a", None, hidden=128)
    assert refusal("paed", adapter, base_dir) == (
        f"LoRA adapter 'paed' ({adapter}): it was trained on a model with hidden size 128 "
        "(base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape [4, 128]); "
        "the base model's is 64. Serve it on the base model it was trained on")
    deeper = make_adapter(tmp_path / "deep", None, layers=3)
    assert refusal("paed", deeper, base_dir) == (
        f"LoRA adapter 'paed' ({deeper}): it adapts layer 2; the base model has 2 layers. "
        "Serve it on the base model it was trained on")


def test_adapter_for_another_vocabulary(base_dir: Path, tmp_path: Path) -> None:
    other = make_base(tmp_path / "other", vocab=200)
    adapter = make_adapter(tmp_path / "a", other)
    assert refusal("paed", adapter, base_dir, allow_base_mismatch=True) == (
        f"LoRA adapter 'paed' ({adapter}): it was trained on a base with vocabulary size 200; "
        f"the served base has 100. Serve it on the base model it was trained on ({other})")


def test_adapter_for_another_checkpoint_unless_allowed(base_dir: Path, tmp_path: Path) -> None:
    sibling = make_base(tmp_path / "sibling", seed=1)  # same shapes, other weights
    adapter = make_adapter(tmp_path / "a", sibling)
    theirs, ours = base_fingerprint(sibling), base_fingerprint(base_dir)
    assert theirs != ours
    assert refusal("paed", adapter, base_dir) == (
        f"LoRA adapter 'paed' ({adapter}): it was trained on a different base checkpoint "
        f"({sibling}, fingerprint {theirs[:12]}; the served base's is {ours[:12]}). Serve it on "
        "the checkpoint it was trained on, or pass --lora-allow-base-mismatch to serve it "
        "anyway")
    assert check_adapter("paed", adapter, BaseModel.read(base_dir),
                         allow_base_mismatch=True).rank == 4
    assert json.loads((adapter / BASE_FILE).read_text())["fingerprint"] == theirs


def test_fingerprint_ignores_non_layout_config_fields(base_dir: Path) -> None:
    before = base_fingerprint(base_dir)
    config = json.loads((base_dir / "config.json").read_text())
    (base_dir / "config.json").write_text(json.dumps({**config, "use_cache": False}))
    assert base_fingerprint(base_dir) == before


def test_engine_settings_follow_the_adapters(base_dir: Path, tmp_path: Path) -> None:
    settings = ServeSettings(lora=[f"a={make_adapter(tmp_path / 'a', base_dir, r=4)}",
                                   f"b={make_adapter(tmp_path / 'b', base_dir, r=24)}"])
    adapters = check_startup_adapters(settings, base_dir)
    assert engine_lora_args(settings, adapters) == {
        "enable_lora": True, "max_loras": 2, "max_lora_rank": 32, "max_cpu_loras": 2}
    assert engine_lora_args(ServeSettings(), []) == {}  # no adapters: LoRA off, no cost
    runtime = ServeSettings(allow_runtime_lora=True, admin_api_key=["k"], lora_root=tmp_path)
    assert engine_lora_args(runtime, []) == {
        "enable_lora": True, "max_loras": 4, "max_lora_rank": 16, "max_cpu_loras": 4}


@pytest.mark.parametrize(("settings", "message"), [
    (ServeSettings(lora=["paed"]),
     "--lora 'paed': expected NAME=PATH (e.g. --lora paediatrics=runs/paed/export/adapter)"),
    (ServeSettings(lora=["a=/x", "a=/y"]),
     "--lora a=... is given twice; adapter names must be unique"),
    (ServeSettings(lora=["huatuo=/x"], served_model_name="huatuo"),
     "--lora huatuo=...: the name is the base model's; choose another"),
    (ServeSettings(max_lora_rank=12), "--max-lora-rank 12: vLLM accepts 1, 8, 16, 32, 64, 128, "
     "256, 320, 512"),
    (ServeSettings(allow_runtime_lora=True, lora_root=Path("/x")),
     "--allow-runtime-lora needs --admin-api-key: loading adapters must be authorised by a key "
     "of its own"),
    (ServeSettings(allow_runtime_lora=True, admin_api_key=["k"]),
     "--allow-runtime-lora needs --lora-root: runtime adapters are loaded only from under that "
     "directory"),
])
def test_bad_lora_flags(settings: ServeSettings, message: str, base_dir: Path) -> None:
    with pytest.raises(ValueError) as caught:
        check_startup_adapters(settings, base_dir)
    assert str(caught.value) == message


def test_parse_lora_flag() -> None:
    assert parse_lora_flag("paed=/a/b=c") == ("paed", Path("/a/b=c"))


def test_confine_to_lora_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "good").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (root / "link").symlink_to(tmp_path / "out")
    (root / "good-with-bad-file").mkdir()
    (root / "good-with-bad-file" / "adapter_config.json").symlink_to(tmp_path / "secret")
    assert confine(root, "good") == (root / "good").resolve()
    assert confine(root, str(root / "good")) == (root / "good").resolve()
    for given, why in [("../out", "contains '..'"), ("good/../../out", "contains '..'"),
                       (str(tmp_path / "out"), "is outside --lora-root"),
                       ("link", "leads outside --lora-root through a symbolic link"),
                       ("good-with-bad-file",
                        "leads outside --lora-root through a symbolic link")]:
        with pytest.raises(APIError) as caught:
            confine(root, given)
        assert (caught.value.status, caught.value.code) == (400, "lora_path_outside_root")
        assert caught.value.message == (
            f"'lora_path' {given!r} {why}. Runtime adapters are loaded only from under "
            f"--lora-root ({root}).")
