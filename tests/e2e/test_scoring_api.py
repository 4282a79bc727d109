"""Scoring API against a live server (issue 14): prompt logprobs with echo, tokenizer endpoints,
and lm-evaluation-harness end to end.

Prompt log-probabilities are checked against transformers on the same checkpoint (fp32, no BOS);
lm-evaluation-harness's `local-completions` model (through our /v1/completions) must give the
same per-choice log-likelihoods as its `hf` model on the checkpoint itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.server_process import ServerProcess
from tests.support.sse import read_stream

pytestmark = pytest.mark.e2e
MODEL = "tiny-huatuo"
TOLERANCE = 1e-3
PROMPTS = ["Patients with chest pain need emergency care.", "头痛怎么办？请告诉我。"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Callable[[list[int]], list[float]]:
    """Log-probability of each prompt token after the ones before it (from the second on)."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()

    def logprobs(ids: list[int]) -> list[float]:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        scores = torch.log_softmax(logits.float(), dim=-1)
        return [scores[i - 1, ids[i]].item() for i in range(1, len(ids))]

    return logprobs


def complete(server: ServerProcess, **body) -> dict:
    response = httpx.post(f"{server.base_url}/v1/completions",
                          json={"model": MODEL, "temperature": 0, **body}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def check_scored_choice(choice: dict, prompt_ids: list[int], prompt_text: str,
                        reference: Callable[[list[int]], list[float]], generated: int) -> None:
    logprobs = choice["logprobs"]
    n = len(prompt_ids)
    assert len(logprobs["tokens"]) == n + generated
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    expected = reference(prompt_ids)
    got = logprobs["token_logprobs"][1:n]
    assert got == pytest.approx(expected, abs=TOLERANCE)
    for value, top in zip(got, logprobs["top_logprobs"][1:n], strict=True):
        assert top and value in top.values()
    # The text is the prompt then the generated text; the offsets point into it.
    text, offsets = choice["text"], logprobs["text_offset"]
    assert text.startswith(prompt_text)
    assert offsets == sorted(offsets) and offsets[0] == 0
    if "".join(logprobs["tokens"][:n]) == prompt_text:
        for token, offset in zip(logprobs["tokens"], offsets, strict=True):
            assert text[offset:offset + len(token)] == token
    if generated:
        assert offsets[n] == len(prompt_text)
        assert all(isinstance(v, float) for v in logprobs["token_logprobs"][n:])


def test_echo_scores_text_prompts_batched(server: ServerProcess, tokenizer, reference) -> None:
    body = complete(server, prompt=PROMPTS, echo=True, logprobs=2, max_tokens=3)
    choices = sorted(body["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1]
    for prompt, choice in zip(PROMPTS, choices, strict=True):
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        generated = len(choice["logprobs"]["tokens"]) - len(ids)
        assert 1 <= generated <= 3
        check_scored_choice(choice, ids, prompt, reference, generated)
    assert body["usage"]["prompt_tokens"] == sum(
        len(tokenizer.encode(p, add_special_tokens=False)) for p in PROMPTS)


def test_echo_scores_token_id_prompts(server: ServerProcess, tokenizer, reference) -> None:
    batch = [tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS]
    body = complete(server, prompt=batch, echo=True, logprobs=0, max_tokens=1)
    for ids, choice in zip(batch, sorted(body["choices"], key=lambda c: c["index"]),
                           strict=True):
        check_scored_choice(choice, ids, tokenizer.decode(ids), reference, 1)
    # One prompt of token ids, not batched.
    single = complete(server, prompt=batch[0], echo=True, logprobs=1, max_tokens=1)
    check_scored_choice(single["choices"][0], batch[0], tokenizer.decode(batch[0]), reference, 1)


def test_max_tokens_zero_scores_without_generating(server: ServerProcess, tokenizer,
                                                    reference) -> None:
    body = complete(server, prompt=PROMPTS[0], echo=True, logprobs=1, max_tokens=0)
    choice = body["choices"][0]
    ids = tokenizer.encode(PROMPTS[0], add_special_tokens=False)
    assert choice["text"] == PROMPTS[0] and choice["finish_reason"] == "length"
    check_scored_choice(choice, ids, PROMPTS[0], reference, 0)
    assert body["usage"]["completion_tokens"] == 0
    # Without echo, nothing would come back: refused.
    response = httpx.post(f"{server.base_url}/v1/completions",
                          json={"model": MODEL, "prompt": "hi", "max_tokens": 0})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


@pytest.mark.parametrize("max_tokens", [0, 4])
def test_streamed_echo_sends_the_prompt_first(server: ServerProcess, tokenizer,
                                               max_tokens: int) -> None:
    body = {"model": MODEL, "prompt": PROMPTS, "echo": True, "logprobs": 1,
            "max_tokens": max_tokens, "temperature": 0}
    whole = complete(server, **body)

    async def read():
        async with httpx.AsyncClient(timeout=120) as client:
            return await read_stream(client, f"{server.base_url}/v1/completions",
                                     {**body, "stream": True})

    result = asyncio.run(read())
    assert result.done and result.error is None
    events = [json.loads(e) for e in result.events[:-1]]
    events = [e for e in events if e.get("choices")]
    for choice in whole["choices"]:
        index = choice["index"]
        mine = [e["choices"][0] for e in events if e["choices"][0]["index"] == index]
        prompt = PROMPTS[index]
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        # The first chunk of each choice holds the whole prompt with its logprobs.
        assert mine[0]["text"].startswith(prompt)
        first = mine[0]["logprobs"]
        assert first["token_logprobs"][0] is None
        assert len(first["tokens"]) >= len(ids)
        assert first["token_logprobs"][1:len(ids)] == pytest.approx(
            choice["logprobs"]["token_logprobs"][1:len(ids)], abs=1e-5)
        text = "".join(c["text"] for c in mine)
        assert text == choice["text"]
        tokens = [t for c in mine if c["logprobs"] for t in c["logprobs"]["tokens"]]
        offsets = [o for c in mine if c["logprobs"] for o in c["logprobs"]["text_offset"]]
        assert tokens == choice["logprobs"]["tokens"]
        assert offsets == choice["logprobs"]["text_offset"]
        assert mine[-1]["finish_reason"] == "length"


# --- /tokenize, /detokenize, /tokenizer_info -------------------------------------------------


def post(server: ServerProcess, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=60)


def test_tokenize_text_and_detokenize_round_trip(server: ServerProcess, tokenizer) -> None:
    for prompt in PROMPTS:
        response = post(server, "/tokenize", {"model": MODEL, "prompt": prompt})
        assert response.status_code == 200, response.text
        body = response.json()
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        assert body == {"count": len(ids), "max_model_len": 512, "tokens": ids,
                        "token_strs": None}
        back = post(server, "/detokenize", {"model": MODEL, "tokens": body["tokens"]})
        assert back.status_code == 200 and back.json() == {"prompt": prompt}
    strs = post(server, "/tokenize", {"prompt": PROMPTS[0], "return_token_strs": True}).json()
    assert strs["token_strs"] == tokenizer.convert_ids_to_tokens(strs["tokens"])
    # What lm-evaluation-harness's remote tokenizer asks for its EOS id.
    eos = post(server, "/tokenize", {"prompt": "</s>", "add_special_tokens": False}).json()
    assert eos["tokens"] == [tokenizer.eos_token_id]


def test_tokenize_chat_gives_the_chat_endpoints_prompt(server: ServerProcess, tokenizer) -> None:
    message = "头痛怎么办？"
    messages = [{"role": "user", "content": message}]
    response = post(server, "/tokenize", {"model": MODEL, "messages": messages})
    assert response.status_code == 200, response.text
    tokens = response.json()["tokens"]
    assert tokens == tokenizer.encode(f"<问>：{message}\n<答>：", add_special_tokens=False)
    chat = httpx.post(f"{server.base_url}/v1/chat/completions",
                      json={"model": MODEL, "messages": messages, "max_tokens": 1}, timeout=60)
    assert chat.json()["usage"]["prompt_tokens"] == len(tokens)
    # System merged, several rounds: still what the chat endpoint sends.
    messages = [{"role": "system", "content": "你是医生。"}, {"role": "user", "content": "发烧"},
                {"role": "assistant", "content": "多喝水。"}, {"role": "user", "content": message}]
    tokens = post(server, "/tokenize", {"messages": messages}).json()["tokens"]
    expected = f"<问>：你是医生。\n发烧\n<答>：多喝水。\n<问>：{message}\n<答>："
    assert tokens == tokenizer.encode(expected, add_special_tokens=False)
    chat = httpx.post(f"{server.base_url}/v1/chat/completions",
                      json={"model": MODEL, "messages": messages, "max_tokens": 1}, timeout=60)
    assert chat.json()["usage"]["prompt_tokens"] == len(tokens)


def test_tokenizer_info(server: ServerProcess, tokenizer) -> None:
    response = httpx.get(f"{server.base_url}/tokenizer_info")
    assert response.status_code == 200
    info = response.json()
    assert info["eos_token"] == "</s>" and info["bos_token"] == "<s>"
    assert info["pad_token"] == "<unk>" and info["unk_token"] == "<unk>"
    assert info["add_bos_token"] is False and info["model_max_length"] == 512
    assert info["tokenizer_class"] and "<答>：" in info["chat_template"]
    assert info["vocab_size"] == len(tokenizer)


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/detokenize", {"tokens": [1, -1]}, 400, "tokens"),
    ("/detokenize", {"tokens": [10**6]}, 400, "tokens"),
    ("/detokenize", {"tokens": "abc"}, 400, "tokens"),
    ("/tokenize", {}, 400, None),
    ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, 400, None),
    ("/tokenize", {"messages": [{"role": "assistant", "content": "a"}]}, 400, "messages[0].role"),
    ("/tokenize", {"messages": [{"role": "user", "content": "a"}],
                   "add_generation_prompt": False}, 400, "add_generation_prompt"),
    ("/tokenize", {"model": "nope", "prompt": "a"}, 404, "model"),
    ("/detokenize", {"model": "nope", "tokens": [1]}, 404, "model"),
])
def test_tokenizer_endpoints_refuse_bad_input(server: ServerProcess, path: str, body: dict,
                                              status: int, param: str | None) -> None:
    response = post(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"


# --- lm-evaluation-harness end to end --------------------------------------------------------

DOCS = [
    {"question": "Chest pain and shortness of breath need", "choices":
        ["emergency care.", "a long walk.", "more coffee."], "answer": 0},
    {"question": "患者应遵医嘱", "choices": ["用药。", "跳舞。"], "answer": 0},
    {"question": "Take the medicine", "choices": ["as prescribed.", "never.", "twice."],
     "answer": 0},
    {"question": "头痛怎么办？", "choices": ["休息。", "喝水。", "看医生。"], "answer": 2},
    {"question": "Sudden weakness is", "choices": ["an emergency.", "normal."], "answer": 0},
    {"question": "如有过敏史，请告知", "choices": ["医生。", "朋友。"], "answer": 0},
]

# One interpreter for all runs: importing lm_eval costs tens of seconds on a busy machine.
EVAL_SCRIPT = textwrap.dedent("""
    import json, sys
    import lm_eval
    from lm_eval.tasks import TaskManager

    runs, include, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    report = []
    for model, model_args in runs:
        results = lm_eval.simple_evaluate(
            model=model, model_args=model_args, tasks=["huatuo_tiny_mc"],
            task_manager=TaskManager(include_path=include), log_samples=True,
            batch_size=4, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
            fewshot_random_seed=0)
        samples = results["samples"]["huatuo_tiny_mc"]
        scores = {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in samples}
        report.append({"scores": scores, "results": results["results"]})
    json.dump(report, open(out, "w"))
""")


@pytest.fixture(scope="module")
def mc_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny multiple-choice task (local JSON data), loaded with --include_path."""
    directory = tmp_path_factory.mktemp("lm_eval_task")
    data = directory / "docs.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS))
    (directory / "huatuo_tiny_mc.yaml").write_text(textwrap.dedent(f"""\
        task: huatuo_tiny_mc
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: multiple_choice
        doc_to_text: "{{{{question}}}}"
        doc_to_choice: choices
        doc_to_target: answer
        metric_list:
          - metric: acc
        """))
    return directory


def run_lm_eval(runs: list[tuple[str, str]], task_dir: Path, tmp_path: Path) -> list[dict]:
    """Per run (model, model_args): per-doc log-likelihoods of the choices, and the metrics."""
    out = tmp_path / "lm_eval.json"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "datasets"), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-c", EVAL_SCRIPT, json.dumps(runs), str(task_dir), str(out)],
        env=env, capture_output=True, text=True, timeout=800)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


def test_lm_eval_local_completions_matches_hf(server: ServerProcess, tiny_model_dir: Path,
                                              mc_task: Path, tmp_path: Path) -> None:
    """Served scores equal the checkpoint's own, with lm-eval's huggingface tokenizer or
    through our /tokenizer_info + /tokenize (tokenizer_backend=remote)."""
    base = (f"base_url={server.base_url}/v1/completions,model={MODEL},max_retries=1,"
            "num_concurrent=1,tokenized_requests=True")
    served, remote, local = run_lm_eval([
        ("local-completions", f"{base},tokenizer_backend=huggingface,tokenizer={tiny_model_dir}"),
        ("local-completions", f"{base},tokenizer_backend=remote"),
        ("hf", f"pretrained={tiny_model_dir},dtype=float32,add_bos_token=False,device=cpu"),
    ], mc_task, tmp_path)
    assert set(local["scores"]) == {str(i) for i in range(len(DOCS))}  # JSON keys
    for doc_id, expected in local["scores"].items():
        assert len(expected) == len(DOCS[int(doc_id)]["choices"])
        # The bug this guards: every choice scored exactly 0.0.
        assert all(score < 0 for score in expected)
        assert served["scores"][doc_id] == pytest.approx(expected, abs=TOLERANCE)
        assert remote["scores"][doc_id] == pytest.approx(expected, abs=TOLERANCE)
    assert (served["results"]["huatuo_tiny_mc"]["acc,none"]
            == local["results"]["huatuo_tiny_mc"]["acc,none"])
