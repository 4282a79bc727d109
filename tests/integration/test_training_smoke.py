"""CPU smoke tests of `huatuo train`: loss falls, weights change, resume continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapters.training.plots import read_loss_log
from adapters.training.train import train
from tests.support.training import tiny_config


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_loss_falls_and_parameters_change(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "run")
    result = train(config)
    run = result.output_dir
    losses = [e["loss"] for e in read_loss_log(run / "loss_log.jsonl")]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    base, trained = weights(run / "base-model"), weights(result.export_dir)
    assert base.keys() == trained.keys()
    changed = [k for k in base if not torch.equal(base[k], trained[k])]
    assert len(changed) == len(base), sorted(set(base) - set(changed))
    # The run leaves its reports and a complete servable checkpoint.
    for name in ("loss_curve.png", "source_mix.png", "data_summary.json", "train_metrics.json"):
        assert (run / name).exists(), name
    export = result.export_dir
    for name in ("config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (export / name).exists(), name
    assert "chat_template" in json.loads((export / "tokenizer_config.json").read_text())
    assert json.loads((export / "config.json").read_text())["architectures"] == [
        "LlamaForCausalLM"]
    metrics = json.loads((run / "train_metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["tokens_per_s"] > 0
    print(f"\ntiny smoke: {metrics}")


class StopAt:
    """Interrupts training after a step (as a crash right after a checkpoint would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __getattr__(self, name):  # every other TrainerCallback event: no-op
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_resume_continues_from_the_saved_step(tmp_path: Path) -> None:
    straight = train(tiny_config(tmp_path, "straight", **{"training.max_steps": "6",
                                                           "training.save_steps": "3"}))
    assert straight.global_step == 6

    interrupted = tiny_config(tmp_path, "resumed", **{"training.max_steps": "6",
                                                       "training.save_steps": "3"})
    first = train(interrupted, extra_callbacks=[StopAt(3)])
    assert first.global_step == 3 and first.export_dir is None
    assert (first.output_dir / "checkpoint-3").is_dir()

    interrupted.training.resume = "latest"
    second = train(interrupted)
    assert second.global_step == 6
    assert second.metrics["steps"] == 3  # only steps 4..6 ran in the resumed process
    steps = [e["step"] for e in read_loss_log(second.output_dir / "loss_log.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    a, b = weights(straight.export_dir), weights(second.export_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_resume_from_missing_checkpoint_fails(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "run", **{"training.resume": str(tmp_path / "nope")})
    with pytest.raises(FileNotFoundError):
        train(config)
