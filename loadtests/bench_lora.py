"""What serving through a LoRA adapter costs, measured with `huatuo bench`: not a test.

From one `huatuo train --lora.enabled true` run (its base, its export/adapter and its merged
export), it starts two servers on the same machine: the base with the adapter (`--lora`, runtime
loading on) and the merged checkpoint. Then:

1. `huatuo bench run` against the adapter and against the merged model, interleaved
   (A B A B, `--repeats` times) at each concurrency: output tokens/s and TTFT, medians;
2. a runtime load (`POST /v1/load_lora_adapter`) of a copy of the adapter: how long the load
   takes, then the TTFT of the first request through it, and of the next ones.

It records the result as `docs/results/lora.json` (`huatuo figures` renders it into
docs/lora.md):

    python -m loadtests.bench_lora --run-dir runs/lora-bench   # trains the tiny run first
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from figures.record import write_result
from loadtests.server_process import ROOT, ServerProcess, free_port, huatuo_serve_argv

ADMIN_KEY = "bench-admin"
CONFIG = ROOT / "adapters" / "training" / "configs" / "tiny-cpu.yaml"


def train(run_dir: Path) -> None:
    """The tiny LoRA run the figures are taken on (skipped when its export exists)."""
    if (run_dir / "export" / "adapter" / "adapter_config.json").exists():
        return
    subprocess.run(
        [sys.executable, "-m", "huatuo", "train", "--config", str(CONFIG),
         "--training.output_dir", str(run_dir), "--training.max_steps", "6",
         "--training.per_device_batch_size", "2", "--data.max_seq_len", "256",
         "--training.save_steps", "1000", "--lora.enabled", "true", "--lora.r", "8",
         "--lora.alpha", "16", "--lora.dropout", "0"], cwd=ROOT, check=True)


def start(args: list[str], log: Path) -> ServerProcess:
    port = free_port()
    return ServerProcess(huatuo_serve_argv(port, args), log, port=port,
                         env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}).start()


def bench(server: ServerProcess, model: str, concurrency: int, requests: int, out: Path
          ) -> dict:
    """One `huatuo bench run`; its summary of the level."""
    subprocess.run(
        [sys.executable, "-m", "huatuo", "bench", "run", "--base-url", server.base_url,
         "--model", model, "--concurrency", str(concurrency), "--num-requests", str(requests),
         "--max-tokens", "64", "--temperature", "0", "--extra-body", '{"ignore_eos": true}',
         "--output-dir", str(out), "--no-plots", "--no-progress", "--no-request-details"],
        cwd=ROOT, check=True, capture_output=True)
    (level,) = json.loads((out / "results.json").read_text())["levels"]
    assert level["errors"] == 0, level["error_kinds"]
    return level


def first_requests_after_load(server: ServerProcess, adapter: Path, root: Path, tries: int
                              ) -> dict:
    """Load a fresh copy of the adapter at runtime, then time the requests through it."""
    loads, firsts, nexts = [], [], []
    for i in range(tries):
        name = f"runtime-{i}"
        shutil.copytree(adapter, root / name)
        began = time.perf_counter()
        response = httpx.post(f"{server.base_url}/v1/load_lora_adapter",
                              json={"lora_name": name, "lora_path": name},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)
        loads.append(time.perf_counter() - began)
        response.raise_for_status()
        ttfts = [_ttft(server, name) for _ in range(4)]
        firsts.append(ttfts[0])
        nexts.append(statistics.median(ttfts[1:]))
    return {"load_ms": 1000 * statistics.median(loads),
            "first_ttft_ms": 1000 * statistics.median(firsts),
            "next_ttft_ms": 1000 * statistics.median(nexts)}


def _ttft(server: ServerProcess, model: str) -> float:
    body = {"model": model, "prompt": "<问>：孩子发烧怎么办？\n<答>：", "max_tokens": 8,
            "temperature": 0, "stream": True}
    began = time.perf_counter()
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"text"' in line:
                return time.perf_counter() - began
    raise RuntimeError("no token came back")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True,
                        help="A `huatuo train --lora.enabled true` output dir (trained if empty).")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--num-requests", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--load-tries", type=int, default=3)
    args = parser.parse_args(argv)
    train(args.run_dir)
    base, merged = args.run_dir / "base-model", args.run_dir / "export"
    adapter = merged / "adapter"
    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    root = work / "adapters"
    root.mkdir()
    common = ["--max-model-len", "512", "--dtype", "float32", "--served-model-name", "huatuo"]
    servers = [
        start(["--model", str(base), *common, "--lora", f"dept={adapter}",
               "--allow-runtime-lora", "--admin-api-key", ADMIN_KEY, "--lora-root", str(root)],
              work / "lora.log"),
        start(["--model", str(merged), *common], work / "merged.log"),
    ]
    try:
        for server in servers:
            server.wait_ready(900)
        lora, full = servers
        rows = {}
        for concurrency in args.concurrency:
            runs: dict[str, list[dict]] = {"adapter": [], "merged": []}
            for repeat in range(args.repeats):  # interleaved: A B A B
                for label, server, model in (("adapter", lora, "dept"),
                                             ("merged", full, "huatuo")):
                    runs[label].append(bench(server, model, concurrency, args.num_requests,
                                             work / f"{label}-{concurrency}-{repeat}"))
            rows[concurrency] = {
                label: {"tokens_per_s": statistics.median(
                            r["output_token_throughput"] for r in levels),
                        "ttft_p50_ms": statistics.median(r["ttft_ms"]["p50"] for r in levels)}
                for label, levels in runs.items()}
        after_load = first_requests_after_load(lora, adapter, root, args.load_tries)
    finally:
        for server in servers:
            server.stop()
    load_avg = os.getloadavg()[0]
    record(rows, after_load, load_avg, args)
    return 0


def record(rows: dict, after_load: dict, load_avg: float, args: argparse.Namespace) -> None:
    lines = ["| concurrency | adapter tokens/s | merged tokens/s | adapter / merged | "
             "adapter TTFT p50 | merged TTFT p50 |", "|---|---|---|---|---|---|"]
    inline = {}
    for concurrency, row in rows.items():
        a, m = row["adapter"], row["merged"]
        ratio = a["tokens_per_s"] / m["tokens_per_s"]
        lines.append(f"| {concurrency} | {a['tokens_per_s']:.0f} | {m['tokens_per_s']:.0f} | "
                     f"{ratio:.2f} | {a['ttft_p50_ms']:.0f} ms | {m['ttft_p50_ms']:.0f} ms |")
        inline[f"ratio_c{concurrency}"] = f"{ratio:.2f}"
    lines += ["", "| after a runtime load | |", "|---|---|",
              f"| `POST /v1/load_lora_adapter` | {after_load['load_ms']:.0f} ms |",
              f"| TTFT of the first request through it | {after_load['first_ttft_ms']:.0f} ms |",
              f"| TTFT of the next requests | {after_load['next_ttft_ms']:.0f} ms |",
              "", f"Medians of {args.repeats} interleaved runs of {args.num_requests} requests "
              f"(64 tokens each, greedy) per server and level; {args.load_tries} runtime loads. "
              f"Load average at the end: {load_avg:.1f}."]
    inline["load_ms"] = f"{after_load['load_ms']:.0f}"
    inline["first_ttft_ms"] = f"{after_load['first_ttft_ms']:.0f}"
    inline["next_ttft_ms"] = f"{after_load['next_ttft_ms']:.0f}"
    command = "python -m loadtests.bench_lora " + " ".join(sys.argv[1:])
    write_result("lora", "\n".join(lines), inline=inline,
                 data={"levels": {str(k): v for k, v in rows.items()},
                       "after_load": after_load, "load_average": load_avg},
                 command=command)


if __name__ == "__main__":
    raise SystemExit(main())
