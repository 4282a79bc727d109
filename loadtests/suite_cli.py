"""The flags and the command of `huatuo bench suite` (the logic is in `loadtests.suite`)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from loadtests.arguments import positive_list

RESULT_NAME = "bench-suite"
PLOT = Path("docs/img/bench-suite.png")



def _workloads(text: str) -> list[str]:
    from loadtests.workloads import WORKLOADS

    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"workloads are {','.join(WORKLOADS)}; got {text!r}")
    return names


def add_suite_parser(sub) -> None:
    parser = sub.add_parser(
        "suite", help="The whole performance table: every workload and level, ours vs vLLM's "
                      "server vs the in-process engine limit.",
        description="Run single, multi and long workloads at each concurrency against "
                    "`huatuo serve`, vLLM's api_server (both up, interleaved, repeated) and "
                    "AsyncLLM in process (the limit); print and write the Markdown table. "
                    "Bound the time with --duration and --repeats.")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="Checkpoint every side loads (default: the tiny demo model).")
    parser.add_argument("--workloads", type=_workloads, default=["single", "multi", "long"])
    parser.add_argument("--concurrency", type=positive_list(int), default=[1, 8, 32])
    parser.add_argument("--num-requests", type=int, default=200,
                        help="Most requests per run (a run also stops at --duration).")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="Most seconds per run (one side, one level, one repeat).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per side and level.")
    parser.add_argument("--warmup", type=int, default=8, help="Warm-up requests per run.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--dtype", default="float32",
                        choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--kv-cache-space", type=int, default=1,
                        help="GiB of KV cache on the CPU backend (every side).")
    parser.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                        help="Send ignore_eos so every answer is --max-tokens long on every "
                             "side (the same work), default on.")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="Every side without torch.compile: starts in seconds, not minutes, "
                             "on a busy CPU machine (and measures the eager engine).")
    parser.add_argument("--no-limit", action="store_true", help="Skip the in-process limit.")
    parser.add_argument("--ours-source", type=Path, default=None,
                        help="Run `huatuo serve` from this source tree (e.g. `git archive` of "
                             "an older commit) to measure before/after.")
    parser.add_argument("--output-dir", type=Path, default=Path("bench-results/suite"))
    parser.add_argument("--record", default=None, metavar="NAME",
                        help=f"Record the table as docs/results/NAME.json (e.g. {RESULT_NAME}) "
                             "and its plot as docs/img/NAME.png, for `huatuo figures`.")
    parser.set_defaults(jsonl=None, tokenizer=None)


def run_suite_command(args: argparse.Namespace) -> int:
    from loadtests.client import SamplingOptions
    from loadtests.compare import EngineSettings
    from loadtests.suite import SuiteOptions, format_tables, plot, run_suite

    model_dir = args.model_dir
    if model_dir is None:
        from huatuogpt2.demo_checkpoint import build_tiny_llama

        model_dir = build_tiny_llama(Path(tempfile.mkdtemp(prefix="huatuo-suite-model-")) /
                                     "tiny-huatuo")
    settings = EngineSettings(model_dir=model_dir, max_model_len=args.max_model_len,
                              dtype=args.dtype, kv_cache_space=args.kv_cache_space,
                              enforce_eager=args.enforce_eager)
    options = SuiteOptions(workloads=args.workloads, concurrency=args.concurrency,
                           num_requests=args.num_requests, duration=args.duration,
                           repeats=args.repeats, warmup=args.warmup,
                           max_tokens=args.max_tokens, limit=not args.no_limit,
                           ours_source=args.ours_source)
    sampling = SamplingOptions(extra_body={"ignore_eos": True} if args.ignore_eos else {})
    data = run_suite(settings, options, sampling, args.output_dir, args.max_model_len)
    table = format_tables(data["rows"])
    print(table)
    if args.record:
        from figures.record import write_result

        plot(data["rows"], PLOT.with_name(f"{args.record}.png"))
        write_result(args.record, table, data=data, inline=_inline(data["rows"]))
        print(f"recorded docs/results/{args.record}.json; run `huatuo figures`")
    print(f"results: {args.output_dir / 'suite.json'}")
    errors = sum((row[side]["errors"] or 0) for row in data["rows"]
                 for side in ("huatuo", "vllm", "limit"))
    if errors:
        print(json.dumps({"errors": errors}), file=sys.stderr)
    return 0 if not errors else 1


def _inline(rows: list[dict]) -> dict[str, str]:
    """Short figures for sentences: ours/vLLM API CPU and ours/limit throughput per row."""
    out = {}
    for row in rows:
        key = f"{row['workload']}_c{row['concurrency']}"
        ours, theirs, lim = row["huatuo"], row["vllm"], row["limit"]
        cpu = "api_cpu_ms_per_request"
        if ours[cpu] and theirs[cpu]:
            out[f"cpu_{key}"] = f"{ours[cpu] / theirs[cpu]:.2f}"
        tput = "output_token_throughput"
        if ours[tput] and lim[tput]:
            out[f"limit_{key}"] = f"{ours[tput] / lim[tput]:.2f}"
    return out
