"""`huatuo bench suite` pieces without servers: medians per side, the Markdown table, the
limit's results read back, the profile's ranking of py-spy stacks."""

from __future__ import annotations

from dataclasses import asdict

from loadtests.client import RequestResult
from loadtests.compare import OURS, VLLM, Measurement
from loadtests.limit import run_from_json
from loadtests.profile_gateway import top_functions
from loadtests.runner import LoadSpec, RunResult
from loadtests.suite import LIMIT, Item, aggregate, format_tables
from loadtests.workloads import BenchRequest


def _run(spec: LoadSpec, ttfts: list[float], tokens: int, duration: float,
         turns: list[int] | None = None) -> RunResult:
    turns = turns or [0] * len(ttfts)
    results = [RequestResult(ok=True, start=0.0, e2e=t + 0.5, ttft=t, output_tokens=tokens,
                             turn=turn) for t, turn in zip(ttfts, turns, strict=True)]
    return RunResult(spec, results, duration)


def _item(workload: str, repeat: int) -> Item:
    spec = LoadSpec("closed", 8, None, 1.0, 4, None, 0, repeat)
    return Item(workload, spec, repeat, [BenchRequest([{"role": "user", "content": "q"}], 4)],
                [])


def test_medians_per_side_ratios_and_multi_turn_table() -> None:
    items = [_item("multi", 0), _item("multi", 1), _item("multi", 2)]
    measured = {}
    for item, (ours_s, vllm_s, cpu) in zip(items, [(2.0, 4.0, 0.08), (1.0, 4.0, 0.04),
                                                     (4.0, 1.0, 0.4)], strict=True):
        measured[item.name] = [
            Measurement(OURS, item.repeat, _run(item.spec, [0.1, 0.3], 10, ours_s, [0, 1]),
                        cpu, 1.0, 0.5),
            Measurement(VLLM, item.repeat, _run(item.spec, [0.2, 0.4], 10, vllm_s, [0, 1]),
                        0.1, 1.0, 0.25),
        ]
    limit_record = {"name": items[0].name, "spec": asdict(items[0].spec), "duration": 0.5,
                    "started_at": 0.0, "frontend_cpu_s": 0.002,
                    "results": [asdict(r) for r in _run(items[0].spec, [0.05], 10, 1).results]}
    (row,) = aggregate(items, measured, {items[0].name: limit_record})
    # Throughput = 20 tokens / duration; the median of 10, 20, 5 is 10 (ours), of 5, 5, 20: 5.
    assert row[OURS]["output_token_throughput"] == 10.0
    assert row[VLLM]["output_token_throughput"] == 5.0
    assert row[LIMIT]["output_token_throughput"] == 20.0  # 10 tokens in 0.5 s
    assert row[OURS]["api_cpu_ms_per_request"] == 40.0  # median of 40, 20, 200 ms per request
    assert row[LIMIT]["api_cpu_ms_per_request"] == 2.0
    assert row[OURS]["prefix_cache_hit_rate"] == 0.5
    assert row[OURS]["ttft_p50_first_turn"] == 100.0
    assert row[OURS]["ttft_p50_later_turns"] == 300.0
    table = format_tables([row])
    assert "| multi | 8 | 10 | 5 | 20 | 2.00 | 0.50 |" in table
    assert "| 8 | 50.0 % | 25.0 % | 100 / 300 | 200 / 400 | 50 / - |" in table


def test_limit_results_read_back_as_runs() -> None:
    spec = LoadSpec("closed", 2, None, 1.0, 3, 5.0, 0, 7)
    result = RequestResult(ok=True, start=1.0, e2e=0.3, ttft=0.1, itl=[0.01, 0.02],
                           output_tokens=3, prompt_tokens=12, usage_reported=True, turn=1)
    run = run_from_json({"name": "x", "spec": asdict(spec), "duration": 2.5, "started_at": 9.0,
                         "frontend_cpu_s": 0.1, "results": [asdict(result)]})
    assert run.spec == spec and run.duration == 2.5 and run.results == [result]


def test_profile_ranks_functions_by_inclusive_share_once_per_stack() -> None:
    raw = "\n".join([
        "run (uvloop/__init__.py:1);send (uvicorn/http.py:5);write (uvicorn/http.py:9) 6",
        "run (uvloop/__init__.py:1);send (uvicorn/http.py:5);send (uvicorn/http.py:7) 2",
        "run (uvloop/__init__.py:1);encode (server/sse.py:30) 2",
    ])
    top, samples, leaves = top_functions(raw, count=3)
    assert samples == 10
    # A recursive frame counts once per stack; the loop's root frame is left out.
    assert top == [("send (uvicorn/http.py)", 0.8), ("write (uvicorn/http.py)", 0.6),
                   ("encode (server/sse.py)", 0.2)]
    # Self: the line each sample was executing.
    assert leaves == [("write (uvicorn/http.py:9)", 0.6), ("send (uvicorn/http.py:7)", 0.2),
                      ("encode (server/sse.py:30)", 0.2)]
