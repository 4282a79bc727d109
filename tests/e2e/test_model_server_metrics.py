"""The model-server protocol on /metrics (issue 17): what the Gateway API Inference Extension's
and llm-d's endpoint pickers read, under vLLM's names, from the shared live servers.

The pickers score replicas by queue (`vllm:num_requests_waiting`), batch
(`vllm:num_requests_running`) and KV-cache use (`vllm:kv_cache_usage_perc`), and size the
prefix-cache scorer from `vllm:cache_config_info`'s `block_size` and `num_gpu_blocks` labels.
"""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

PROTOCOL_GAUGES = ("vllm:num_requests_waiting", "vllm:num_requests_running",
                   "vllm:kv_cache_usage_perc")


def samples(server: ServerProcess, client: httpx.Client | None = None) -> dict[str, list]:
    text = (client or httpx).get(f"{server.base_url}/metrics", timeout=30).text
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_the_pickers_metrics_are_exported_under_vllms_names(server: ServerProcess) -> None:
    found = samples(server)
    for name in PROTOCOL_GAUGES:
        assert name in found, f"{name} missing from /metrics"
        assert all(s.value >= 0 for s in found[name])
    (info,) = found["vllm:cache_config_info"]
    assert info.value == 1.0
    assert int(info.labels["block_size"]) > 0 and int(info.labels["num_gpu_blocks"]) > 0
    assert info.labels["enable_prefix_caching"] == "True"


def test_running_requests_are_counted_while_a_stream_runs(slow_server: ServerProcess) -> None:
    # While a stream runs the engine keeps both cores busy, and this process can wait seconds
    # for a core: the tiny model's answers can end before one poll lands. The 8-layer model's
    # 1500 tokens take about 20 s; the test hangs up once it has seen the gauge.
    body = {"model": _model(slow_server), "messages": [{"role": "user", "content": "头痛怎么办？"}],
            "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=120) as client, client.stream(
            "POST", f"{slow_server.base_url}/v1/chat/completions", json=body) as response:
        assert next(response.iter_lines()).startswith("data: ")
        running = 0.0
        deadline = time.monotonic() + 15
        while running < 1 and time.monotonic() < deadline:
            found = samples(slow_server, client)
            running = sum(s.value for s in found["vllm:num_requests_running"])
        assert running >= 1


def _model(server: ServerProcess) -> str:
    return httpx.get(f"{server.base_url}/v1/models", timeout=30).json()["data"][0]["id"]
