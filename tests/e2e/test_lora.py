"""Multi-LoRA serving end to end: `huatuo train` writes an adapter, `huatuo serve --lora` serves
it beside the base (real vLLM engine, float32 so greedy outputs compare exactly).

Three servers, started together once for the module: the base with two adapters (and runtime
loading), the merged checkpoint `huatuo train` exported from the same run, and the base alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from safetensors.torch import load_file, save_file

from huatuogpt2.adapter_base import BASE_FILE
from tests.support.server_process import ROOT, ServerProcess, huatuo_server

pytestmark = pytest.mark.e2e
CONFIG = ROOT / "adapters" / "training" / "configs" / "tiny-cpu.yaml"
API_KEY, ADMIN_KEY = "user-key", "admin-key"
PROMPTS = ["<问>：孩子发烧38度怎么办？\n<答>：", "<问>：头痛第三天了怎么办？\n<答>：",
           "<问>：What helps a cold?\n<答>：", "<问>：布洛芬一天能吃几次？\n<答>："]
CHAT = [{"role": "user", "content": "孩子咳嗽一周了，需要去医院吗？"}]


@dataclass
class Run:
    base: Path  # the tiny base checkpoint the run trained on
    merged: Path  # huatuo train's export: base + adapter merged
    adapter: Path  # huatuo train's export/adapter
    lora_root: Path  # where runtime loads may come from (holds the second adapter)
    second: Path


def second_adapter(adapter: Path, out: Path) -> Path:
    """Another adapter on the same base: the first's update at rank 4, reversed and doubled
    (same scale alpha/r), so its answers differ from both the base's and the first's."""
    out.mkdir(parents=True)
    config = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(adapter / "adapter_model.safetensors")
    half = {k: (v[:4].clone() if ".lora_A." in k else (-2 * v[:, :4]).clone())
            for k, v in tensors.items()}
    save_file(half, out / "adapter_model.safetensors")
    config.update(r=4, lora_alpha=config["lora_alpha"] * 4 // config["r"])
    (out / "adapter_config.json").write_text(json.dumps(config))
    shutil.copy2(adapter / BASE_FILE, out / BASE_FILE)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("lora")
    result = subprocess.run(
        [sys.executable, "-m", "huatuo", "train", "--config", str(CONFIG),
         "--training.output_dir", str(tmp / "run"), "--export.dir", str(tmp / "model"),
         "--training.max_steps", "6", "--training.per_device_batch_size", "2",
         "--data.max_seq_len", "256", "--training.save_steps", "1000",
         "--training.learning_rate", "1e-2", "--lora.enabled", "true", "--lora.r", "8",
         "--lora.alpha", "16", "--lora.dropout", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = tmp / "adapters"
    return Run(base=tmp / "run" / "base-model", merged=tmp / "model",
               adapter=tmp / "model" / "adapter", lora_root=root,
               second=second_adapter(tmp / "model" / "adapter", root / "pharmacy"))


@dataclass
class Servers:
    lora: ServerProcess
    merged: ServerProcess
    base: ServerProcess


@pytest.fixture(scope="module")
def servers(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    logs = tmp_path_factory.mktemp("logs")
    common = ["--max-model-len", "512", "--dtype", "float32", "--served-model-name", "huatuo"]
    # Started together: the three engine starts overlap.
    started = [
        huatuo_server(["--model", str(run.base), *common, "--lora", f"paediatrics={run.adapter}",
                       "--lora", f"pharmacy={run.second}", "--api-key", API_KEY,
                       "--allow-runtime-lora", "--admin-api-key", ADMIN_KEY,
                       "--lora-root", str(run.lora_root)], logs / "lora.log"),
        huatuo_server(["--model", str(run.merged), *common], logs / "merged.log"),
        huatuo_server(["--model", str(run.base), *common], logs / "base.log"),
    ]
    try:
        for server in started:
            server.wait_ready(600)
        yield Servers(*started)
    finally:
        for server in started:
            server.stop()


def client(server: ServerProcess, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def complete(server: ServerProcess, model: str, prompt: str) -> tuple[str, int]:
    answer = client(server).completions.create(model=model, prompt=prompt, max_tokens=24,
                                               temperature=0)
    return answer.choices[0].text, answer.usage.completion_tokens


def chat(server: ServerProcess, model: str) -> str:
    answer = client(server).chat.completions.create(model=model, messages=CHAT, max_tokens=24,
                                                    temperature=0)
    assert answer.model == model
    return answer.choices[0].message.content


def admin(server: ServerProcess, route: str, body: dict, key: str | None = ADMIN_KEY
          ) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.base_url}/v1/{route}", json=body, headers=headers, timeout=60)


def test_models_lists_base_and_adapters(servers: Servers, run: Run) -> None:
    cards = {m.id: m for m in client(servers.lora).models.list().data}
    assert list(cards) == ["huatuo", "paediatrics", "pharmacy"]
    assert cards["paediatrics"].parent == "huatuo" and cards["pharmacy"].parent == "huatuo"
    assert cards["paediatrics"].root == str(run.adapter)


def test_adapter_equals_merged_checkpoint_token_for_token(servers: Servers) -> None:
    differs = False
    for prompt in PROMPTS:
        through_adapter = complete(servers.lora, "paediatrics", prompt)
        assert through_adapter == complete(servers.merged, "huatuo", prompt)
        differs |= through_adapter != complete(servers.lora, "huatuo", prompt)
    assert chat(servers.lora, "paediatrics") == chat(servers.merged, "huatuo")
    # The adapter changed the answers; otherwise the equality above proves nothing.
    assert differs


def test_base_unchanged_by_adapters(servers: Servers) -> None:
    for prompt in PROMPTS:
        assert complete(servers.lora, "huatuo", prompt) == complete(servers.base, "huatuo",
                                                                    prompt)
    assert chat(servers.lora, "huatuo") == chat(servers.base, "huatuo")


def test_concurrent_mix_equals_each_alone(servers: Servers) -> None:
    jobs = [(model, prompt) for prompt in PROMPTS
            for model in ("huatuo", "paediatrics", "pharmacy")]
    alone = [complete(servers.lora, model, prompt) for model, prompt in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        mixed = list(pool.map(lambda job: complete(servers.lora, *job), jobs * 2))
    assert mixed == alone * 2
    assert len({text for text, _ in alone}) > len(PROMPTS)  # the three models answer apart


def test_unknown_model_is_404_listing_served_names(servers: Servers) -> None:
    expected = ("The model 'cardiology' does not exist. This server serves: 'huatuo', "
                "'paediatrics', 'pharmacy'.")
    for call in (lambda c: c.completions.create(model="cardiology", prompt="x", max_tokens=1),
                 lambda c: c.chat.completions.create(model="cardiology", messages=CHAT)):
        with pytest.raises(openai.NotFoundError) as caught:
            call(client(servers.lora))
        assert caught.value.body["message"] == expected
        assert caught.value.body["code"] == "model_not_found"


def test_metrics_label_requests_by_served_name(servers: Servers) -> None:
    complete(servers.lora, "pharmacy", PROMPTS[0])
    text = httpx.get(f"{servers.lora.base_url}/metrics",
                     headers={"Authorization": f"Bearer {API_KEY}"}).text
    assert 'huatuo_requests_total{endpoint="/v1/completions",model="pharmacy",status="200"}' \
        in text
    assert "vllm:lora_requests_info{" in text and 'running_lora_adapters="' in text
    assert 'model="cardiology"' not in text


def test_runtime_load_then_unload(servers: Servers, run: Run) -> None:
    shutil.copytree(run.adapter, run.lora_root / "paediatrics-v2")
    loaded = admin(servers.lora, "load_lora_adapter",
                   {"lora_name": "paed-v2", "lora_path": "paediatrics-v2"})
    assert (loaded.status_code, loaded.text) == (
        200, "Success: LoRA adapter 'paed-v2' added successfully.")
    assert "paed-v2" in [m.id for m in client(servers.lora).models.list().data]
    # The same weights as the startup adapter: the same answers.
    assert complete(servers.lora, "paed-v2", PROMPTS[1]) == complete(
        servers.lora, "paediatrics", PROMPTS[1])
    again = admin(servers.lora, "load_lora_adapter",
                  {"lora_name": "paed-v2", "lora_path": "paediatrics-v2"})
    assert (again.status_code, again.json()["error"]["message"]) == (
        400, "The lora adapter 'paed-v2' has already been loaded. If you want to load the "
        "adapter in place, set 'load_inplace' to True.")
    unloaded = admin(servers.lora, "unload_lora_adapter", {"lora_name": "paed-v2"})
    assert (unloaded.status_code, unloaded.text) == (
        200, "Success: LoRA adapter 'paed-v2' removed successfully.")
    with pytest.raises(openai.NotFoundError):
        complete(servers.lora, "paed-v2", PROMPTS[1])
    gone = admin(servers.lora, "unload_lora_adapter", {"lora_name": "paed-v2"})
    assert (gone.status_code, gone.json()["error"]["message"]) == (
        404, "The lora adapter 'paed-v2' cannot be found.")


def test_unload_lets_requests_in_flight_finish(servers: Servers, run: Run) -> None:
    shutil.copytree(run.adapter, run.lora_root / "in-flight")
    body = {"lora_name": "in-flight", "lora_path": "in-flight"}
    assert admin(servers.lora, "load_lora_adapter", body).status_code == 200
    expected = client(servers.lora).completions.create(
        model="in-flight", prompt=PROMPTS[0], max_tokens=200, temperature=0,
        extra_body={"ignore_eos": True}).choices[0].text
    stream = client(servers.lora).completions.create(
        model="in-flight", prompt=PROMPTS[0], max_tokens=200, temperature=0, stream=True,
        extra_body={"ignore_eos": True})
    pieces = [next(stream).choices[0].text]  # running now
    assert admin(servers.lora, "unload_lora_adapter", {"lora_name": "in-flight"}
                 ).status_code == 200
    pieces += [chunk.choices[0].text for chunk in stream if chunk.choices]
    assert "".join(pieces) == expected


@pytest.mark.parametrize(("key", "status", "code"), [
    (None, 401, "invalid_admin_key"),
    (API_KEY, 401, "invalid_admin_key"),  # an API key does not authorise adapter changes
    ("wrong", 401, "invalid_admin_key"),
])
def test_runtime_routes_need_the_admin_key(servers: Servers, key: str | None, status: int,
                                          code: str) -> None:
    for route, body in (("load_lora_adapter", {"lora_name": "x", "lora_path": "pharmacy"}),
                        ("unload_lora_adapter", {"lora_name": "pharmacy"})):
        response = admin(servers.lora, route, body, key=key)
        assert response.status_code == status
        assert response.json()["error"] == {
            "message": "This route needs the admin key (--admin-api-key): send 'Authorization: "
                       "Bearer <admin key>'. API keys do not authorise it.",
            "type": "authentication_error", "param": None, "code": code}
    assert "pharmacy" in [m.id for m in client(servers.lora).models.list().data]


def test_runtime_paths_are_confined_to_lora_root(servers: Servers, run: Run,
                                                 tmp_path: Path) -> None:
    root = run.lora_root
    outside = shutil.copytree(run.adapter, tmp_path / "outside")
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    cases = {
        "../model/adapter": "contains '..'",
        str(outside): "is outside --lora-root",
        "link-out": "leads outside --lora-root through a symbolic link",
    }
    for path, why in cases.items():
        response = admin(servers.lora, "load_lora_adapter", {"lora_name": "x", "lora_path": path})
        assert response.status_code == 400
        assert response.json()["error"] == {
            "message": f"'lora_path' {path!r} {why}. Runtime adapters are loaded only from "
                       f"under --lora-root ({root}).",
            "type": "invalid_request_error", "param": "lora_path",
            "code": "lora_path_outside_root"}


def test_runtime_load_checks_the_adapter(servers: Servers, run: Run) -> None:
    broken = run.lora_root / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    response = admin(servers.lora, "load_lora_adapter",
                     {"lora_name": "broken", "lora_path": "broken"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_adapter" and error["param"] == "lora_path"
    assert error["message"].startswith(
        f"LoRA adapter 'broken' ({broken.resolve()}): adapter_config.json is not valid JSON (")
    assert error["message"].endswith("). Re-export the adapter")
    clash = admin(servers.lora, "load_lora_adapter",
                  {"lora_name": "huatuo", "lora_path": "pharmacy"})
    assert (clash.status_code, clash.json()["error"]["message"]) == (
        400, "The lora adapter 'huatuo' conflicts with a served base model.")


def test_runtime_loading_is_off_by_default(servers: Servers) -> None:
    response = admin(servers.base, "load_lora_adapter",
                     {"lora_name": "x", "lora_path": "/anything"})
    assert response.status_code == 403
    assert response.json()["error"] == {
        "message": "Runtime LoRA loading is off on this server; start it with "
                   "--allow-runtime-lora, --admin-api-key and --lora-root.",
        "type": "permission_error", "param": None, "code": "runtime_lora_disabled"}


def test_adapter_for_another_base_is_refused_at_startup(run: Run, tmp_path: Path) -> None:
    """The real command exits 2 before starting an engine, naming the adapter, reason, fix."""
    result = subprocess.run(
        [sys.executable, "-m", "huatuo", "serve", "--model", str(run.merged),
         "--lora", f"paediatrics={run.adapter}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert f"huatuo serve: LoRA adapter 'paediatrics' ({run.adapter}): it was trained on a " \
        f"different base checkpoint ({run.base}, fingerprint " in result.stderr
    assert "Serve it on the checkpoint it was trained on, or pass --lora-allow-base-mismatch " \
        "to serve it anyway" in result.stderr
