"""Tokenisation with labels, and packing into fixed-length rows.

The text of a conversation is rendered by `huatuogpt2.prompt_format`, the module the server uses,
so the prompt training sees for round k is byte-identical to what `huatuo serve` builds for the
same history. The WHOLE text is tokenised at once (as the server tokenises a prompt) and labels
are assigned by character offsets, so no segment-boundary artefacts (a SentencePiece dummy
prefix, a BPE merge across a cut) appear in training that never appear in serving.

Labels (aligned with input_ids; the model shifts them): answer tokens are their own ids; the
token after each answer gets EOS (id 2) as its label, so the model learns to stop there; the
final answer is followed by an appended EOS token whose label is EOS; every other position
is -100. No BOS anywhere.

Samples longer than a row: `label_tokens(..., truncate=True)` (upstream, and the default of
`data.truncate_long_samples`) cuts them to max_seq_len and marks them (`truncated_from`), so the
caller counts and logs them; `truncate=False` raises `SampleTooLong`. `pack` itself never cuts
or splits a sample: one longer than a row is refused with an error naming it.
"""

from __future__ import annotations

import math
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
    # Length before truncation to max_seq_len (0: not truncated).
    truncated_from: int = 0


class SampleTooLong(ValueError):
    """A sample longer than a packed row, where truncation is not allowed."""

    def __init__(self, length: int, max_seq_len: int, name: str = "a sample") -> None:
        self.length, self.max_seq_len, self.name = length, max_seq_len, name
        super().__init__(f"{name} has {length} tokens, more than max_seq_len {max_seq_len}")


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
                    max_seq_len: int, eos_id: int = EOS_TOKEN_ID,
                    truncate: bool = True) -> TokenizedSample:
    text, spans = conversation_text(rounds)
    ids, offsets = encode(text)
    return label_tokens(ids, offsets, spans, max_seq_len, eos_id, truncate)


def label_tokens(ids: list[int], offsets: Sequence[tuple[int, int]],
                 spans: Sequence[tuple[int, int]], max_seq_len: int,
                 eos_id: int = EOS_TOKEN_ID, truncate: bool = True) -> TokenizedSample:
    """Labels from character spans of the answers (see the module docstring); appends EOS.

    Longer than max_seq_len: cut and marked with `truncated_from` (truncate=True, upstream's
    behaviour), or `SampleTooLong` (truncate=False)."""
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
    if len(ids) <= max_seq_len:
        return TokenizedSample(ids, labels)
    if not truncate:
        raise SampleTooLong(len(ids), max_seq_len)
    # Upstream truncates over-long samples to the row length; the caller counts and logs them.
    return TokenizedSample(ids[:max_seq_len], labels[:max_seq_len], truncated_from=len(ids))


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


PACKING_STRATEGIES = ("bfd", "greedy")
DEFAULT_WINDOW_ROWS = 64


@dataclass
class PackedRows:
    """Packed rows as [rows, max_seq_len] int32 arrays (compact for millions of samples)."""

    input_ids: np.ndarray
    labels: np.ndarray
    # For each input sample (in the given order): the row it landed in.
    sample_rows: list[int] = field(default_factory=list)
    real_tokens: int = 0

    @property
    def efficiency(self) -> float:
        """Fraction of non-padding tokens."""
        total = self.input_ids.size
        return self.real_tokens / total if total else 0.0

    @property
    def efficiency_bound(self) -> float:
        """The best any packing of these tokens can do: all in the fewest whole rows."""
        if not self.input_ids.size:
            return 0.0
        width = self.input_ids.shape[1]
        return self.real_tokens / (math.ceil(self.real_tokens / width) * width)


def pack(samples: Sequence[TokenizedSample], max_seq_len: int, pad_id: int = PAD_TOKEN_ID,
         strategy: str = "bfd", window_rows: int = DEFAULT_WINDOW_ROWS,
         names: Sequence[str] | None = None) -> PackedRows:
    """Pack samples (given in training order) into rows of max_seq_len tokens, padded with
    pad_id (labels -100). No sample is ever split, cut or dropped: one longer than a row is
    refused with `SampleTooLong` naming it (`names[i]`, else its position).

    strategy "bfd" (default): best-fit decreasing within windows of the order. The order is the
    priority-sampling draw (one `torch.multinomial(weights, N, replacement=False)`, see
    sampling.py): high-priority data early, SFT data dominating the end. To keep that intent,
    the order is cut into windows of consecutive samples holding about `window_rows` rows'
    worth of tokens; within a window, samples are placed longest first, each into the open row
    of that window it fills most tightly (a new row when none has room). A sample therefore
    never moves out of its window: it shares a row only with samples drawn near it. Rows are
    then ordered by the mean draw position of their samples (ties: the earliest sample), and
    within a row samples keep their draw order. Deterministic: no randomness, ties broken by
    position. Each window leaves at most about one partly filled row, so larger windows pack
    tighter but move samples further (a sample moves by at most about one window, i.e.
    window_rows rows).

    strategy "greedy" (upstream): in order, a sample that does not fit the current row closes
    it and opens the next one; no sample moves.
    """
    if strategy not in PACKING_STRATEGIES:
        raise ValueError(f"packing strategy {strategy!r}: choose one of "
                         f"{', '.join(PACKING_STRATEGIES)}")
    lengths = [len(sample.input_ids) for sample in samples]
    for i, n in enumerate(lengths):
        if n > max_seq_len:
            name = names[i] if names is not None else f"sample {i} of the training order"
            raise SampleTooLong(n, max_seq_len, name)
    if strategy == "greedy":
        row_members = _greedy_rows(lengths, max_seq_len)
    else:
        row_members = _windowed_bfd_rows(lengths, max_seq_len, max(1, window_rows))
    return _fill(samples, row_members, max_seq_len, pad_id)


def _greedy_rows(lengths: Sequence[int], max_seq_len: int) -> list[list[int]]:
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if not rows or used + n > max_seq_len:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def _windowed_bfd_rows(lengths: Sequence[int], max_seq_len: int,
                       window_rows: int) -> list[list[int]]:
    import bisect

    window_tokens = window_rows * max_seq_len
    rows: list[list[int]] = []
    start = 0
    while start < len(lengths):
        # The window: consecutive samples until about window_rows rows' worth of tokens.
        end, tokens = start, 0
        while end < len(lengths) and (end == start or tokens + lengths[end] <= window_tokens):
            tokens += lengths[end]
            end += 1
        window_rows_members: list[list[int]] = []
        # Open rows of this window, as a sorted list of (free space, row number).
        free: list[tuple[int, int]] = []
        for i in sorted(range(start, end), key=lambda j: (-lengths[j], j)):
            n = lengths[i]
            k = bisect.bisect_left(free, (n, -1))  # the tightest row with room for n
            if k < len(free):
                space, r = free.pop(k)
            else:
                space, r = max_seq_len, len(window_rows_members)
                window_rows_members.append([])
            window_rows_members[r].append(i)
            bisect.insort(free, (space - n, r))
        rows.extend(sorted(members) for members in window_rows_members)
        start = end
    rows.sort(key=lambda members: (sum(members) / len(members), members[0]))
    return rows


def _fill(samples: Sequence[TokenizedSample], row_members: list[list[int]], max_seq_len: int,
          pad_id: int) -> PackedRows:
    input_ids = np.full((len(row_members), max_seq_len), pad_id, dtype=np.int32)
    labels = np.full((len(row_members), max_seq_len), IGNORE_INDEX, dtype=np.int32)
    sample_rows = [-1] * len(samples)
    real = 0
    for r, members in enumerate(row_members):
        c = 0
        for i in members:
            sample = samples[i]
            n = len(sample.input_ids)
            input_ids[r, c:c + n] = sample.input_ids
            labels[r, c:c + n] = sample.labels
            sample_rows[i] = r
            c += n
        if c > max_seq_len:  # pragma: no cover - the packers never overfill
            raise AssertionError(f"row {r} overfilled: {c} > {max_seq_len}")
        real += c
    if -1 in sample_rows:  # pragma: no cover - every sample is placed exactly once
        raise AssertionError("a sample was not packed")
    return PackedRows(input_ids, labels, sample_rows, real)
