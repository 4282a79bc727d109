"""`huatuo demo` (`make demo`): train the tiny demo model once (cached), print working
examples, serve it.

    huatuo demo [--host 127.0.0.1] [--port 8000] [--untrained]

The first run trains a tiny model on the bundled sample on the CPU (minutes, see
docs/training.md); later runs start at once. `--untrained` serves the random demo checkpoint
instead (its answers are noise).
"""

from __future__ import annotations

import argparse
import logging

from adapters.training.demo import ensure_trained_demo_model
from huatuo import serve
from huatuogpt2.demo_checkpoint import ensure_demo_model
from server.settings import default_cache_dir

MODEL_NAME = "huatuo-demo"


def examples(base_url: str) -> str:
    return f"""
Consultation page (open it in a browser once the server logs "Serving"): {base_url}/

Or try the API from another terminal:

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
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to bind (default: %(default)s).")
    parser.add_argument("--port", type=int, default=8000,
                        help="Port to bind (default: %(default)s).")
    parser.add_argument("--untrained", action="store_true",
                        help="Serve the random demo checkpoint (no training; answers are noise).")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache_dir = default_cache_dir()
    if args.untrained:
        model_dir = ensure_demo_model(cache_dir)
    else:
        model_dir = ensure_trained_demo_model(cache_dir)
    print(examples(f"http://{args.host}:{args.port}"), flush=True)
    # Served in the dtype it was trained in (fp32): a bf16 cast would change its answers.
    serve_args = ["--model", str(model_dir), "--served-model-name", MODEL_NAME,
                  "--host", args.host, "--port", str(args.port), "--dtype", "float32"]
    parser = argparse.ArgumentParser(prog="huatuo serve")
    serve.add_arguments(parser)
    return serve.run(parser.parse_args(serve_args))
