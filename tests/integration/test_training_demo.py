"""`ensure_trained_demo_model`: trains once into the cache, atomically; later calls reuse it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.training import demo
from tests.support.training import write_data


def test_trains_once_then_returns_the_cached_checkpoint(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sft, web = write_data(tmp_path / "data")
    config = tmp_path / "demo.yaml"
    # The shipped tiny-cpu.yaml takes minutes; the same code path with 3 short steps.
    config.write_text(f"""
model: {{path: tiny-random, dtype: fp32, tiny_vocab_size: 512}}
data:
  max_seq_len: 128
  sources: [{{name: web, path: {web}, priority: 8}}, {{name: sft, path: {sft}, priority: 1}}]
training: {{max_steps: 3, per_device_batch_size: 2, gradient_accumulation_steps: 1,
           logging_steps: 1, save_steps: 100, use_cpu: true}}
export: {{dtype: fp32, max_new_tokens: 64}}
""")
    monkeypatch.setattr(demo, "DEMO_CONFIG", config)
    monkeypatch.setattr(demo, "DEMO_DATA", (sft, web))
    cache = tmp_path / "cache"

    first = demo.ensure_trained_demo_model(cache)
    assert first.parent == cache and first.name.startswith("trained-demo-")
    assert json.loads((first / "generation_config.json").read_text())["max_new_tokens"] == 64
    for name in ("model.safetensors", "tokenizer.json", "loss_curve.png", "source_mix.png"):
        assert (first / name).exists(), name
    # No staging directories left behind.
    assert [p.name for p in cache.iterdir()] == [first.name]

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained again although the cache was valid")

    monkeypatch.setattr("adapters.training.train.train", must_not_train)
    assert demo.ensure_trained_demo_model(cache) == first

    # Changing the data changes the key: a new model is due.
    sft.write_text(sft.read_text().replace("多喝水", "多喝温水"))
    assert demo.demo_key() not in first.name
