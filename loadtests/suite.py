"""`huatuo bench suite`: the whole performance table in one command.

Every workload (`single`, `multi`, `long`) at every concurrency, against the engine's limit
(`loadtests.limit`: AsyncLLM in process, no HTTP; run first, alone on the machine), then
against `huatuo serve` and vLLM's own `api_server` on the same checkpoint and settings.
Both servers stay up; each (workload, level, repeat) sends the same requests to both, in
alternating order (ours first on even repeats, vLLM first on odd ones), so slow drifts of a
shared machine hit both alike. Medians over repeats.

Each repeat draws its own requests (seed + repeat, + level): the engines keep their prefix
caches between runs, and a multi-turn workload sent twice would hit its own earlier run.
Warm-up requests come from yet another seed, for the same reason.

Writes `suite.json` and `suite.md` under --output-dir, and with `--record` the Markdown table
as `docs/results/bench-suite.json` (rendered into docs/performance.md by `huatuo figures`)
and the plots into docs/img/.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests.client import SamplingOptions
from loadtests.compare import (
    OURS,
    SERVED_NAME,
    VLLM,
    EngineSettings,
    Measurement,
    measure_level,
    ours_command,
    turn_ttfts,
    vllm_command,
    write_chat_template,
)
from loadtests.limit import plan_item, run_from_json
from loadtests.report import summarize, write_json
from loadtests.runner import LoadSpec, Target, run_load, run_sweep_async
from loadtests.server_process import ROOT, ServerProcess, free_port
from loadtests.workloads import BenchRequest, build_workload, tokenizer_counter

LIMIT = "limit"
SIDES = (OURS, VLLM, LIMIT)
# Figures per side kept for the table: key in a run summary -> key in the suite's medians.
_FIGURES = {
    "output_token_throughput": lambda s: s["output_token_throughput"],
    "request_throughput": lambda s: s["request_throughput"],
    "ttft_p50": lambda s: s["ttft_ms"]["p50"],
    "ttft_p99": lambda s: s["ttft_ms"]["p99"],
    "tpot_p50": lambda s: s["tpot_ms"]["p50"],
    "e2e_p50": lambda s: s["e2e_ms"]["p50"],
    "api_cpu_ms_per_request": lambda s: s.get("api_cpu_ms_per_request"),
    "engine_cpu_ms_per_request": lambda s: s.get("engine_cpu_ms_per_request"),
    "prefix_cache_hit_rate": lambda s: s.get("prefix_cache_hit_rate"),
    "ttft_p50_first_turn": lambda s: s.get("ttft_p50_first_turn"),
    "ttft_p50_later_turns": lambda s: s.get("ttft_p50_later_turns"),
    "errors": lambda s: s["errors"],
    "completed": lambda s: s["completed"],
}


@dataclass
class SuiteOptions:
    workloads: Sequence[str] = ("single", "multi", "long")
    concurrency: Sequence[int] = (1, 8, 32)
    num_requests: int = 200  # per level and side, at most
    duration: float | None = 30.0  # seconds per level and side, at most
    repeats: int = 3
    warmup: int = 8
    max_tokens: int = 32
    seed: int = 0
    limit: bool = True
    ours_source: Path | None = None  # run `huatuo serve` from another source tree (before/after)


@dataclass
class Item:
    """One (workload, level, repeat): the requests every side gets."""

    workload: str
    spec: LoadSpec
    repeat: int
    requests: list[BenchRequest]
    warmup: list[BenchRequest]

    @property
    def name(self) -> str:
        return f"{self.workload} {self.spec.label()} #{self.repeat + 1}"


def expected_seconds(options: SuiteOptions) -> float:
    """A rough upper bound of the run, said up front: three engine starts, then each item's
    measured seconds (bounded by --duration) and warm-up, for each side."""
    sides = 3 if options.limit else 2
    items = len(options.workloads) * len(options.concurrency) * options.repeats
    per_item = (options.duration or 60.0) + 5.0
    return 3 * 60.0 + items * sides * per_item


def build_items(options: SuiteOptions, model_dir: Path, max_model_len: int) -> list[Item]:
    count_tokens = tokenizer_counter(model_dir) if "long" in options.workloads else None
    items = []
    for workload in options.workloads:
        for level_index, concurrency in enumerate(options.concurrency):
            for repeat in range(options.repeats):
                seed = options.seed + 1000 * repeat + 100 * level_index

                def make(num: int, seed: int, workload: str = workload) -> list[BenchRequest]:
                    return build_workload(workload, num, seed=seed,
                                          max_tokens=options.max_tokens,
                                          max_model_len=max_model_len,
                                          count_tokens=count_tokens)

                spec = LoadSpec("closed", concurrency, None, 1.0, options.num_requests,
                                options.duration, 0, seed)
                warm = make(options.warmup, seed + 500_000) if options.warmup else []
                items.append(Item(workload, spec, repeat, make(options.num_requests, seed),
                                  warm))
    return items


def run_servers(settings: EngineSettings, items: Sequence[Item], sampling: SamplingOptions,
                log_dir: Path, ours_source: Path | None) -> dict[str, list[Measurement]]:
    """Both servers up; every item against each, alternating who goes first."""
    chat_template = write_chat_template(Path(tempfile.mkdtemp(prefix="huatuo-suite-")))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_space)}
    servers: dict[str, ServerProcess] = {}
    measured: dict[str, list[Measurement]] = {}
    try:
        for name in (OURS, VLLM):
            port = free_port()
            argv = (ours_command(settings, port) if name == OURS
                    else vllm_command(settings, port, chat_template))
            server_env = env
            if name == OURS and ours_source is not None:
                server_env = {**env, "PYTHONPATH": str(ours_source)}
            servers[name] = ServerProcess(argv, log_dir / f"{name}.log", port=port,
                                          env=server_env, name=name,
                                          cwd=ours_source if name == OURS else None)
            _say(f"starting {name}: {' '.join(argv)}")
            servers[name].start_ready()
        for number, item in enumerate(items, 1):
            order = (OURS, VLLM) if item.repeat % 2 == 0 else (VLLM, OURS)
            for name in order:
                _say(f"{number}/{len(items)} {item.name} {name}")
                server = servers[name]
                target = Target(server.base_url, SERVED_NAME, None, True, 600.0, sampling)
                measured.setdefault(item.name, []).append(
                    _measure(server, target, item))
    finally:
        for server in servers.values():
            server.stop()
    return measured


def _measure(server: ServerProcess, target: Target, item: Item) -> Measurement:
    async def go():
        if item.warmup:
            warm = LoadSpec("closed", item.spec.concurrency, None, 1.0, len(item.warmup))
            await run_sweep_async(target, item.warmup, [warm], show_progress=False)
        return await measure_level(server, target, item.requests, item.spec, False)

    run, api, engine, hits = run_load(go())
    return Measurement(server.name, item.repeat, run, api, engine, hits)


def run_limit(settings: EngineSettings, items: Sequence[Item], sampling: SamplingOptions,
              log_dir: Path) -> dict[str, dict]:
    """Every item against AsyncLLM in a child process (`python -m loadtests.limit`)."""
    work = Path(tempfile.mkdtemp(prefix="huatuo-limit-"))
    plan = {
        "settings": {"model_dir": str(settings.model_dir),
                     "max_model_len": settings.max_model_len, "dtype": settings.dtype,
                     "seed": settings.seed, "max_num_seqs": settings.max_num_seqs,
                     "enforce_eager": settings.enforce_eager},
        "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                     "seed": sampling.seed, "extra_body": sampling.extra_body},
        "runs": [],
    }
    for item in items:
        entry = plan_item(item.name, item.requests, item.spec)
        entry["spec"]["warmup"] = 0
        plan["runs"].append(entry)
        if item.warmup:
            warm = LoadSpec("closed", item.spec.concurrency, None, 1.0, len(item.warmup))
            plan["runs"].insert(-1, {**plan_item(f"warm-up {item.name}", item.warmup, warm)})
    (work / "plan.json").write_text(json.dumps(plan, ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_space),
           "PYTHONPATH": str(ROOT)}
    log_dir.mkdir(parents=True, exist_ok=True)
    _say("starting the in-process limit (AsyncLLM, no HTTP)")
    with open(log_dir / "limit.log", "ab") as log:
        subprocess.run([sys.executable, "-m", "loadtests.limit", str(work / "plan.json"),
                        str(work / "out.json")], cwd=ROOT, env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    runs = json.loads((work / "out.json").read_text(encoding="utf-8"))
    return {r["name"]: r for r in runs if not r["name"].startswith("warm-up ")}


def limit_summary(record: dict) -> dict:
    run = run_from_json(record)
    summary = summarize(run)
    summary.update(turn_ttfts(run))
    done = max(summary["completed"], 1)
    # The driving process is the least CPU any in-process frontend costs per request.
    summary["api_cpu_ms_per_request"] = 1000.0 * record["frontend_cpu_s"] / done
    return summary


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(items: Sequence[Item], measured: dict[str, list[Measurement]],
              limit: dict[str, dict]) -> list[dict]:
    """Per (workload, level): each side's medians over repeats."""
    groups: dict[tuple[str, int], list[Item]] = {}
    for item in items:
        groups.setdefault((item.workload, item.spec.concurrency), []).append(item)
    rows = []
    for (workload, concurrency), group in groups.items():
        summaries: dict[str, list[dict]] = {side: [] for side in SIDES}
        for item in group:
            for m in measured.get(item.name, []):
                summaries[m.server].append(m.summary(None))
            if item.name in limit:
                summaries[LIMIT].append(limit_summary(limit[item.name]))
        medians = {side: {key: _median([get(s) for s in runs]) for key, get in _FIGURES.items()}
                   | {"repeats": len(runs)} for side, runs in summaries.items()}
        rows.append({"workload": workload, "concurrency": concurrency, **medians})
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _f(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def format_tables(rows: Sequence[dict]) -> str:
    """The Markdown the docs include: the main comparison, then the multi-turn details."""
    lines = [
        "| workload | c | tok/s ours | vLLM | limit | ours/vLLM | ours/limit "
        "| TTFT p50 ms ours | vLLM | limit | ours/vLLM "
        "| API CPU ms/req ours | vLLM | in-process | ours/vLLM |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours, theirs, lim = row[OURS], row[VLLM], row[LIMIT]
        tput, cpu = "output_token_throughput", "api_cpu_ms_per_request"
        lines.append(
            f"| {row['workload']} | {row['concurrency']} "
            f"| {_f(ours[tput])} | {_f(theirs[tput])} | {_f(lim[tput])} "
            f"| {_f(_ratio(ours[tput], theirs[tput]), 2)} | {_f(_ratio(ours[tput], lim[tput]), 2)} "
            f"| {_f(ours['ttft_p50'])} | {_f(theirs['ttft_p50'])} | {_f(lim['ttft_p50'])} "
            f"| {_f(_ratio(ours['ttft_p50'], theirs['ttft_p50']), 2)} "
            f"| {_f(ours[cpu], 1)} | {_f(theirs[cpu], 1)} | {_f(lim[cpu], 1)} "
            f"| {_f(_ratio(ours[cpu], theirs[cpu]), 2)} |")
    multi = [row for row in rows if row["workload"] == "multi"]
    if multi:
        lines += ["", "| multi, c | prefix-cache hit rate ours | vLLM "
                  "| TTFT p50 ms first turns / later turns, ours | vLLM | limit |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for row in multi:
            cells = [f"{_f(row[side]['ttft_p50_first_turn'])} / "
                     f"{_f(row[side]['ttft_p50_later_turns'])}" for side in SIDES]
            hits = [_f(None if row[s]["prefix_cache_hit_rate"] is None
                       else 100 * row[s]["prefix_cache_hit_rate"], 1) + " %"
                    for s in (OURS, VLLM)]
            lines.append(f"| {row['concurrency']} | {hits[0]} | {hits[1]} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: Path) -> Path:
    """Output tokens/s and TTFT p50 against concurrency: one column per workload, one line
    per side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(row["workload"] for row in rows))
    fig, axes = plt.subplots(2, len(workloads), figsize=(4 * len(workloads), 6.5), dpi=80,
                             squeeze=False)
    labels = {OURS: "huatuo serve", VLLM: "vLLM api_server", LIMIT: "AsyncLLM limit"}
    for col, workload in enumerate(workloads):
        mine = [row for row in rows if row["workload"] == workload]
        xs = [row["concurrency"] for row in mine]
        for side in SIDES:
            for ax, key in ((axes[0][col], "output_token_throughput"),
                            (axes[1][col], "ttft_p50")):
                ys = [row[side][key] for row in mine]
                if any(y is not None for y in ys):
                    ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o",
                            label=labels[side])
        axes[0][col].set_title(workload, fontsize=10)
        axes[0][col].set_ylabel("output tokens / s")
        axes[1][col].set_ylabel("TTFT p50, ms")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_suite(settings: EngineSettings, options: SuiteOptions, sampling: SamplingOptions,
              output_dir: Path, max_model_len: int) -> dict:
    started = time.time()
    _say(f"expected duration: at most about {expected_seconds(options) / 60:.0f} min "
         f"({len(options.workloads)} workloads x {len(options.concurrency)} levels x "
         f"{options.repeats} repeats x {'3' if options.limit else '2'} sides, "
         f"{options.duration or 'unbounded'} s per run)")
    items = build_items(options, settings.model_dir, max_model_len)
    limit: dict[str, dict] = {}
    if options.limit:
        try:
            limit = run_limit(settings, items, sampling, output_dir / "logs")
        except subprocess.CalledProcessError as exc:
            # The servers' figures are still worth having; the table shows "-" for the limit.
            _say(f"the limit failed ({exc}); see {output_dir / 'logs' / 'limit.log'}")
    measured = run_servers(settings, items, sampling, output_dir / "logs",
                           options.ours_source)
    rows = aggregate(items, measured, limit)
    data = {"options": {k: (str(v) if isinstance(v, Path) else v)
                        for k, v in options.__dict__.items()},
            "settings": {"model_dir": str(settings.model_dir), "dtype": settings.dtype,
                         "max_model_len": settings.max_model_len,
                         "kv_cache_space_gib": settings.kv_cache_space,
                         "enforce_eager": settings.enforce_eager},
            "sampling": sampling.fields(),
            "wall_s": time.time() - started,
            "rows": rows}
    write_json(data, output_dir / "suite.json")
    (output_dir / "suite.md").write_text(format_tables(rows) + "\n", encoding="utf-8")
    return data


def _say(message: str) -> None:
    print(f"[suite] {message}", file=sys.stderr, flush=True)
