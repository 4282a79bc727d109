"""Observability end to end: a real Prometheus scrapes a live `huatuo serve` (real vLLM engine).

After real chat traffic sent with the `openai` SDK, PromQL through Prometheus's HTTP API must
return the request and token counts the clients saw and a TTFT histogram; every metric the
shipped dashboard and alert rules query must really be exported; the alert rules must evaluate
without errors on live data; and the default logs must hold no fragment of a prompt or answer.

Prometheus comes from Debian's `prometheus` package (`make test` installs it). The scrape config
is the shipped `deploy/prometheus/prometheus.yml` with the target pointed at the test server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.prometheus import (
    ALERTS_YML,
    PROMETHEUS_YML,
    names_used_by_dashboard_and_alerts,
)
from tests.support.server_process import ServerProcess, free_port

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
# Distinctive patient words: none of these may reach the default logs.
PROMPT_FRAGMENTS = ["Zhang-Quartz-4471", "胸口闷痛", "左臂发麻", "硝酸甘油"]
PROMPT = (f"医生您好，我是{PROMPT_FRAGMENTS[0]}，父亲七十二岁，三天来{PROMPT_FRAGMENTS[1]}，"
          f"夜里{PROMPT_FRAGMENTS[2]}，家里有{PROMPT_FRAGMENTS[3]}，要去急诊吗？")


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `condition()` is truthy (scrapes are periodic); fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


class Prometheus:
    """A real Prometheus server on loopback, with its HTTP API."""

    def __init__(self, config: Path, data: Path, log: Path) -> None:
        exe = shutil.which("prometheus")
        assert exe, "prometheus is missing: `make prometheus-tools` (apt-get install prometheus)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.log_path = log
        self.process = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log_path.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def scalar(self, expr: str) -> float | None:
        """The value of a one-series query, None while it has no result."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Prometheus]:
    home = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS_YML)]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "huatuo"]
    job.update(scrape_interval="1s", scrape_timeout="1s",
               static_configs=[{"targets": [f"127.0.0.1:{server.port}"]}])
    config["scrape_configs"] = [job]
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = Prometheus(home / "prometheus.yml", home / "data", home / "prometheus.log")
    try:
        wait_for(prom.ready, 60, "Prometheus to start")
        wait_for(lambda: prom.scalar('up{job="huatuo"}') == 1, 60,
                 "Prometheus to scrape huatuo serve")
        yield prom
    finally:
        prom.stop()


def scrape(server: ServerProcess) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= sample_labels)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def model_id(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def test_prometheus_sees_the_requests_tokens_and_ttft_of_real_chat_traffic(
        server: ServerProcess, prometheus: Prometheus, client: openai.OpenAI) -> None:
    model = model_id(client)
    sel = f'model="{model}",endpoint="{CHAT}"'
    before = scrape(server)
    requests_before = total(before, "huatuo_requests_total", endpoint=CHAT, status="200")
    prompt_before = total(before, "huatuo_prompt_tokens_total", endpoint=CHAT)
    completion_before = total(before, "huatuo_completion_tokens_total", endpoint=CHAT)
    ttft_before = total(before, "huatuo_time_to_first_token_seconds_count", endpoint=CHAT)
    vllm_prompt_before = total(before, "vllm:prompt_tokens_total")

    prompt_tokens = completion_tokens = 0
    for i in range(3):
        reply = client.chat.completions.create(
            model=model, max_tokens=8 + i,
            messages=[{"role": "user", "content": f"第{i}个问题：头痛怎么办？"}])
        prompt_tokens += reply.usage.prompt_tokens
        completion_tokens += reply.usage.completion_tokens
    for i in range(2):
        stream = client.chat.completions.create(
            model=model, max_tokens=12, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"流式问题{i}：发烧了吗？"}])
        usage = [chunk.usage for chunk in stream if chunk.usage is not None]
        assert len(usage) == 1
        prompt_tokens += usage[0].prompt_tokens
        completion_tokens += usage[0].completion_tokens
    assert completion_tokens > 0

    # The same numbers, read back through Prometheus's HTTP API with PromQL.
    expected = requests_before + 5
    wait_for(lambda: prometheus.scalar(f'sum(huatuo_requests_total{{{sel},status="200"}})')
             == expected, 60, f"{expected} successful chat requests in Prometheus")
    assert prometheus.scalar(f"sum(huatuo_prompt_tokens_total{{{sel}}})") == (
        prompt_before + prompt_tokens)
    assert prometheus.scalar(f"sum(huatuo_completion_tokens_total{{{sel}}})") == (
        completion_before + completion_tokens)
    # vLLM's own counter, on the same endpoint, agrees on the prompt tokens.
    assert prometheus.scalar("sum(vllm:prompt_tokens_total)") >= vllm_prompt_before + prompt_tokens

    # The TTFT histogram: five new observations, cumulative buckets, a p95 Prometheus computes.
    assert prometheus.scalar(f"sum(huatuo_time_to_first_token_seconds_count{{{sel}}})") == (
        ttft_before + 5)
    buckets = prometheus.query(f"sum by (le) (huatuo_time_to_first_token_seconds_bucket{{{sel}}})")
    counts = sorted((float(b["metric"]["le"]), float(b["value"][1])) for b in buckets)
    assert len(counts) >= 10
    assert [c for _, c in counts] == sorted(c for _, c in counts)  # cumulative
    assert counts[-1] == (float("inf"), ttft_before + 5)
    p95 = prometheus.scalar(
        f"histogram_quantile(0.95, sum by (le) "
        f"(increase(huatuo_time_to_first_token_seconds_bucket{{{sel}}}[5m])))")
    assert p95 is not None and 0 < p95 < float("inf")
    # Streams produce inter-token gaps; the end-to-end latency saw all five answers.
    assert prometheus.scalar(f"sum(huatuo_inter_token_latency_seconds_count{{{sel}}})") > 0
    assert prometheus.scalar(f"sum(huatuo_e2e_request_latency_seconds_count{{{sel}}})") >= 5
    assert prometheus.scalar(f"sum(huatuo_requests_in_flight{{{sel}}})") == 0


def test_every_metric_of_the_dashboard_and_alerts_is_exported(
        server: ServerProcess, prometheus: Prometheus, client: openai.OpenAI) -> None:
    """No "No data" panels: each name the dashboard or a rule queries exists in a live scrape."""
    # Some vLLM series appear with the first request; make sure there was one.
    client.chat.completions.create(model=model_id(client), max_tokens=4,
                                   messages=[{"role": "user", "content": "你好"}])
    wanted = names_used_by_dashboard_and_alerts()
    assert {"huatuo_requests_total", "vllm:kv_cache_usage_perc", "up"} <= wanted

    def missing() -> set[str]:
        exported = set(prometheus.api("label/__name__/values"))
        return wanted - exported

    try:
        wait_for(lambda: not missing(), 30, "every dashboard/alert metric in Prometheus")
    except AssertionError:
        pytest.fail(f"queried by the dashboard or alerts but never exported: {sorted(missing())}")


def test_alert_rules_evaluate_cleanly_on_live_data(prometheus: Prometheus) -> None:
    def rules() -> list[dict]:
        groups = prometheus.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_for(lambda: all(r.get("lastEvaluation", "").startswith("20") for r in rules())
             and len(rules()) > 0, 30, "every alert rule to be evaluated")
    bad = {r["name"]: r.get("lastError") for r in rules() if r["health"] != "ok"}
    assert not bad
    firing = {r["name"] for r in rules() if r["state"] == "firing"}
    # A healthy test server must not page anyone about being down.
    assert not firing & {"HuatuoTargetDown", "HuatuoTargetMissing", "HuatuoEngineUnhealthy"}


def test_engine_health_gauge_reads_one_on_a_live_server(server: ServerProcess) -> None:
    assert total(scrape(server), "huatuo_engine_healthy") == 1


def test_metrics_and_health_do_not_count_themselves(server: ServerProcess) -> None:
    health_s, metrics_s, size = [], [], 0
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        for _ in range(5):
            started = time.perf_counter()
            http.get("/health")
            health_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            size = len(http.get("/metrics").content)
            metrics_s.append(time.perf_counter() - started)
    # Figures, not assertions: what one scrape costs on this machine (/health as the baseline).
    print(f"\n/metrics: {size} bytes, median {sorted(metrics_s)[2] * 1000:.1f} ms per scrape; "
          f"/health median {sorted(health_s)[2] * 1000:.1f} ms")
    samples = scrape(server)
    endpoints = {dict(labels).get("endpoint") for (name, labels) in samples
                 if name.startswith("huatuo_")}
    assert "/metrics" not in endpoints and "/health" not in endpoints
    assert CHAT in endpoints


def test_default_logs_hold_no_fragment_of_the_prompt_or_the_answer(
        server: ServerProcess, client: openai.OpenAI) -> None:
    request_id = f"obs-log-check-{time.time_ns()}"
    raw = client.chat.completions.with_raw_response.create(
        model=model_id(client), max_tokens=24, temperature=1.0,
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"X-Request-Id": request_id})
    answer = raw.parse().choices[0].message.content or ""
    assert raw.headers["x-request-id"] == request_id

    def access_line() -> dict | None:
        for line in server.log_text().splitlines():
            if line.startswith("{") and request_id in line:
                return json.loads(line)
        return None

    entry = wait_for(access_line, 30, "the access-log line of the request")
    assert entry["status"] == 200 and entry["endpoint"] == CHAT
    assert entry["prompt_tokens"] > 0 and entry["completion_tokens"] > 0
    assert "prompt_text" not in entry and "completion_text" not in entry

    log = server.log_text()
    for fragment in PROMPT_FRAGMENTS:
        assert fragment not in log, f"prompt fragment {fragment!r} is in the server log"
    # The answer of the tiny random model is noise: check every 8-character window that has
    # enough letters to be distinctive (runs of spaces or one repeated character are not).
    windows = {answer[i:i + 8] for i in range(max(0, len(answer) - 7))}
    distinctive = [w for w in windows if len(set(w.strip())) >= 4]
    assert distinctive, f"the answer {answer!r} has nothing distinctive to look for"
    leaked = [w for w in distinctive if w in log]
    assert not leaked, f"answer fragments in the server log: {leaked[:5]}"
