"""The converted tokenizer, loaded the way servers load it (AutoTokenizer on DST), gives the
SentencePiece model's ids on thousands of varied strings, and its chat template renders
byte-identically to the server's HuatuoGPT2 prompt module."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import sentencepiece as spm

from adapters.checkpoint.convert import Options, convert
from huatuogpt2.prompt_format import parse_messages, render
from tests.support.published_checkpoints import build_baichuan2_7b, text_corpus


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tok")
    src = build_baichuan2_7b(root / "src")
    convert(src, root / "out", Options(progress=False))
    return src, root / "out"


@pytest.fixture(scope="module")
def fast(converted: tuple[Path, Path]):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted[1])


def test_identical_ids_over_a_varied_corpus(converted: tuple[Path, Path], fast) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(converted[0] / "tokenizer.model"))
    corpus = text_corpus(4000, seed=2024)  # not the corpus the model was trained on
    mismatches = [t for t in corpus if fast.encode(t, add_special_tokens=False) != sp.encode(t)]
    assert mismatches == [], f"{len(mismatches)} of {len(corpus)} differ, e.g. {mismatches[:3]!r}"
    # Byte fallback really is exercised by this corpus, and text decodes back.
    byte_ids = {sp.piece_to_id(f"<0x{b:02X}>") for b in range(256)}
    assert sum(any(i in byte_ids for i in sp.encode(t)) for t in corpus) > 100
    for text in corpus[:500]:
        assert fast.decode(sp.encode(text)) == sp.decode(sp.encode(text))


def test_no_bos_and_huatuo_special_ids(fast) -> None:
    assert fast.encode("<问>：头痛\n<答>：") == fast.encode("<问>：头痛\n<答>：",
                                                        add_special_tokens=False)
    assert (fast.unk_token_id, fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (
        0, 1, 2, 0)


def _conversations(count: int, seed: int = 3) -> list[list[dict]]:
    rng = random.Random(seed)
    texts = text_corpus(400, seed=seed) + ["", " ", "{{ not jinja }}", "{% raw %}", "a\nb"]
    out = []
    for _ in range(count):
        messages: list[dict] = []
        for _ in range(rng.choice([0, 0, 1, 2])):
            messages.append({"role": rng.choice(["system", "developer"]),
                             "content": rng.choice(texts)})
        rounds = rng.randint(1, 4)
        for r in range(rounds):
            user = rng.choice(texts)
            if rng.random() < 0.2:  # OpenAI content parts
                user = [{"type": "text", "text": rng.choice(texts)} for _ in range(2)]
            messages.append({"role": "user", "content": user})
            if r < rounds - 1:
                messages.append({"role": "assistant", "content": rng.choice(texts)})
        out.append(messages)
    return out


def test_chat_template_matches_the_prompt_module(converted: tuple[Path, Path], fast) -> None:
    config = json.loads((converted[1] / "tokenizer_config.json").read_text())
    assert "chat_template" in config
    for messages in _conversations(600):
        rendered = fast.apply_chat_template(messages, tokenize=False)
        assert rendered == render(parse_messages(messages)), messages


def test_chat_template_refuses_unknown_roles(fast) -> None:
    with pytest.raises(Exception, match="Unsupported role: tool"):
        fast.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
