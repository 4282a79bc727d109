"""SentencePiece `tokenizer.model` -> fast `tokenizer.json` with identical ids.

transformers' own converters ignore parts of the SentencePiece normaliser spec (remove extra
whitespaces, and for some classes the dummy prefix), so we build the fast tokenizer from the
model proto directly and mirror every setting the model carries:

- precompiled charsmap (e.g. nmt_nfkc)  -> normalizers.Precompiled
- remove_extra_whitespaces            -> strip leading/trailing spaces, collapse runs
- add_dummy_prefix                     -> prepend "▁" (and strip it again when decoding)
- escape_whitespaces                   -> " " -> "▁"
- byte_fallback                        -> BPE(byte_fallback=True) + ByteFallback decoder
- split_digits & co are training-time rules: no multi-digit piece exists, so BPE never merges.

BPE merges are derived from the pieces: SentencePiece merges the adjacent pair whose
concatenation is the best-scored piece, so ranking merges by that piece's score reproduces it.
The tests compare both tokenizers over thousands of strings.
"""

from __future__ import annotations

import json
from pathlib import Path

from adapters.checkpoint.errors import ConversionError

# sentencepiece_model.proto enums
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_UNIGRAM, _BPE = 1, 2


def load_proto(path: Path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError
        raise ConversionError(f"{path}: not a SentencePiece model ({exc}).") from exc
    if not proto.pieces:
        raise ConversionError(f"{path}: SentencePiece model with no pieces.")
    return proto


def _bpe_merges(proto) -> list[tuple[str, str]]:
    pieces = proto.pieces
    mergeable = {p.piece: i for i, p in enumerate(pieces) if p.type in (_NORMAL, _USER_DEFINED)}
    # Single characters are always available as initial symbols, even if unscored.
    known = {p.piece for p in pieces}
    ranked: list[tuple[float, int, int, tuple[str, str]]] = []
    for piece, index in mergeable.items():
        if len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in known and right in known:
                # Best score first; equal scores: earlier piece first, then the longer left part.
                ranked.append((-pieces[index].score, index, -cut, (left, right)))
    ranked.sort()
    return [pair for *_, pair in ranked]


def _normalizer(proto):
    from tokenizers import Regex, normalizers

    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        # SentencePiece treats only U+0020 (after the charsmap) as whitespace here.
        steps += [
            normalizers.Replace(Regex(r"\A +"), ""),
            normalizers.Replace(Regex(r" +\z"), ""),
            normalizers.Replace(Regex(r" {2,}"), " "),
        ]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    return normalizers.Sequence(steps) if steps else None


def build_fast_tokenizer(proto):
    """A `tokenizers.Tokenizer` equivalent to the SentencePiece model in `proto`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    trainer = proto.trainer_spec
    pieces = proto.pieces
    unk = pieces[trainer.unk_id].piece if 0 <= trainer.unk_id < len(pieces) else None
    if trainer.model_type == _BPE:
        vocab = {p.piece: i for i, p in enumerate(pieces)}
        model = models.BPE(vocab=vocab, merges=_bpe_merges(proto), unk_token=unk,
                           fuse_unk=True, byte_fallback=trainer.byte_fallback)
    elif trainer.model_type == _UNIGRAM:
        model = models.Unigram([(p.piece, p.score) for p in pieces], unk_id=trainer.unk_id,
                               byte_fallback=trainer.byte_fallback)
    else:
        raise ConversionError(
            f"SentencePiece model type {trainer.model_type} (word/char) is not supported; only "
            "BPE and Unigram models convert to an identical fast tokenizer."
        )
    tokenizer = Tokenizer(model)
    normalizer = _normalizer(proto)
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    steps = [decoders.Replace("▁", " ")]
    if trainer.byte_fallback:
        steps += [decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)
    tokenizer.add_special_tokens([
        AddedToken(p.piece, special=True, normalized=False)
        for p in pieces if p.type in (_CONTROL, _UNKNOWN)
    ])
    user_defined = [AddedToken(p.piece, special=False, normalized=False)
                    for p in pieces if p.type == _USER_DEFINED]
    if user_defined:
        tokenizer.add_tokens(user_defined)
    return tokenizer


def _piece(proto, index: int, fallback: str) -> str:
    return proto.pieces[index].piece if 0 <= index < len(proto.pieces) else fallback


def convert_tokenizer(model_path: Path, out_dir: Path, *, pad_token_id: int,
                      model_max_length: int) -> dict:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json; returns a
    summary for the manifest. No BOS is added: HuatuoGPT2 prompts carry none."""
    proto = load_proto(model_path)
    tokenizer = build_fast_tokenizer(proto)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    trainer = proto.trainer_spec
    special = {
        "bos_token": _piece(proto, trainer.bos_id, "<s>"),
        "eos_token": _piece(proto, trainer.eos_id, "</s>"),
        "unk_token": _piece(proto, trainer.unk_id, "<unk>"),
        "pad_token": _piece(proto, pad_token_id, "<unk>"),
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special, indent=2, ensure_ascii=False) + "\n")
    spec = proto.normalizer_spec
    return {
        "source": model_path.name,
        "model_type": {_BPE: "bpe", _UNIGRAM: "unigram"}.get(trainer.model_type, "other"),
        "pieces": len(proto.pieces),
        "normalizer": {
            "name": spec.name,
            "add_dummy_prefix": spec.add_dummy_prefix,
            "remove_extra_whitespaces": spec.remove_extra_whitespaces,
            "escape_whitespaces": spec.escape_whitespaces,
            "precompiled_charsmap": bool(spec.precompiled_charsmap),
        },
        "byte_fallback": trainer.byte_fallback,
        "split_digits": trainer.split_digits,
    }
