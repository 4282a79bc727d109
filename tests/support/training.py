"""Small configs and data for the training integration tests (seconds on a CPU)."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.training.config import TrainConfig, load_config


def write_data(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    sft = [{"id": f"s{i}", "conversations": [
        {"from": "human", "value": f"头痛第{i % 5}天了怎么办？"},
        {"from": "gpt", "value": "建议多休息，多喝水；如果持续不缓解，请及时就医。"}]}
        for i in range(24)]
    web = [{"id": f"w{i}", "conversations": [
        {"from": "human", "value": "What helps a cold?"},
        {"from": "gpt", "value": "Rest, fluids, and a doctor if the fever lasts."}]}
        for i in range(12)]
    (directory / "sft.json").write_text(json.dumps(sft, ensure_ascii=False))
    (directory / "web.jsonl").write_text("".join(json.dumps(r) + "\n" for r in web))
    return directory / "sft.json", directory / "web.jsonl"


def tiny_config(tmp: Path, output: str, **overrides: str) -> TrainConfig:
    sft, web = write_data(tmp / "data")
    config = tmp / "train.yaml"
    config.write_text(f"""
model: {{path: tiny-random, dtype: fp32, tiny_vocab_size: 512}}
data:
  max_seq_len: 128
  seed: 3
  sources:
    - {{name: web, path: {web}, priority: 8}}
    - {{name: sft, path: {sft}, priority: 1, epochs: 2}}
training:
  output_dir: {tmp / output}
  learning_rate: 3.0e-3
  max_steps: 12
  per_device_batch_size: 2
  gradient_accumulation_steps: 1
  warmup_ratio: 0.1
  logging_steps: 1
  save_steps: 100
  use_cpu: true
export: {{dtype: fp32, max_new_tokens: 64}}
""")
    return load_config(config, overrides)
