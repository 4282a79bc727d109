"""Third-party loggers are quiet unless we debug (server/logging_setup.py)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator

import pytest

from server.logging_setup import THIRD_PARTY, configure_logging


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("VLLM_LOGGING_LEVEL", "PYTHONWARNINGS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    levels = {name: logging.getLogger(name).level for name in (*THIRD_PARTY, "")}
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_info_keeps_third_party_loggers_at_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging("info")
    for name in ("vllm", "httpx", "transformers", "uvicorn.error"):
        assert logging.getLogger(name).level == logging.WARNING, name
    assert os.environ["VLLM_LOGGING_LEVEL"] == "WARNING"  # reaches vLLM's engine processes
    assert "ignore::FutureWarning" in os.environ["PYTHONWARNINGS"]


def test_debug_shows_everything() -> None:
    configure_logging("debug")
    assert logging.getLogger("vllm").level == logging.DEBUG
    assert os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert "PYTHONWARNINGS" not in os.environ
