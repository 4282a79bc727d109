"""Building the tiny demo checkpoint off a terminal writes no progress bar into the log."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers.utils import logging as hf_logging

from huatuogpt2.demo_checkpoint import build_tiny_llama


def test_no_progress_bar_off_a_terminal(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    hf_logging.enable_progress_bar()  # as a fresh process starts, whatever ran before
    build_tiny_llama(tmp_path / "model", hidden_size=16, num_layers=1, vocab_size=300)
    captured = capfd.readouterr()
    assert "Writing model shards" not in captured.err + captured.out
    assert (tmp_path / "model" / "model.safetensors").exists()
