"""`huatuo train` configuration: YAML, flag overrides, path resolution, errors that say where."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from adapters.training import cli
from adapters.training.config import ConfigError, load_config, overrides_from_args

CONFIGS = Path(__file__).resolve().parents[2] / "adapters" / "training" / "configs"


def write(tmp: Path, text: str) -> Path:
    (tmp / "d.json").write_text("[]")
    path = tmp / "c.yaml"
    path.write_text(text)
    return path


BASE = """
model: {path: tiny-random}
data:
  sources: [{name: sft, path: d.json, priority: 1, epochs: 3}]
"""


def test_flags_override_yaml_and_paths_resolve_next_to_the_yaml(tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.chdir("/")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--config", str(write(tmp_path, BASE)),
                              "--training.max_steps", "7", "--lora.enabled", "yes",
                              "--lora.target_modules", "q_proj,v_proj"])
    config = load_config(args.config, overrides_from_args(args))
    assert config.training.max_steps == 7
    assert config.lora.enabled is True and config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.data.sources[0].path == str(tmp_path / "d.json")
    assert config.data.sources[0].epochs == 3.0
    assert config.training.learning_rate == 1e-4  # upstream default kept


@pytest.mark.parametrize(("override", "message"), [
    ({"training.nope": "1"}, "training: unknown key"),
    ({"training.max_steps": "many"}, "training.max_steps: expected int"),
    ({"lora.enabled": "perhaps"}, "lora.enabled: expected true/false"),
    ({"model.dtype": "fp16"}, "model.dtype must be bf16 or fp32"),
])
def test_bad_values_are_named(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, BASE), override)


def test_missing_sources_and_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.path is required"):
        load_config(write(tmp_path, "data: {sources: []}"))
    with pytest.raises(ConfigError, match="at least one source"):
        load_config(write(tmp_path, "model: {path: x}"))
    with pytest.raises(ConfigError, match=r"data.sources\[0\]: unknown key"):
        load_config(write(tmp_path, "model: {path: x}\ndata: {sources: [{nme: a}]}"))


@pytest.mark.parametrize("name", ["tiny-cpu", "huatuogpt2-7b", "huatuogpt2-34b"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    if config.training.deepspeed:
        assert Path(config.training.deepspeed).exists()
    if name != "tiny-cpu":
        priorities = {s.name: s.priority for s in config.data.sources}
        assert priorities["web_cn"] == 32 and priorities["sft"] == 1
        assert config.data.max_seq_len == 4096


def test_help_renders() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert "--training.max_steps" in parser.format_help()


def test_non_llama_base_checkpoint_is_refused_with_the_fix(tmp_path: Path) -> None:
    import json

    from adapters.training.train import BaseModelError, check_llama_checkpoint

    with pytest.raises(BaseModelError, match="no config.json"):
        check_llama_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "baichuan"}))
    with pytest.raises(BaseModelError, match="huatuo convert"):
        check_llama_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(BaseModelError, match="tokenizer.json"):
        check_llama_checkpoint(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    check_llama_checkpoint(tmp_path)
