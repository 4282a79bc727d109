"""SentencePiece -> fast tokenizer: the normaliser settings of the model are honoured.

Two SentencePiece models trained here with opposite settings (Baichuan2's: identity, no dummy
prefix, keep whitespace; LLaMA-1's: nmt_nfkc, dummy prefix, collapse whitespace) must each give
identical ids through the converted tokenizer. The corpus-scale check is in
tests/integration/test_convert_tokenizer.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm

from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.tokenizer import build_fast_tokenizer, load_proto
from tests.support.published_checkpoints import (
    BAICHUAN2_SPM,
    LLAMA_STYLE_SPM,
    text_corpus,
    train_sentencepiece,
)

EDGE_CASES = ["", " ", "   ", "\n", "a  b", "  leading", "trailing  ", "全角　空格", "１２３",
              "12345678901234567890", "😀🩺", "龘", "tab\there", "<问>：你好\n<答>：",
              "ﬁ ligature", "x" * 300]


@pytest.fixture(scope="module", params=["baichuan2", "llama-style"])
def models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    settings = BAICHUAN2_SPM if request.param == "baichuan2" else LLAMA_STYLE_SPM
    path = train_sentencepiece(tmp_path_factory.mktemp("spm") / "tokenizer.model",
                               vocab_size=800, settings=settings)
    return (spm.SentencePieceProcessor(model_file=str(path)),
            build_fast_tokenizer(load_proto(path)), settings)


def test_normaliser_settings_are_mirrored(models) -> None:
    _, fast, settings = models
    normalized = fast.normalizer.normalize_str("  a  b ") if fast.normalizer else "  a  b "
    if settings["remove_extra_whitespaces"]:
        assert normalized == "▁a▁b"
    else:
        assert normalized == "▁▁a▁▁b▁"


def test_identical_ids_and_text(models) -> None:
    sp, fast, _ = models
    for text in EDGE_CASES + text_corpus(400, seed=11):
        ids = sp.encode(text)
        assert fast.encode(text, add_special_tokens=False).ids == ids, repr(text)
        assert fast.decode(ids, skip_special_tokens=False) == sp.decode(ids), repr(text)


def test_byte_fallback_is_used_for_unseen_characters(models) -> None:
    sp, fast, _ = models
    # An Egyptian hieroglyph (unchanged by NFKC) is surely not in an 800-piece vocab.
    ids = fast.encode("𓀀", add_special_tokens=False).ids
    assert ids == sp.encode("𓀀")
    assert [sp.id_to_piece(i) for i in ids][-4:] == ["<0xF0>", "<0x93>", "<0x80>", "<0x80>"]


def test_not_a_sentencepiece_model(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.model").write_bytes(b"\xff\xff not protobuf")
    with pytest.raises(ConversionError, match="not a SentencePiece model"):
        load_proto(tmp_path / "tokenizer.model")
