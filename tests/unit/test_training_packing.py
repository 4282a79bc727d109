"""Labels and packing, checked with literal tensors on a character-level encoder."""

from __future__ import annotations

import pytest

from adapters.training.packing import (
    IGNORE_INDEX,
    SampleTooLong,
    TokenizedSample,
    conversation_text,
    pack,
    tokenize_sample,
    training_prompt,
)
from huatuogpt2.prompt_format import generate_prompt, parse_messages, render

X = IGNORE_INDEX
EOS = 2


def char_encoder(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """One token per character; id = 10 + position in a fixed alphabet (literal ids below)."""
    alphabet = "<问>：\n答QAqab"
    return [10 + alphabet.index(c) for c in text], [(i, i + 1) for i in range(len(text))]


# Token ids of the char encoder.
LT, WEN, GT, COLON, NL, DA, Q, A, q, a, b = range(10, 21)


def test_single_round_labels_are_answer_plus_eos() -> None:
    sample = tokenize_sample([("Q", "ab")], char_encoder, max_seq_len=64)
    # "<问>：Q\n<答>：ab" + EOS
    assert sample.input_ids == [LT, WEN, GT, COLON, Q, NL, LT, DA, GT, COLON, a, b, EOS]
    assert sample.labels == [X, X, X, X, X, X, X, X, X, X, a, b, EOS]
    assert 1 not in sample.input_ids  # no BOS


def test_two_rounds_eos_label_after_each_answer() -> None:
    sample = tokenize_sample([("Q", "a"), ("q", "b")], char_encoder, max_seq_len=64)
    # "<问>：Q\n<答>：a\n<问>：q\n<答>：b" + EOS
    assert sample.input_ids == [LT, WEN, GT, COLON, Q, NL, LT, DA, GT, COLON, a,
                                NL, LT, WEN, GT, COLON, q, NL, LT, DA, GT, COLON, b, EOS]
    # The "\n" after answer 1 is labelled EOS: the model learns to stop after each answer.
    assert sample.labels == [X, X, X, X, X, X, X, X, X, X, a,
                             EOS, X, X, X, X, X, X, X, X, X, X, b, EOS]


def test_truncation_to_max_seq_len() -> None:
    sample = tokenize_sample([("Q", "ab")], char_encoder, max_seq_len=11)
    assert len(sample.input_ids) == len(sample.labels) == 11
    assert sample.labels[-1] == a
    assert sample.truncated_from == 13  # marked, so the caller counts and logs it
    assert tokenize_sample([("Q", "ab")], char_encoder, max_seq_len=13).truncated_from == 0


def test_truncation_off_refuses_the_long_sample() -> None:
    with pytest.raises(SampleTooLong, match="13 tokens, more than max_seq_len 11"):
        tokenize_sample([("Q", "ab")], char_encoder, max_seq_len=11, truncate=False)


def test_training_prompt_is_the_server_prompt() -> None:
    rounds = [("头痛怎么办？", "多休息。"), ("还要注意什么？", "及时就医。")]
    messages = [{"role": "user", "content": "头痛怎么办？"},
                {"role": "assistant", "content": "多休息。"},
                {"role": "user", "content": "还要注意什么？"}]
    server_prompt = render(parse_messages(messages))
    assert training_prompt(rounds, 1) == server_prompt
    assert training_prompt(rounds, 1) == generate_prompt("还要注意什么？", [rounds[0]])
    text, spans = conversation_text(rounds)
    assert text.startswith(server_prompt)
    assert text[spans[1][0]:spans[1][1]] == "及时就医。"
    assert text[:spans[1][0]].encode() == server_prompt.encode()


def s(n: int, tag: int) -> TokenizedSample:
    return TokenizedSample([tag] * n, [tag + 100] * n)


def test_greedy_packing_literal_rows() -> None:
    packed = pack([s(3, 5), s(2, 6), s(4, 7), s(1, 8)], max_seq_len=6, strategy="greedy")
    assert packed.input_ids.tolist() == [[5, 5, 5, 6, 6, 0], [7, 7, 7, 7, 8, 0]]
    assert packed.labels.tolist() == [[105, 105, 105, 106, 106, X], [107, 107, 107, 107, 108, X]]
    assert packed.sample_rows == [0, 0, 1, 1]
    assert packed.efficiency == pytest.approx(10 / 12)


def test_packing_keeps_order_and_does_not_look_ahead() -> None:
    # Upstream is greedy in order: the 1-token sample does NOT back-fill row 0.
    packed = pack([s(4, 5), s(3, 6), s(1, 7)], max_seq_len=5, strategy="greedy")
    assert packed.input_ids.tolist() == [[5, 5, 5, 5, 0], [6, 6, 6, 7, 0]]
    assert packed.sample_rows == [0, 1, 1]


def test_exact_fit_has_no_padding() -> None:
    packed = pack([s(2, 5), s(2, 6)], max_seq_len=4)
    assert packed.input_ids.tolist() == [[5, 5, 6, 6]]
    assert packed.efficiency == 1.0


@pytest.mark.parametrize("strategy", ["bfd", "greedy"])
def test_too_long_sample_is_refused_by_name(strategy: str) -> None:
    with pytest.raises(SampleTooLong, match="sample 1 of the training order has 7 tokens"):
        pack([s(2, 5), s(7, 6)], max_seq_len=6, strategy=strategy)
    with pytest.raises(SampleTooLong, match="'sft' sample 'x9' has 7 tokens"):
        pack([s(2, 5), s(7, 6)], max_seq_len=6, strategy=strategy,
             names=["a", "'sft' sample 'x9'"])


def test_bfd_literal_rows() -> None:
    # Lengths 3 2 4 1 5 3 (row 6), one window: placed longest first, each into the open row it
    # fills most tightly: 5 -> r0, 4 -> r1, 3(#0) -> r2, 3(#5) -> r2 (full), 2 -> r1 (full),
    # 1 -> r0 (full). Within a row, draw order; rows by mean draw position:
    # r1 = {#1, #2} mean 1.5, r2 = {#0, #5} mean 2.5, r0 = {#3, #4} mean 3.5.
    samples = [s(3, 10), s(2, 11), s(4, 12), s(1, 13), s(5, 14), s(3, 15)]
    packed = pack(samples, max_seq_len=6)
    assert packed.input_ids.tolist() == [[11, 11, 12, 12, 12, 12],
                                         [10, 10, 10, 15, 15, 15],
                                         [13, 14, 14, 14, 14, 14]]
    assert packed.labels.tolist()[0] == [111, 111, 112, 112, 112, 112]
    assert packed.sample_rows == [1, 0, 0, 2, 2, 1]
    assert packed.efficiency == 1.0
    # Greedy needs 4 rows for the same samples.
    assert pack(samples, max_seq_len=6, strategy="greedy").input_ids.shape == (4, 6)


def test_bfd_takes_the_tightest_row_not_the_emptiest() -> None:
    # 6 -> r0 (4 left), 5 -> r1 (5 left), 4 -> r0: the row it fills exactly, not r1.
    packed = pack([s(5, 10), s(4, 11), s(6, 12)], max_seq_len=10)
    assert packed.input_ids.tolist() == [[10] * 5 + [0] * 5, [11] * 4 + [12] * 6]
    assert packed.sample_rows == [0, 1, 1]


def test_bfd_windows_keep_samples_near_their_draw_position() -> None:
    # window_rows=1: windows of at most 6 tokens of consecutive samples, packed separately:
    # [3, 2] [4, 1] [5] [3]; the 1 may not jump back to fill the first row.
    samples = [s(3, 10), s(2, 11), s(4, 12), s(1, 13), s(5, 14), s(3, 15)]
    packed = pack(samples, max_seq_len=6, window_rows=1)
    assert packed.input_ids.tolist() == [[10, 10, 10, 11, 11, 0],
                                         [12, 12, 12, 12, 13, 0],
                                         [14, 14, 14, 14, 14, 0],
                                         [15, 15, 15, 0, 0, 0]]


def random_samples(n: int, seed: int, top: int = 300) -> list[TokenizedSample]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(1, top)
        out.append(TokenizedSample([i + 3] * length, [i + 100_000] * length))
    return out


def unpack(packed) -> list[tuple[int, ...]]:
    """Every sample found in the rows (runs of one id, ids are unique per sample)."""
    found = []
    for row in packed.input_ids.tolist():
        runs: list[list[int]] = []
        for token in row:
            if token == 0:
                continue
            if runs and runs[-1][0] == token:
                runs[-1].append(token)
            else:
                runs.append([token])
        found += [tuple(run) for run in runs]
    return found


@pytest.mark.parametrize("strategy", ["bfd", "greedy"])
def test_no_sample_lost_split_or_cut(strategy: str) -> None:
    samples = random_samples(500, seed=1)
    packed = pack(samples, max_seq_len=512, strategy=strategy, window_rows=8)
    # The multiset of samples is the same before and after (each id is one sample, so a split
    # sample would show up as two runs of its id).
    assert sorted(unpack(packed)) == sorted(tuple(x.input_ids) for x in samples)
    assert packed.real_tokens == sum(len(x.input_ids) for x in samples)
    for i, sample in enumerate(samples):
        row = packed.input_ids[packed.sample_rows[i]].tolist()
        assert row.count(sample.input_ids[0]) == len(sample.input_ids)
        # Labels travel with their tokens.
        labels = packed.labels[packed.sample_rows[i]].tolist()
        assert labels.count(sample.labels[0]) == len(sample.labels)


def test_bfd_is_deterministic() -> None:
    samples = random_samples(400, seed=2)
    a = pack(samples, max_seq_len=512, window_rows=16)
    b = pack(list(samples), max_seq_len=512, window_rows=16)
    assert a.input_ids.tolist() == b.input_ids.tolist()
    assert a.labels.tolist() == b.labels.tolist()
    assert a.sample_rows == b.sample_rows


def test_bfd_keeps_the_order_intent() -> None:
    samples = random_samples(2000, seed=3)
    packed = pack(samples, max_seq_len=512, window_rows=16)
    rows = packed.input_ids.shape[0]
    members: list[list[int]] = [[] for _ in range(rows)]
    for i, r in enumerate(packed.sample_rows):
        members[r].append(i)
    means = [sum(m) / len(m) for m in members]
    # Rows come in the order of the mean draw position of their samples ...
    assert means == sorted(means)
    # ... so the early rows hold the early draws and the late rows the late ones.
    tenth = rows // 10
    assert max(means[:tenth]) < min(means[-tenth:])
    # No sample moves out of its window: a row spans at most about one window of draws.
    window_samples = 16 * 512 / 150.5  # rows' worth of tokens / mean length
    assert max(max(m) - min(m) for m in members) < 1.5 * window_samples
    # Within a row, the draw order is kept.
    for r, m in enumerate(members):
        ids = [t for t in dict.fromkeys(packed.input_ids[r].tolist()) if t != 0]
        assert ids == [samples[i].input_ids[0] for i in m]


def test_bfd_packs_tighter_than_greedy() -> None:
    samples = random_samples(2000, seed=4)
    bfd = pack(samples, max_seq_len=512)
    greedy = pack(samples, max_seq_len=512, strategy="greedy")
    assert bfd.efficiency >= 0.97 > greedy.efficiency
    assert bfd.efficiency <= bfd.efficiency_bound


def test_unknown_strategy_refused() -> None:
    with pytest.raises(ValueError, match="bfd, greedy"):
        pack([s(2, 5)], max_seq_len=4, strategy="first-fit")


def test_collated_batch_is_the_literal_packed_tensors() -> None:
    import torch

    from adapters.training.dataset import PackedDataset, collate

    dataset = PackedDataset(pack([s(3, 5), s(2, 6), s(4, 7)], max_seq_len=5))
    batch = collate([dataset[0], dataset[1]])
    assert batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 5, 5, 6, 6], [7, 7, 7, 7, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[105, 105, 105, 106, 106],
                                                      [107, 107, 107, 107, X]]))


def test_long_samples_are_cut_counted_and_logged_or_refused_by_name(caplog) -> None:
    import logging

    from adapters.training.config import DataConfig
    from adapters.training.dataset import tokenize_in_order
    from adapters.training.readers import Sample
    from adapters.training.sampling import Slot

    by_source = {"sft": [Sample("short", "sft", (("Q", "a"),)),
                         Sample("long-7", "sft", (("Q", "ab" * 4),))]}
    order = [Slot("sft", 1), Slot("sft", 0), Slot("sft", 1)]

    def encode_batch(texts):
        return [char_encoder(t) for t in texts]

    with caplog.at_level(logging.WARNING, logger="adapters.training.dataset"):
        samples = tokenize_in_order(order, by_source, encode_batch, DataConfig(max_seq_len=16))
    assert [len(x.input_ids) for x in samples] == [16, 12, 16]
    assert [x.truncated_from for x in samples] == [19, 0, 19]
    assert "1 of 2 distinct samples are longer than max_seq_len 16" in caplog.text
    assert "'long-7' (19 tokens)" in caplog.text
    with pytest.raises(SampleTooLong, match="source 'sft' sample 'long-7' has 19 tokens"):
        tokenize_in_order(order, by_source, encode_batch,
                          DataConfig(max_seq_len=16, truncate_long_samples=False))
