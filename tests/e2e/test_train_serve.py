"""`huatuo train` on the bundled sample -> `huatuo serve` on its output -> an SDK chat answer.

Also proves the prompt the server builds for a conversation is byte-identical to the one
training used (and tokenises to the same ids), since both come from huatuogpt2.prompt_format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from transformers import AutoTokenizer

from adapters.training.packing import hf_encoder, tokenize_sample, training_prompt
from huatuogpt2.prompt_format import parse_messages, render
from tests.support.server_process import ROOT, start_server

pytestmark = pytest.mark.e2e
CONFIG = ROOT / "adapters" / "training" / "configs" / "tiny-cpu.yaml"
SAMPLE = ROOT / "adapters" / "training" / "data" / "sample_sft.json"


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    # The real command on the real sample; few short steps keep it to seconds.
    result = subprocess.run(
        [sys.executable, "-m", "huatuo", "train", "--config", str(CONFIG),
         "--training.output_dir", str(tmp / "run"), "--export.dir", str(tmp / "model"),
         "--training.max_steps", "4", "--training.per_device_batch_size", "2",
         "--data.max_seq_len", "256", "--training.save_steps", "1000",
         "--training.logging_steps", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "packing efficiency" in result.stdout
    return tmp / "model"


def two_round_sample() -> list[tuple[str, str]]:
    for record in json.loads(SAMPLE.read_text()):
        turns = [t["value"] for t in record["conversations"]]
        if len(turns) == 4:
            return [(turns[0], turns[1]), (turns[2], turns[3])]
    raise AssertionError("the sample has no two-round conversation")


def test_trained_checkpoint_is_served_and_prompts_match(trained_model: Path,
                                                         tmp_path: Path) -> None:
    rounds = two_round_sample()
    messages = [{"role": "user", "content": rounds[0][0]},
                {"role": "assistant", "content": rounds[0][1]},
                {"role": "user", "content": rounds[1][0]}]
    train_prompt = training_prompt(rounds, 1)
    # Byte-identical: the server's rendering, and the exported chat template.
    assert render(parse_messages(messages)).encode() == train_prompt.encode()
    tokenizer = AutoTokenizer.from_pretrained(trained_model)
    templated = tokenizer.apply_chat_template(messages, tokenize=False,
                                              add_generation_prompt=True)
    assert templated.encode() == train_prompt.encode()
    # Token ids: what the server feeds the engine is the prefix training used.
    prompt_ids = tokenizer.encode(train_prompt, add_special_tokens=False)
    trained = tokenize_sample(rounds, hf_encoder(tokenizer), max_seq_len=4096)
    assert trained.input_ids[:len(prompt_ids)] == prompt_ids

    server = start_server(["--model", str(trained_model), "--max-model-len", "512",
                           "--dtype", "float32"], tmp_path / "server.log")
    try:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused",
                               max_retries=0)
        model = client.models.list().data[0].id
        response = client.chat.completions.create(model=model, messages=messages,
                                                  max_tokens=24, temperature=0)
    finally:
        server.stop()
    choice = response.choices[0]
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens > 0
    # The server tokenised exactly the prompt training used.
    assert response.usage.prompt_tokens == len(prompt_ids)
    print(f"\ntrained tiny model answered: {choice.message.content!r}")
