"""LoRA: training through peft, and the exported merged weights equal base + adapter."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from adapters.training.train import train
from huatuogpt2.adapter_base import BASE_FILE, base_fingerprint
from server.lora import BaseModel, check_adapter
from tests.support.training import tiny_config


def test_lora_merge_logits_equal_base_plus_adapter(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "lora", **{
        "lora.enabled": "true", "lora.r": "4", "lora.alpha": "8", "lora.dropout": "0",
        "training.max_steps": "4", "training.learning_rate": "1e-2"})
    result = train(config)
    export = result.export_dir
    base_dir = result.output_dir / "base-model"
    adapter_dir = export / "adapter"
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 4
    # The adapter is what `huatuo serve --lora` serves: PEFT's files and the base's record.
    assert sorted(p.name for p in adapter_dir.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", BASE_FILE]
    record = json.loads((adapter_dir / BASE_FILE).read_text())
    assert record["fingerprint"] == base_fingerprint(base_dir)
    assert record["fingerprint"] != base_fingerprint(export)  # the merged model is another base
    served = check_adapter("tiny", adapter_dir, BaseModel.read(base_dir))
    assert served.rank == 4

    ids = torch.tensor([[5, 17, 42, 99, 7, 250, 3, 64]])
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        with_adapter = PeftModel.from_pretrained(base, adapter_dir).eval()
        adapter_logits = with_adapter(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
        merged_logits = merged(ids).logits
    # The adapter did learn something (otherwise the equality below would be trivial)...
    assert (adapter_logits - base_logits).abs().max() > 1e-3
    # ...and the merged checkpoint computes exactly base + adapter.
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=1e-4, atol=1e-4)
    assert not any("lora" in k for k in merged.state_dict())
