"""Shared fixtures: tiny checkpoints built by the tests, and real servers started once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server_process import SERVER_MAX_MODEL_LEN, ServerProcess, start_server


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama-layout checkpoint whose tokenizer has NO chat template (as published)."""
    from huatuogpt2.demo_checkpoint import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-huatuo")


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A larger random model (8 layers, hidden 512: about 80 tokens/s on two cores), for tests
    that need answers still streaming seconds later, however quiet the machine."""
    from huatuogpt2.demo_checkpoint import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "slow-huatuo", hidden_size=512,
                            num_layers=8, num_heads=8, num_kv_heads=8)


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """The shared `huatuo serve` on the tiny model (real vLLM engine), one per test session."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    proc = start_server(
        ["--model", str(tiny_model_dir), "--max-model-len", str(SERVER_MAX_MODEL_LEN),
         "--dtype", "float32"],
        log,
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def slow_server(slow_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[ServerProcess]:
    """`huatuo serve` on the 8-layer model: answers still stream seconds later, however quiet
    the machine (and however long the engine, which keeps both cores busy, starves the test
    process of a core)."""
    log = tmp_path_factory.mktemp("logs") / "slow.log"
    proc = start_server(["--model", str(slow_model_dir), "--max-model-len", "2048",
                         "--dtype", "float32"], log)
    yield proc
    proc.stop()
