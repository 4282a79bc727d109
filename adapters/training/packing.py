"""Tokenisation with labels, and greedy packing into fixed-length rows (upstream's recipe).

The text of a conversation is rendered by `server.prompt_format`, the module the server uses,
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

from server.checkpoint_metadata import EOS_TOKEN_ID, PAD_TOKEN_ID
from server.prompt_format import Conversation, Round, render

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


@dataclass
class PackedRows:
    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    # For each packed sample (in order): the row it landed in.
    sample_rows: list[int] = field(default_factory=list)
    real_tokens: int = 0

    @property
    def efficiency(self) -> float:
        """Fraction of non-padding tokens."""
        total = sum(len(r) for r in self.input_ids)
        return self.real_tokens / total if total else 0.0


def pack(samples: Sequence[TokenizedSample], max_seq_len: int,
         pad_id: int = PAD_TOKEN_ID) -> PackedRows:
    """Greedy packing in the given order (upstream): a sample that does not fit the current row
    closes it (padded with pad_id, labels -100) and opens the next one. Order is preserved, so the
    priority-sampling order survives packing."""
    packed = PackedRows()
    cur_ids: list[int] = []
    cur_labels: list[int] = []

    def close() -> None:
        pad = max_seq_len - len(cur_ids)
        packed.input_ids.append(cur_ids + [pad_id] * pad)
        packed.labels.append(cur_labels + [IGNORE_INDEX] * pad)

    for sample in samples:
        if len(sample.input_ids) > max_seq_len:
            raise ValueError("sample longer than max_seq_len; tokenize_sample truncates")
        if cur_ids and len(cur_ids) + len(sample.input_ids) > max_seq_len:
            close()
            cur_ids, cur_labels = [], []
        cur_ids.extend(sample.input_ids)
        cur_labels.extend(sample.labels)
        packed.sample_rows.append(len(packed.input_ids))
        packed.real_tokens += len(sample.input_ids)
    if cur_ids:
        close()
    return packed
