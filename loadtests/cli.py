"""`huatuo bench`: load-test an OpenAI-compatible server, or compare ours with vLLM's.

    huatuo bench run --base-url http://127.0.0.1:8000 --concurrency 1,8,32 --num-requests 200
    huatuo bench compare --model-dir DIR --concurrency 1,8,32 --num-requests 200 --repeats 2

See docs/performance.md for every flag with examples.

Exit status (the convention of every `huatuo` subcommand): 0 done, every request succeeded;
1 the work failed (requests failed, the server is unreachable or did not start); 2 bad usage
(bad flags, a missing --jsonl/--tokenizer/--model-dir, a rejected API key); 130 interrupted.
Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from loadtests import bench_router, suite_cli
from loadtests.arguments import positive_list
from loadtests.client import SamplingOptions
from loadtests.report import Slo, format_table, results_json, summarize, write_json
from loadtests.runner import LoadSpec, Target, run_sweep, sweep_specs
from loadtests.workloads import LANGUAGES, WORKLOADS, BenchRequest, build_workload


def _add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--workload", choices=WORKLOADS, default="single",
                       help="single: one-turn medical questions; multi: consultations that "
                            "resend the growing history; long: prompts near --max-model-len.")
    group.add_argument("--jsonl", type=Path, default=None,
                       help="Conversations to send instead (one JSON object per line: "
                            "{'messages': [...]} or the SFT {'conversations': [...]} schema); "
                            "each user turn becomes a request.")
    group.add_argument("--language", choices=LANGUAGES, default="mixed",
                       help="Language of generated questions.")
    group.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request.")
    group.add_argument("--max-model-len", type=int, default=None,
                       help="Context length the long workload fills (default 4096, or the "
                            "compared servers' --max-model-len).")
    group.add_argument("--tokenizer", type=Path, default=None,
                       help="Checkpoint directory whose tokenizer counts long prompts "
                            "(default: an estimate; compare uses --model-dir).")
    group.add_argument("--seed", type=int, default=0, help="Seed of the workload and arrivals.")


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load")
    group.add_argument("--mode", choices=("closed", "open"), default="closed",
                       help="closed: fixed concurrency; open: Poisson/gamma arrivals at --rate.")
    group.add_argument("--concurrency", type=positive_list(float), default=[1.0],
                       help="Closed loop: concurrency levels to sweep, e.g. 1,8,32.")
    group.add_argument("--rate", type=positive_list(float), default=None,
                       help="Open loop: arrival rates (requests/s) to sweep, e.g. 2,4,8 "
                            "('inf' sends everything at once).")
    group.add_argument("--burstiness", type=float, default=1.0,
                       help="Open loop: gamma shape of the gaps; 1 = Poisson, <1 burstier.")
    group.add_argument("--max-concurrency", type=int, default=None,
                       help="Open loop: most requests in flight at once (default: no cap).")
    group.add_argument("--num-requests", type=int, default=100,
                       help="Requests per level (the workload is cycled when shorter).")
    group.add_argument("--duration", type=float, default=None,
                       help="Seconds per level: no new request after it (default: no limit).")
    group.add_argument("--warmup", type=int, default=0,
                       help="Unrecorded requests sent before each level.")
    group.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                       help="Stream answers (SSE); --no-stream times whole responses only.")
    group.add_argument("--timeout", type=float, default=600.0, help="Per-request timeout, s.")
    group.add_argument("--temperature", type=float, default=None,
                       help="Sent with every request (default: the server's).")
    group.add_argument("--top-p", type=float, default=None, help="Sent with every request.")
    group.add_argument("--extra-body", type=json.loads, default={},
                       help="JSON object merged into every request body, e.g. '{\"top_k\": 5}'.")
    slo = parser.add_argument_group("SLOs (goodput counts requests meeting all that are set)")
    slo.add_argument("--slo-ttft-ms", type=float, default=None)
    slo.add_argument("--slo-tpot-ms", type=float, default=None)
    slo.add_argument("--slo-e2e-ms", type=float, default=None)
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", type=Path, default=Path("bench-results"),
                     help="Where results.json and the PNG plots go.")
    out.add_argument("--no-plots", action="store_true", help="Skip the PNG plots.")
    out.add_argument("--no-request-details", action="store_true",
                     help="Leave per-request records out of the JSON.")
    out.add_argument("--no-progress", action="store_true", help="No progress bars.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True,
                                metavar="{run,compare,suite,router}")
    run_parser = sub.add_parser("run", help="Load-test one OpenAI-compatible server.",
                                description="Load-test one OpenAI-compatible server.")
    run_parser.add_argument("--base-url", default=os.environ.get("HUATUO_BENCH_BASE_URL",
                                                                 "http://127.0.0.1:8000"),
                            help="Server root (without /v1). [env HUATUO_BENCH_BASE_URL]")
    run_parser.add_argument("--model", default=None,
                            help="Model id to send (default: the first of GET /v1/models).")
    run_parser.add_argument("--api-key", default=os.environ.get("HUATUO_BENCH_API_KEY"),
                            help="Bearer key. [env HUATUO_BENCH_API_KEY]")
    run_parser.add_argument("--session-header", action="store_true",
                            help="Send `X-Session-ID: consultation-<n>` with every request, one "
                                 "id per consultation (session-pinning routers hash it).")
    run_parser.add_argument("--metrics-url", action="append", default=[],
                            help="A server whose /metrics holds vLLM's prefix-cache counters, "
                                 "read before and after each level for the hit rate; repeat "
                                 "for every replica behind a router (default: --base-url).")
    _add_workload_arguments(run_parser)
    _add_load_arguments(run_parser)

    cmp_parser = sub.add_parser(
        "compare", help="Start `huatuo serve` and vLLM's own server on one checkpoint, run the "
                        "same load against each, print ours/vLLM ratios.",
        description="Start `huatuo serve` and vLLM's api_server on the same checkpoint and "
                    "settings, run the same workload against each (interleaved, repeated), "
                    "print medians and the ratios ours / vLLM's.")
    cmp_parser.add_argument("--model-dir", type=Path, default=None,
                            help="Llama-layout checkpoint both servers load (default: build "
                                 "the tiny demo model into a temporary directory).")
    cmp_parser.add_argument("--dtype", default="auto",
                            choices=["auto", "bfloat16", "float16", "float32"])
    cmp_parser.add_argument("--max-num-seqs", type=int, default=None)
    cmp_parser.add_argument("--kv-cache-space", type=int, default=1,
                            help="GiB of KV cache on the CPU backend (both servers).")
    cmp_parser.add_argument("--engine-seed", type=int, default=0)
    cmp_parser.add_argument("--repeats", type=int, default=2,
                            help="Runs per server and level; medians are reported.")
    cmp_parser.add_argument("--schedule", choices=("alone", "together"), default="alone",
                            help="alone: one server up at a time (restarted per repeat); "
                                 "together: both up, levels interleaved A B A B.")
    cmp_parser.add_argument("--ours-args", default="",
                            help="Extra flags for `huatuo serve` (one string).")
    cmp_parser.add_argument("--vllm-args", default="",
                            help="Extra flags for vLLM's api_server (one string).")
    _add_workload_arguments(cmp_parser)
    _add_load_arguments(cmp_parser)
    suite_cli.add_suite_parser(sub)
    router_parser = sub.add_parser(
        "router", help="Two replicas behind vllm-router: policies and failover compared.",
        description="Start two `huatuo serve` replicas and vllm-router with each policy; "
                    "multi-turn consultations; prefix-cache hit rate, TTFT, throughput, and a "
                    "replica killed mid-run (docs/scaling.md).")
    bench_router.add_arguments(router_parser)


class UsageError(Exception):
    """Bad usage: reported as one line, exit status 2."""


class WorkFailed(Exception):
    """The benchmark could not be done: reported as one line, exit status 1."""


def _usage(function, *args, **kwargs):
    """Call a function that checks the flags' values: its ValueError is bad usage."""
    try:
        return function(*args, **kwargs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _specs(args: argparse.Namespace) -> list[LoadSpec]:
    if args.mode == "open" and not args.rate:
        raise UsageError("--mode open needs --rate")
    levels = args.concurrency if args.mode == "closed" else args.rate
    return _usage(sweep_specs, mode=args.mode, levels=levels, num_requests=args.num_requests,
                       duration=args.duration, burstiness=args.burstiness,
                       max_concurrency=args.max_concurrency, warmup=args.warmup, seed=args.seed)


def _workload(args: argparse.Namespace, tokenizer: Path | None) -> list[BenchRequest]:
    count_tokens = None
    if args.workload == "long" and tokenizer is not None:
        from loadtests.workloads import tokenizer_counter

        count_tokens = tokenizer_counter(tokenizer)
    return _usage(build_workload, args.workload, args.num_requests, seed=args.seed,
                          language=args.language, max_tokens=args.max_tokens,
                          max_model_len=args.max_model_len or 4096, count_tokens=count_tokens,
                          jsonl=args.jsonl)


def _slo(args: argparse.Namespace) -> Slo:
    return Slo(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2e_ms)


def _sampling(args: argparse.Namespace) -> SamplingOptions:
    return SamplingOptions(temperature=args.temperature, top_p=args.top_p,
                           extra_body=args.extra_body)


def _meta(args: argparse.Namespace, requests: list[BenchRequest]) -> dict:
    skip = {"api_key", "bench_command"}
    return {
        # The command line, when this process is `huatuo bench ...` (not a test calling run()).
        "command": " ".join(["huatuo", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in skip},
        "workload_size": len(requests),
        "host_cpus": os.cpu_count(),
    }


def _error(message: str, code: int) -> int:
    message = " ".join(str(message).split())  # one line
    print(f"huatuo bench: error: {message}", file=sys.stderr)
    return code


def _check_paths(args: argparse.Namespace) -> None:
    jsonl, tokenizer = getattr(args, "jsonl", None), getattr(args, "tokenizer", None)
    if jsonl is not None and not jsonl.is_file():
        raise UsageError(f"--jsonl {jsonl}: no such file")
    if tokenizer is not None and not tokenizer.is_dir():
        raise UsageError(f"--tokenizer {tokenizer}: no such checkpoint directory")
    model_dir = getattr(args, "model_dir", None)
    if model_dir is not None and not (model_dir / "config.json").is_file():
        raise UsageError(f"--model-dir {model_dir}: not a checkpoint directory (no config.json)")


def _http_problem(exc: Exception, args: argparse.Namespace) -> Exception | None:
    """A failed GET /v1/models, as a one-line usage error or failure; None if not one."""
    import httpx

    base_url = getattr(args, "base_url", "the server")
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status in (401, 403):
            return UsageError(f"{base_url} refused the API key (HTTP {status}); pass --api-key "
                              "KEY or set HUATUO_BENCH_API_KEY")
        return WorkFailed(f"{exc.request.url}: HTTP {status}; is --base-url an "
                          "OpenAI-compatible server root (without /v1)?")
    if isinstance(exc, httpx.TransportError):
        return WorkFailed(f"cannot reach {base_url} ({type(exc).__name__}: {exc}); start the "
                          "server (huatuo serve ...) or pass --base-url")
    return None


def run(args: argparse.Namespace) -> int:
    try:
        _check_paths(args)
        if args.bench_command == "compare":
            return run_compare_command(args)
        if args.bench_command == "router":
            return bench_router.run(args)
        if args.bench_command == "suite":
            return suite_cli.run_suite_command(args)
        return run_bench_command(args)
    except UsageError as exc:
        return _error(str(exc), 2)
    except WorkFailed as exc:
        return _error(str(exc), 1)
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except Exception as exc:
        problem = _http_problem(exc, args)
        if problem is None:
            raise
        return _error(str(problem), 2 if isinstance(problem, UsageError) else 1)


def run_bench_command(args: argparse.Namespace) -> int:
    requests = _workload(args, args.tokenizer)
    target = Target(args.base_url, args.model, args.api_key, args.stream, args.timeout,
                    _sampling(args), session_header=args.session_header,
                    metrics_urls=tuple(args.metrics_url))
    runs = run_sweep(target, requests, _specs(args), show_progress=not args.no_progress)
    slo = _slo(args)
    data = results_json(runs, slo=slo, meta={**_meta(args, requests), "target":
                                             target.to_json()},
                        include_requests=not args.no_request_details)
    out = args.output_dir
    write_json(data, out / "results.json")
    print(format_table([summarize(r, slo) for r in runs]))
    for run_ in runs:
        errors = [f"{r.error}: {r.error_message}" for r in run_.results if not r.ok][:3]
        for line in errors:
            print(f"  {run_.spec.label()} error: {line[:200]}")
    if not args.no_plots:
        from loadtests.plots import plot_against_load, plot_latency_distributions

        plot_latency_distributions(runs, out / "latency.png", title=args.base_url)
        if len(runs) > 1:
            plot_against_load({args.base_url: [summarize(r, slo) for r in runs]},
                              out / "load.png")
    print(f"results: {out / 'results.json'}")
    return 0 if all(r.ok for run_ in runs for r in run_.results) else 1


def run_compare_command(args: argparse.Namespace) -> int:
    import shlex
    import tempfile

    from loadtests.compare import (
        OURS,
        VLLM,
        EngineSettings,
        aggregate,
        format_comparison,
        run_compare,
    )

    model_dir = args.model_dir
    if model_dir is None:
        from huatuogpt2.demo_checkpoint import build_tiny_llama

        model_dir = build_tiny_llama(Path(tempfile.mkdtemp(prefix="huatuo-bench-model-")) /
                                     "tiny-huatuo")
        print(f"[compare] no --model-dir: built the tiny demo model in {model_dir}",
              file=sys.stderr)
    settings = EngineSettings(model_dir=model_dir, max_model_len=args.max_model_len,
                              dtype=args.dtype, max_num_seqs=args.max_num_seqs,
                              kv_cache_space=args.kv_cache_space, seed=args.engine_seed,
                              extra_ours=shlex.split(args.ours_args),
                              extra_vllm=shlex.split(args.vllm_args))
    requests = _workload(args, args.tokenizer or model_dir)
    specs = _specs(args)
    template = Target("", None, None, args.stream, args.timeout, _sampling(args))
    out = args.output_dir
    measurements = run_compare(settings, requests, specs, target_template=template,
                               repeats=args.repeats, schedule=args.schedule,
                               log_dir=out / "logs", show_progress=not args.no_progress)
    slo = _slo(args)
    levels = aggregate(measurements, specs, slo)
    data = {
        "meta": {**_meta(args, requests), "model_dir": str(model_dir)},
        "levels": levels,
        "runs": [{"server": m.server, "repeat": m.repeat, **m.summary(slo),
                  **({"request_results": [r.to_json() for r in m.run.results]}
                     if not args.no_request_details else {})}
                 for m in measurements],
    }
    write_json(data, out / "compare.json")
    table = format_comparison(levels)
    (out / "compare.md").write_text(table + "\n")
    print(table)
    if not args.no_plots:
        from loadtests.plots import plot_against_load, plot_latency_distributions

        last = max(m.repeat for m in measurements)
        for name in (OURS, VLLM):
            runs = [m.run for m in measurements if m.server == name and m.repeat == last]
            plot_latency_distributions(runs, out / f"latency-{name}.png",
                                       title=f"{name} (repeat {last + 1})")
        series = {}
        for name, label in ((OURS, "huatuo serve"), (VLLM, "vLLM api_server")):
            series[label] = [{"spec": lv["spec"],
                              "output_token_throughput": lv[name].get("output_token_throughput"),
                              "ttft_ms": {"p50": lv[name].get("ttft_p50"),
                                          "p99": lv[name].get("ttft_p99")}}
                             for lv in levels]
        plot_against_load(series, out / "compare-load.png",
                          title="huatuo serve vs vLLM api_server (medians)")
    print(f"results: {out / 'compare.json'}, {out / 'compare.md'}")
    return 0
