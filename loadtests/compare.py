"""`huatuo bench compare`: our gateway against vLLM's own OpenAI server, side by side.

Both servers load the same checkpoint with the same engine settings, on the same machine, and
get the same workload at the same load levels. Timing on small shared machines is noisy, so runs
are interleaved (A B A B ...) and medians over the repeats are quoted; the API process's own
CPU seconds per request (from /proc/PID/stat, the engine-core child excluded) is reported too,
as the steadier measure of what the gateway itself costs.

Schedules:
- `alone` (default): one server runs at a time: start A, run every level, stop; start B, ...;
  repeated `--repeats` times. Nothing else competes for the CPU while a server is measured.
- `together`: both servers start (one after the other) and stay up; each level is run A, B, A, B.
  Fewer engine starts; the idle server is left running during the other's runs.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.report import Slo, describe, summarize
from loadtests.runner import LoadSpec, RunResult, Target, run_load, run_sweep_async
from loadtests.server_metrics import prefix_cache_hit_rate, snapshot
from loadtests.server_process import ServerProcess, free_port, huatuo_serve_argv
from loadtests.workloads import BenchRequest

OURS = "huatuo"
VLLM = "vllm"
SERVED_NAME = "huatuo-bench"


@dataclass
class EngineSettings:
    """Settings given identically to both servers."""

    model_dir: Path
    max_model_len: int | None = None
    dtype: str = "auto"
    max_num_seqs: int | None = None
    kv_cache_space: int = 1  # GiB, VLLM_CPU_KVCACHE_SPACE (vLLM parses it as an int)
    seed: int = 0
    # No torch.compile / graphs: starts in seconds instead of minutes on a busy CPU machine.
    enforce_eager: bool = False
    extra_ours: list[str] = field(default_factory=list)
    extra_vllm: list[str] = field(default_factory=list)

    def common_flags(self) -> list[str]:
        flags = ["--model", str(self.model_dir), "--served-model-name", SERVED_NAME,
                 "--dtype", self.dtype, "--seed", str(self.seed)]
        if self.max_model_len:
            flags += ["--max-model-len", str(self.max_model_len)]
        if self.max_num_seqs:
            flags += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.enforce_eager:
            flags += ["--enforce-eager"]
        return flags


def ours_command(settings: EngineSettings, port: int) -> list[str]:
    return huatuo_serve_argv(port, ["--kv-cache-space", str(settings.kv_cache_space),
                                    *settings.common_flags(), *settings.extra_ours])


def vllm_command(settings: EngineSettings, port: int, chat_template: Path) -> list[str]:
    # The published checkpoints have no chat template; vLLM's server needs ours as a file.
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
            "--port", str(port), "--chat-template", str(chat_template),
            *settings.common_flags(), *settings.extra_vllm]


def write_chat_template(directory: Path) -> Path:
    from huatuogpt2.prompt_format import CHAT_TEMPLATE

    path = directory / "huatuo2_chat_template.jinja"
    path.write_text(CHAT_TEMPLATE, encoding="utf-8")
    return path


@dataclass
class Measurement:
    server: str
    repeat: int
    run: RunResult
    api_cpu_s: float
    engine_cpu_s: float
    # Prefix-cache hit rate during the run (the engine's counters on /metrics), when known.
    prefix_hit_rate: float | None = None

    def summary(self, slo: Slo | None) -> dict:
        s = summarize(self.run, slo)
        done = max(s["completed"], 1)
        s["api_cpu_ms_per_request"] = 1000.0 * self.api_cpu_s / done
        s["engine_cpu_ms_per_request"] = 1000.0 * self.engine_cpu_s / done
        s["prefix_cache_hit_rate"] = self.prefix_hit_rate
        s.update(turn_ttfts(self.run))
        return s


def turn_ttfts(run: RunResult) -> dict:
    """TTFT p50 of first turns and of later turns (multi-turn workloads: a later turn's
    history is a prefix the server may have cached)."""
    ok = [r for r in run.results if r.ok and r.ttft is not None]
    return {"ttft_p50_first_turn": describe(r.ttft for r in ok if r.turn == 0)["p50"],
            "ttft_p50_later_turns": describe(r.ttft for r in ok if r.turn > 0)["p50"]}


async def _hit_counters(base_url: str):
    try:
        return await snapshot([base_url])
    except Exception:  # noqa: BLE001 - a server without /metrics: no hit rate, not a failure
        return None


async def measure_level(server: ServerProcess, target: Target,
                        requests: Sequence[BenchRequest], spec: LoadSpec,
                        show_progress: bool) -> tuple[RunResult, float, float, float | None]:
    """One level against one server: its run, the API process's and the engine's CPU
    seconds, and the prefix-cache hit rate during the measured requests."""
    if spec.warmup:
        warm = LoadSpec("closed", spec.concurrency or 1, None, 1.0, spec.warmup, None, 0,
                        spec.seed)
        await run_sweep_async(target, requests, [warm], show_progress=False)
    before = await _hit_counters(server.base_url)
    api0, engine0 = server.cpu()
    measured = LoadSpec(**{**spec.__dict__, "warmup": 0})
    (run,) = await run_sweep_async(target, requests, [measured], show_progress)
    api1, engine1 = server.cpu()
    after = await _hit_counters(server.base_url)
    hit_rate = (prefix_cache_hit_rate(before.delta(after))
                if before is not None and after is not None else None)
    return run, api1 - api0, engine1 - engine0, hit_rate


def run_compare(settings: EngineSettings, requests: Sequence[BenchRequest],
                specs: Sequence[LoadSpec], *, target_template: Target, repeats: int,
                schedule: str, log_dir: Path, show_progress: bool = True,
                order: Sequence[str] = (OURS, VLLM)) -> list[Measurement]:
    """Start the servers per `schedule`, run every level against each, return all runs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    template_dir = Path(tempfile.mkdtemp(prefix="huatuo-bench-"))
    chat_template = write_chat_template(template_dir)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_space)}
    counter = iter(range(10_000))

    def make(name: str) -> ServerProcess:
        port = free_port()
        argv = (ours_command(settings, port) if name == OURS
                else vllm_command(settings, port, chat_template))
        log = log_dir / f"{name}-{next(counter)}.log"
        return ServerProcess(argv, log, port=port, env=env, name=name)

    def target_for(server: ServerProcess) -> Target:
        return Target(server.base_url, SERVED_NAME, target_template.api_key,
                      target_template.stream, target_template.timeout,
                      target_template.sampling)

    measurements: list[Measurement] = []

    def record(server: ServerProcess, repeat: int, spec: LoadSpec) -> None:
        print(f"[compare] {server.name} repeat {repeat + 1}/{repeats} {spec.label()}",
              file=sys.stderr, flush=True)
        run, api, engine, hits = run_load(
            measure_level(server, target_for(server), requests, spec, show_progress))
        measurements.append(Measurement(server.name, repeat, run, api, engine, hits))

    if schedule == "alone":
        for repeat in range(repeats):
            for name in order:
                server = make(name)
                print(f"[compare] starting {name}: {' '.join(server.argv)}", file=sys.stderr,
                      flush=True)
                try:
                    server.start_ready()
                except (RuntimeError, TimeoutError) as exc:
                    # One failed start must not throw away the runs already measured.
                    print(f"[compare] {name} did not start, repeat {repeat + 1} skipped: {exc}",
                          file=sys.stderr, flush=True)
                    continue
                try:
                    for spec in specs:
                        record(server, repeat, spec)
                finally:
                    server.stop()
    elif schedule == "together":
        servers = {}
        try:
            for name in order:
                servers[name] = make(name)
                servers[name].start_ready()
            for spec in specs:
                for repeat in range(repeats):
                    for name in order:
                        record(servers[name], repeat, spec)
        finally:
            for server in servers.values():
                server.stop()
    else:
        raise ValueError(f"schedule must be 'alone' or 'together', got {schedule!r}")
    return measurements


# Figures compared: (key in the median summary, label, True when higher is better).
COMPARED = [
    ("request_throughput", "req/s", True),
    ("output_token_throughput", "output tok/s", True),
    ("ttft_p50", "TTFT p50 ms", False),
    ("ttft_p90", "TTFT p90 ms", False),
    ("ttft_p99", "TTFT p99 ms", False),
    ("itl_p50", "ITL p50 ms", False),
    ("tpot_p50", "TPOT p50 ms", False),
    ("e2e_p50", "E2E p50 ms", False),
    ("e2e_p99", "E2E p99 ms", False),
    ("api_cpu_ms_per_request", "API CPU ms/req", False),
    ("engine_cpu_ms_per_request", "engine CPU ms/req", False),
    ("errors", "errors", False),
]


def _flat(summary: dict) -> dict:
    flat = {k: summary[k] for k in ("request_throughput", "output_token_throughput",
                                    "api_cpu_ms_per_request", "engine_cpu_ms_per_request",
                                    "errors", "mean_output_tokens")}
    for metric in ("ttft", "itl", "tpot", "e2e"):
        for p in ("p50", "p90", "p99"):
            flat[f"{metric}_{p}"] = summary[f"{metric}_ms"][p]
    return flat


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(measurements: Sequence[Measurement], specs: Sequence[LoadSpec],
              slo: Slo | None) -> list[dict]:
    """Per level: each server's medians over repeats, and the ratios ours / vLLM's."""
    levels = []
    for spec in specs:
        label = spec.label()
        per_server: dict[str, dict] = {}
        for name in (OURS, VLLM):
            flats = [_flat(m.summary(slo)) for m in measurements
                     if m.server == name and m.run.spec.label() == label]
            per_server[name] = {k: _median([f[k] for f in flats]) for k in flats[0]} \
                if flats else {}
            per_server[name]["repeats"] = len(flats)
        ratios = {}
        for key, _, _ in COMPARED:
            ours, theirs = per_server[OURS].get(key), per_server[VLLM].get(key)
            ratios[key] = ours / theirs if ours is not None and theirs else None
        levels.append({"label": label, "spec": spec.__dict__, OURS: per_server[OURS],
                       VLLM: per_server[VLLM], "ratio": ratios})
    return levels


def format_comparison(levels: Sequence[dict]) -> str:
    """Markdown table: one row per (level, figure): ours, vLLM's, ratio, and who is ahead."""
    lines = ["| level | figure | huatuo serve | vLLM api_server | ours / vLLM |",
             "|---|---|---:|---:|---:|"]
    for level in levels:
        for key, label, higher_better in COMPARED:
            ours, theirs = level[OURS].get(key), level[VLLM].get(key)
            ratio = level["ratio"].get(key)
            mark = ""
            if ratio is not None and key != "errors":
                better = ratio >= 1 if higher_better else ratio <= 1
                mark = " ✓" if better else " ✗"
            lines.append(f"| {level['label']} | {label} | {_num(ours)} | {_num(theirs)} | "
                         f"{'-' if ratio is None else f'{ratio:.2f}'}{mark} |")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"
