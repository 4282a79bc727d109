"""A published-layout checkpoint served by a real `huatuo serve` (real vLLM engine).

`huatuo serve --model <Baichuan2 checkpoint>` converts it once into the cache (the log says
where) and serves the Llama result; greedy decoding through vLLM gives the same text as
transformers' LlamaForCausalLM on the converted weights, which in turn gives the same tokens as
the published Baichuan2 architecture (reference forward, independent of the converter).
One server start for this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.support.published_checkpoints import baichuan2_7b_reference, build_baichuan2_7b
from tests.support.server_process import ServerProcess, start_server

pytestmark = pytest.mark.e2e
MAX_TOKENS = 12
QUESTIONS = ["我最近总是头痛，应该怎么办？", "高血压患者饮食需要注意什么？",
             "What should I do about a persistent cough?", "发烧 38.5℃ 要吃退烧药吗？"]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_baichuan2_7b(tmp_path_factory.mktemp("published") / "HuatuoGPT2-7B",
                              fmt="bin", shards=2)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def served(published: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "convert-serve.log"
    proc = start_server(["--model", str(published), "--cache-dir", str(cache_dir),
                         "--max-model-len", "512", "--dtype", "float32"], log)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def converted(served: ServerProcess, cache_dir: Path) -> Path:
    (directory,) = (cache_dir / "converted").iterdir()
    return directory


def test_the_published_checkpoint_was_converted_once_into_the_cache(
        served: ServerProcess, converted: Path) -> None:
    assert (converted / "conversion.json").exists()
    assert f"converting it once into {converted}" in served.log_text()
    # Clients keep using the published name, not the cache directory's.
    models = httpx.get(f"{served.base_url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["HuatuoGPT2-7B"]


def _prompts(converted: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    from huatuogpt2.prompt_format import generate_prompt

    tokenizer = AutoTokenizer.from_pretrained(converted)
    prompts = [tokenizer.encode(generate_prompt(q), add_special_tokens=False) for q in QUESTIONS]
    generator = torch.Generator().manual_seed(0)
    prompts.append(torch.randint(3, tokenizer.vocab_size, (40,), generator=generator).tolist())
    return prompts


def _transformers_greedy(converted: Path, prompt: list[int]) -> list[int]:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False,
                             eos_token_id=2, pad_token_id=0, repetition_penalty=1.0,
                             temperature=None, top_p=None, top_k=None)
    return out[0, len(prompt):].tolist()


def _reference_greedy(published: Path, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        logits = baichuan2_7b_reference(published, torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_vllm_greedy_text_equals_transformers(served: ServerProcess, converted: Path,
                                              published: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    generated_any = False
    for prompt in _prompts(converted):
        expected_ids = _transformers_greedy(converted, prompt)
        # The published architecture picks the same tokens (up to an EOS stop).
        stop = expected_ids.index(2) + 1 if 2 in expected_ids else len(expected_ids)
        assert _reference_greedy(published, prompt, stop) == expected_ids[:stop]
        response = httpx.post(f"{served.base_url}/v1/completions", timeout=120, json={
            "model": "HuatuoGPT2-7B", "prompt": prompt, "temperature": 0,
            "max_tokens": MAX_TOKENS, "repetition_penalty": 1.0})
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["text"]
        assert text == tokenizer.decode(expected_ids, skip_special_tokens=True), prompt
        generated_any |= bool(text)
    assert generated_any
