"""Tokenisation with labels, and greedy packing into fixed-length rows (upstream's recipe).

The text of a conversation is rendered by `huatuogpt2.prompt_format`, the module the server uses,
so the prompt training sees for round k is byte-identical to what `huatuo serve` builds for the
same history. The WHOLE text is tokenised at once (as the server tokenises a prompt) and labels
are assigned by character offsets, so no segment-boundary artefacts (a SentencePiece dummy
prefix, a BPE merge across a cut) appear in training that never appear in serving.

Labels (aligned with input_ids; the model shifts them): answer tokens are their own ids; the
token after each answer gets EOS (id 2) as its label, so the model learns to stop there; the
final answer is followed by an appended EOS token whose label is EOS; every other position
is -100. No BOS anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from huatuogpt2.checkpoint_metadata import EOS_TOKEN_ID, PAD_TOKEN_ID
from huatuogpt2.prompt_format import Conversation, Round, render

IGNORE_INDEX = -100

# text -> (token ids, (start, end) character offsets per token)
EncodeWithOffsets = Callable[[str], tuple[list[int], list[tuple[int, int]]]]


@dataclass(frozen=True)
class TokenizedSample:
    input_ids: list[int]
    labels: list[int]


def conversation_text(rounds: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The full training text and the (start, end) character span of every answer."""
    spans: list[tuple[int, int]] = []
    for k, (_, answer) in enumerate(rounds):
        start = len(training_prompt(rounds, k))
        spans.append((start, start + len(answer)))
    text = render(Conversation(None, tuple(Round(q, a) for q, a in rounds)))
    return text, spans


def training_prompt(rounds: Sequence[tuple[str, str]], k: int) -> str:
    """The prompt before answer k, exactly as the server renders it for that history."""
    history = tuple(Round(q, a) for q, a in rounds[:k])
    return render(Conversation(None, history + (Round(rounds[k][0]),)))


def tokenize_sample(rounds: Sequence[tuple[str, str]], encode: EncodeWithOffsets,
                    max_seq_len: int, eos_id: int = EOS_TOKEN_ID) -> TokenizedSample:
    text, spans = conversation_text(rounds)
    ids, offsets = encode(text)
    return label_tokens(ids, offsets, spans, max_seq_len, eos_id)


def label_tokens(ids: list[int], offsets: Sequence[tuple[int, int]],
                 spans: Sequence[tuple[int, int]], max_seq_len: int,
                 eos_id: int = EOS_TOKEN_ID) -> TokenizedSample:
    """Labels from character spans of the answers (see the module docstring); appends EOS."""
    ids = list(ids)
    labels = [IGNORE_INDEX] * len(ids)
    for span_start, span_end in spans:
        after_answer = None
        for j, (tok_start, _) in enumerate(offsets):
            if span_start <= tok_start < span_end:
                labels[j] = ids[j]
            elif tok_start >= span_end:
                after_answer = j
                break
        if after_answer is not None:
            labels[after_answer] = eos_id
    ids = ids + [eos_id]
    labels = labels + [eos_id]
    # Upstream truncates over-long samples to the row length.
    return TokenizedSample(ids[:max_seq_len], labels[:max_seq_len])


def hf_encoder(tokenizer) -> EncodeWithOffsets:
    """Wrap a Hugging Face FAST tokenizer: no special tokens, character offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("training needs a fast tokenizer (tokenizer.json) for character offsets; "
                         "convert the checkpoint with `huatuo convert` first")

    def encode(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    return encode


def hf_batch_encoder(tokenizer):
    """Batch version of hf_encoder: the Rust tokenizer encodes a batch in parallel."""
    hf_encoder(tokenizer)  # same checks

    def encode_batch(texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [(list(ids), [tuple(o) for o in offs])
                for ids, offs in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]

    return encode_batch


@dataclass
class PackedRows:
    """Packed rows as [rows, max_seq_len] int32 arrays (compact for millions of samples)."""

    input_ids: np.ndarray
    labels: np.ndarray
    # For each packed sample (in order): the row it landed in.
    sample_rows: list[int] = field(default_factory=list)
    real_tokens: int = 0

    @property
    def efficiency(self) -> float:
        """Fraction of non-padding tokens."""
        total = self.input_ids.size
        return self.real_tokens / total if total else 0.0


def pack(samples: Sequence[TokenizedSample], max_seq_len: int,
         pad_id: int = PAD_TOKEN_ID) -> PackedRows:
    """Greedy packing in the given order (upstream): a sample that does not fit the current row
    closes it (padded with pad_id, labels -100) and opens the next one. Order is preserved, so the
    priority-sampling order survives packing."""
    # Pass 1: where every sample goes (lengths only), so the arrays are allocated once.
    placements: list[tuple[int, int]] = []  # (row, column)
    row, used = 0, 0
    for sample in samples:
        n = len(sample.input_ids)
        if n > max_seq_len:
            raise ValueError("sample longer than max_seq_len; tokenize_sample truncates")
        if used and used + n > max_seq_len:
            row, used = row + 1, 0
        placements.append((row, used))
        used += n
    rows = row + 1 if samples else 0
    input_ids = np.full((rows, max_seq_len), pad_id, dtype=np.int32)
    labels = np.full((rows, max_seq_len), IGNORE_INDEX, dtype=np.int32)
    real = 0
    # Pass 2: copy the tokens in.
    for sample, (r, c) in zip(samples, placements, strict=True):
        n = len(sample.input_ids)
        input_ids[r, c:c + n] = sample.input_ids
        labels[r, c:c + n] = sample.labels
        real += n
    return PackedRows(input_ids, labels, [r for r, _ in placements], real)
