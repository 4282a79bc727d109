"""Labels and packing, checked with literal tensors on a character-level encoder."""

from __future__ import annotations

import pytest

from adapters.training.packing import (
    IGNORE_INDEX,
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
    packed = pack([s(3, 5), s(2, 6), s(4, 7), s(1, 8)], max_seq_len=6)
    assert packed.input_ids.tolist() == [[5, 5, 5, 6, 6, 0], [7, 7, 7, 7, 8, 0]]
    assert packed.labels.tolist() == [[105, 105, 105, 106, 106, X], [107, 107, 107, 107, 108, X]]
    assert packed.sample_rows == [0, 0, 1, 1]
    assert packed.efficiency == pytest.approx(10 / 12)


def test_packing_keeps_order_and_does_not_look_ahead() -> None:
    # Upstream is greedy in order: the 1-token sample does NOT back-fill row 0.
    packed = pack([s(4, 5), s(3, 6), s(1, 7)], max_seq_len=5)
    assert packed.input_ids.tolist() == [[5, 5, 5, 5, 0], [6, 6, 6, 7, 0]]
    assert packed.sample_rows == [0, 1, 1]


def test_exact_fit_has_no_padding() -> None:
    packed = pack([s(2, 5), s(2, 6)], max_seq_len=4)
    assert packed.input_ids.tolist() == [[5, 5, 6, 6]]
    assert packed.efficiency == 1.0


def test_too_long_sample_is_refused() -> None:
    with pytest.raises(ValueError):
        pack([s(7, 5)], max_seq_len=6)


def test_collated_batch_is_the_literal_packed_tensors() -> None:
    import torch

    from adapters.training.dataset import PackedDataset, collate

    dataset = PackedDataset(pack([s(3, 5), s(2, 6), s(4, 7)], max_seq_len=5))
    batch = collate([dataset[0], dataset[1]])
    assert batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 5, 5, 6, 6], [7, 7, 7, 7, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[105, 105, 105, 106, 106],
                                                      [107, 107, 107, 107, X]]))
