"""Packed batches ({"token_ids": (total,), "cu_seqlens": ...}) on every task: per-token heads
give the padded model's rows, the classifier reads each sequence's first token (it failed with
a bare IndexError), and losses equal the padded batch's."""

import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, attention, pack_padded_batch, tasks

SMALL = dict(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=12)
LENGTHS = [9, 4, 6]


def padded(seed=0):
    ids = torch.randint(3, 40, (3, 9), generator=torch.Generator().manual_seed(seed))
    return {"token_ids": ids, "padding_mask": torch.arange(9)[None] < torch.tensor(LENGTHS)[:, None]}


def build(kind):
    backbone = RobertaBackbone(**SMALL, dropout=0.0)
    head = {
        "classifier": lambda: tasks.RobertaTextClassifier(backbone, num_classes=3),
        "tagger": lambda: tasks.RobertaTokenClassifier(backbone, num_classes=3, dropout=0.0),
        "mlm": lambda: tasks.RobertaMaskedLM(backbone),
        "qa": lambda: tasks.RobertaQuestionAnswerer(backbone),
    }[kind]()
    return randomize_(head, seed=4).eval()


@pytest.mark.parametrize("kind", ["classifier", "tagger", "mlm", "qa"])
def test_packed_outputs_equal_padded_ones(kind):
    model, inputs = build(kind), padded()
    packed = pack_padded_batch(inputs)
    valid = inputs["padding_mask"]
    with torch.no_grad():
        expected, got = model(inputs), model(packed)
        keywords = model(**packed)
    for e, g, k in zip(*(o if isinstance(o, tuple) else (o,) for o in (expected, got, keywords))):
        e = e if kind == "classifier" else e[valid]  # per-token: (total, ...) is the valid rows in order
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(k, g, rtol=0, atol=0)


def test_packed_losses_equal_padded_ones():
    inputs = padded()
    packed = pack_padded_batch(inputs)
    valid = inputs["padding_mask"]
    generator = torch.Generator().manual_seed(1)
    token_labels = torch.randint(0, 3, (3, 9), generator=generator).masked_fill(~valid, -100)
    token_labels[0, 2] = -100
    vocabulary_labels = torch.randint(0, 40, (3, 9), generator=generator).masked_fill(~valid, -100)
    cases = [
        ("classifier", torch.tensor([2, 0, 1]), torch.tensor([2, 0, 1])),
        ("tagger", token_labels, token_labels[valid]),
        ("mlm", vocabulary_labels, vocabulary_labels[valid]),
        # per-sequence positions; -1 counts as 0, 7 is past the second sequence (ignored)
        ("qa", torch.tensor([[1, 3], [-1, 7], [2, 5]]), torch.tensor([[1, 3], [-1, 7], [2, 5]])),
    ]
    for kind, padded_labels, packed_labels in cases:
        model = build(kind)
        with torch.no_grad():
            expected = model(inputs, labels=padded_labels).loss
            got = model(packed, labels=packed_labels).loss
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=kind)


def test_packed_qa_loss_trains_like_the_padded_one():
    inputs, labels = padded(), torch.tensor([[1, 3], [0, 2], [2, 5]])
    grads = []
    for batch in (inputs, pack_padded_batch(inputs)):
        model = build("qa").train()
        model(batch, labels=labels).loss.backward()
        grads.append(model.qa_outputs.weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_masked_lm_mask_positions_count_within_each_packed_sequence():
    model, inputs = build("mlm"), padded()
    positions = torch.tensor([[0, 8], [3, 1], [5, 2]])
    with torch.no_grad():
        expected = model({**inputs, "mask_positions": positions})
        got = model({**pack_padded_batch(inputs), "mask_positions": positions})
    assert got.shape == (3, 2, 40)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"mask_positions.*its sequence's length"):
        model({**pack_padded_batch(inputs), "mask_positions": torch.tensor([[0, 8], [4, 1], [5, 2]])})


def test_a_packed_batch_with_an_empty_sequence_cannot_be_classified():
    packed = {"token_ids": torch.randint(3, 40, (7,)), "cu_seqlens": torch.tensor([0, 4, 4, 7], dtype=torch.int32)}
    with pytest.raises(ValueError, match=r"at least one token.*sequences \[1\]"):
        build("classifier")(packed)
    with torch.no_grad():  # per-token heads have nothing to say about it
        assert build("tagger")(packed).shape == (7, 3)


def test_packed_label_shapes_are_checked_before_the_model_runs():
    packed = pack_padded_batch(padded())
    with attention.record_dispatch() as calls, pytest.raises(ValueError, match=r"labels.*\(19,\)"):
        build("tagger")(packed, labels=torch.zeros(3, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels.*\(3, 2\)"):
        build("qa")(packed, labels=torch.zeros(19, dtype=torch.long))
    assert calls == []
