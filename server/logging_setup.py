"""Process-wide logging: plain lines for humans; access logs are JSON (server.access_log).

Our own loggers log at the chosen level; third-party libraries (vLLM's start-up, uvicorn's,
httpx's request lines, transformers) log warnings only, unless the level is `debug`. Progress
bars are drawn only on a terminal: in a log file they are hundreds of `\\r`-joined fragments.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Loggers whose INFO lines are for their own developers, not for someone starting a server.
THIRD_PARTY = ("vllm", "uvicorn", "uvicorn.error", "httpx", "httpcore", "transformers",
               "huggingface_hub", "accelerate", "filelock", "urllib3")


def third_party_level(level: str) -> str:
    """The level third-party loggers get: `warning` unless we are debugging."""
    return "debug" if level.lower() == "debug" else "warning"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    others = third_party_level(level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(others.upper())
    # uvicorn's own access log would print request lines; ours is structured and content-free.
    logging.getLogger("uvicorn.access").disabled = True
    # vLLM configures its loggers itself, in this process and in the engine processes it
    # spawns: the environment is what reaches them (read when vLLM is imported).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", others.upper())
    if others != "debug":
        # Deprecation notices inside vLLM and torch are for their developers; children inherit.
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    if not sys.stderr.isatty():
        # transformers / huggingface_hub read it when imported (weights written and loaded).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
