"""The engine's own limit: vLLM's AsyncLLM driven in process, no HTTP, no gateway.

The same requests (the HuatuoGPT2 prompt each server renders, tokenised the same way: no BOS),
the same sampling (the checkpoint's generation defaults, overridden by what the benchmark sends)
and the same load shapes (`loadtests.runner.run_level`) as `huatuo bench compare`, so a server's
throughput divided by this one is the fraction of the engine's ceiling the server delivers.
Prompts are tokenised before the clock starts: the limit is the engine's, not a frontend's.

It runs in its own process (`python -m loadtests.limit PLAN.json OUT.json`): vLLM starts its
engine core in a spawned child, and the bench's own process stays free of torch. The plan lists
runs (a name, requests, a load level); the output holds each run's results and the driving
process's own CPU seconds (the least any in-process frontend costs).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from loadtests.client import RequestResult, SamplingOptions
from loadtests.runner import LoadSpec, RunResult, run_level
from loadtests.server_process import cpu_seconds
from loadtests.workloads import BenchRequest

# SamplingParams fields the checkpoint's generation_config.json sets (as `huatuo serve` does).
_DEFAULTED = ("temperature", "top_p", "top_k", "repetition_penalty")


class EngineClient:
    """`BenchClient.send`'s contract over an in-process AsyncLLM: one RequestResult per
    request, TTFT at the first output carrying text, ITL between outputs carrying text."""

    def __init__(self, engine, prompts: dict[int, list[int]], sampling: dict) -> None:
        self.engine = engine
        self.prompts = prompts  # id(BenchRequest) -> prompt token ids
        self.sampling = sampling
        self._ids = itertools.count()

    async def send(self, request: BenchRequest) -> RequestResult:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        result = RequestResult(ok=False, start=time.perf_counter(),
                               conversation=request.conversation, turn=request.turn)
        prompt = self.prompts[id(request)]
        params = SamplingParams(max_tokens=request.max_tokens,
                                output_kind=RequestOutputKind.DELTA, **self.sampling)
        last = None
        try:
            async for output in self.engine.generate({"prompt_token_ids": prompt}, params,
                                                     f"limit-{next(self._ids)}"):
                now = time.perf_counter()
                completion = output.outputs[0]
                result.output_tokens += len(completion.token_ids)
                result.finish_reason = completion.finish_reason or result.finish_reason
                if completion.text:
                    last = result.content_chunk(now, last)
            result.prompt_tokens = len(prompt)
            result.usage_reported = True
            result.ok = True
        except Exception as exc:  # noqa: BLE001 - a failed request is a result, as over HTTP
            result.error, result.error_message = "engine_error", repr(exc)[:500]
        result.e2e = time.perf_counter() - result.start
        return result


def sampling_fields(model_dir: Path, options: SamplingOptions) -> dict:
    """What `huatuo serve` would pass to SamplingParams for these request fields."""
    from huatuogpt2.checkpoint_metadata import read_generation_defaults

    defaults = read_generation_defaults(model_dir)
    values = {k: defaults[k] for k in _DEFAULTED if k in defaults}
    return {**values, **options.fields()}


def engine_args(settings: dict):
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(
        model=settings["model_dir"], max_model_len=settings.get("max_model_len"),
        dtype=settings.get("dtype", "auto"), seed=settings.get("seed", 0),
        max_num_seqs=settings.get("max_num_seqs"),
        enforce_eager=settings.get("enforce_eager", False),
        # The ceiling: no per-step statistics (both servers keep theirs for /metrics).
        disable_log_stats=True, enable_log_requests=False)


async def run_plan(plan: dict) -> list[dict]:
    from transformers import AutoTokenizer
    from vllm.v1.engine.async_llm import AsyncLLM

    settings = plan["settings"]
    tokenizer = AutoTokenizer.from_pretrained(settings["model_dir"])
    options = SamplingOptions(**plan.get("sampling", {}))
    sampling = sampling_fields(Path(settings["model_dir"]), options)
    engine = AsyncLLM.from_engine_args(engine_args(settings))
    out = []
    try:
        for item in plan["runs"]:
            requests = [BenchRequest(**r) for r in item["requests"]]
            prompts = {id(r): tokenizer.encode(r.prompt_text(), add_special_tokens=False)
                       for r in requests}
            spec = LoadSpec(**item["spec"])
            print(f"[limit] {item['name']} {spec.label()}", file=sys.stderr, flush=True)
            client = EngineClient(engine, prompts, sampling)
            if spec.warmup:
                await run_level(client, requests, LoadSpec(**{**item["spec"], "warmup": 0,
                                                             "num_requests": spec.warmup,
                                                             "duration": None}),
                                show_progress=False)
            cpu0 = cpu_seconds(os.getpid())
            run = await run_level(client, requests, LoadSpec(**{**item["spec"], "warmup": 0}),
                                  show_progress=False)
            cpu = cpu_seconds(os.getpid()) - cpu0
            out.append({"name": item["name"], "spec": asdict(run.spec), "duration": run.duration,
                        "started_at": run.started_at, "frontend_cpu_s": cpu,
                        "results": [asdict(r) for r in run.results]})
    finally:
        engine.shutdown()
    return out


def run_from_json(record: dict) -> RunResult:
    """A run written by `run_plan`, back as a RunResult for `loadtests.report.summarize`."""
    names = {f.name for f in fields(RequestResult)}
    results = [RequestResult(**{k: v for k, v in r.items() if k in names})
               for r in record["results"]]
    return RunResult(LoadSpec(**record["spec"]), results, record["duration"],
                     record["started_at"])


def plan_item(name: str, requests: list[BenchRequest], spec: LoadSpec) -> dict:
    return {"name": name, "spec": asdict(spec),
            "requests": [{"messages": r.messages, "max_tokens": r.max_tokens,
                          "conversation": r.conversation, "turn": r.turn} for r in requests]}


def main(argv: list[str]) -> int:
    plan_path, out_path = Path(argv[0]), Path(argv[1])
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    runs = asyncio.run(run_plan(plan))
    out_path.write_text(json.dumps(runs, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
