"""`huatuo demo` (`make demo`): train the tiny demo model once (cached), serve it, and print
working examples once it accepts requests.

    huatuo demo [--host 127.0.0.1] [--port 8000] [--untrained] [--log-level info]

The first run trains a tiny model on the bundled sample on the CPU (see docs/training.md); its
output goes to a log file in the cache, so the terminal shows one line before and one after.
Later runs start at once. `--untrained` serves the random demo checkpoint instead (its answers
are noise). The address, the page and the examples are the last lines printed before the
server is ready; vLLM's start-up log shows with `--log-level debug`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from adapters.training.demo import demo_key, ensure_trained_demo_model, trained_demo_dir
from huatuo import serve
from huatuogpt2.demo_checkpoint import ensure_demo_model
from server.logging_setup import configure_logging
from server.settings import default_cache_dir

MODEL_NAME = "huatuo-demo"
LOG_LEVELS = ("debug", "info", "warning", "error")


def examples(base_url: str) -> str:
    return f"""
Ready: the demo model {MODEL_NAME} is served on {base_url}

Consultation page: open {base_url}/ in a browser.

Or try the API from another terminal, in the repository root:

  curl -s {base_url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{MODEL_NAME}",
         "messages": [{{"role": "user", "content": "高血压患者饮食需要注意什么？"}}]}}'

  .venv/bin/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{base_url}/v1", api_key="not-needed")
stream = client.chat.completions.create(
    model="{MODEL_NAME}", stream=True,
    messages=[{{"role": "user", "content": "What should I do about a persistent cough?"}}])
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
PY

This is a tiny model trained for minutes on a small sample: it shows the API, not medicine.
Stop the server with Ctrl+C.
""".lstrip("\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to bind (default: %(default)s).")
    parser.add_argument("--port", type=int, default=8000,
                        help="Port to bind (default: %(default)s).")
    parser.add_argument("--untrained", action="store_true",
                        help="Serve the random demo checkpoint (no training; answers are noise).")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="Log level; debug also shows vLLM's start-up log and the training "
                             "output (default: %(default)s).")


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors included, so progress bars and
    C++ warnings too) to `log_path` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log_path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _trained_model(cache_dir: Path, log_level: str) -> Path:
    """The trained demo checkpoint; on the first run, train it with its output in a log file."""
    target = trained_demo_dir(cache_dir)
    if (target / "config.json").exists() or log_level == "debug":
        return ensure_trained_demo_model(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log_path = cache_dir / f"trained-demo-{demo_key()}.log"
    print(f"First run: training the demo model on the bundled sample (CPU; about a minute on "
          f"an idle 2-core machine). Training log: {log_path}", flush=True)
    try:
        with _output_to(log_path):
            model_dir = ensure_trained_demo_model(cache_dir)
    except BaseException:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        print("\n".join(["huatuo demo: training failed; the end of its log:", *tail]),
              file=sys.stderr)
        raise
    metrics = json.loads((model_dir / "train_metrics.json").read_text())
    print(f"Trained in {metrics['seconds']:.0f} s ({metrics['tokens_per_s']:,.0f} tokens/s); "
          f"loss curve: {model_dir / 'loss_curve.png'}", flush=True)
    return model_dir


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    cache_dir = default_cache_dir()
    if args.untrained:
        model_dir = ensure_demo_model(cache_dir)
    else:
        model_dir = _trained_model(cache_dir, args.log_level)
    base_url = f"http://{args.host}:{args.port}"
    print(f"Starting the server on {base_url} (the engine takes 30-60 s to start on 2 cores)...",
          flush=True)
    # Served in the dtype it was trained in (fp32): a bf16 cast would change its answers.
    serve_args = ["--model", str(model_dir), "--served-model-name", MODEL_NAME,
                  "--host", args.host, "--port", str(args.port), "--dtype", "float32",
                  "--log-level", args.log_level]
    parser = argparse.ArgumentParser(prog="huatuo serve")
    serve.add_arguments(parser)
    return serve.run(parser.parse_args(serve_args),
                     on_ready=lambda: print(examples(base_url), flush=True))
