"""Data in (issue 20 item 6): the preprocessors return numpy on request, and `pad_sequences`
collates uneven tokenized rows (a real `datasets.Dataset.map` + `DataLoader`) into the
backbone's padded input, whose outputs equal the preprocessor's batch."""

import functools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import roberta_torch
from helpers.paths import TINY_PRESET
from roberta_torch import text_inputs

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Snow covered the village and the river froze over night after night.",
    "hello world",
    "dog dog dog cat dog",
    "Heavy rain is expected tomorrow in the north, and wind.",
    "ok",
]


@pytest.fixture(scope="module")
def preprocessor():
    return roberta_torch.Preprocessor.from_preset(str(TINY_PRESET), sequence_length=20)


def test_preprocessors_return_numpy_on_request(preprocessor):
    torch_out = preprocessor(TEXTS)
    numpy_out = preprocessor(TEXTS, return_tensors="np")
    assert numpy_out["token_ids"].dtype == np.int64 and numpy_out["padding_mask"].dtype == np.bool_
    for key in ("token_ids", "padding_mask"):
        assert isinstance(numpy_out[key], np.ndarray)
        np.testing.assert_array_equal(numpy_out[key], torch_out[key].numpy())
    classifier = roberta_torch.RobertaTextClassifierPreprocessor.from_preset(str(TINY_PRESET), sequence_length=20)
    x, y, w = classifier(TEXTS, list(range(7)), [1.0] * 7, return_tensors="np")
    assert isinstance(x["token_ids"], np.ndarray) and isinstance(y, np.ndarray) and isinstance(w, np.ndarray)
    assert y.tolist() == list(range(7))
    masked = roberta_torch.RobertaMaskedLMPreprocessor.from_preset(str(TINY_PRESET), sequence_length=20, seed=1)
    x, ids, weights = masked(TEXTS, return_tensors="np")
    reference = roberta_torch.RobertaMaskedLMPreprocessor.from_preset(str(TINY_PRESET), sequence_length=20, seed=1)
    rx, rids, rweights = reference(TEXTS)
    assert set(x) == {"token_ids", "padding_mask", "mask_positions"}
    for key in x:
        np.testing.assert_array_equal(x[key], rx[key].numpy())
    np.testing.assert_array_equal(ids, rids.numpy())
    np.testing.assert_array_equal(weights, rweights.numpy())
    for call in (lambda: preprocessor(TEXTS, return_tensors="tf"), lambda: masked(TEXTS, return_tensors=None)):
        with pytest.raises(ValueError, match="return_tensors"):
            call()


def test_pad_rows_widths():
    rows = [[0, 5, 2], [0, 2]]
    out = text_inputs.pad_rows(rows, 1)
    assert out["token_ids"].tolist() == [[0, 5, 2], [0, 2, 1]]
    assert out["padding_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert text_inputs.pad_rows(rows, 1, pad_to_multiple_of=4)["token_ids"].shape == (2, 4)
    assert text_inputs.pad_rows(rows, 1, width=6, return_tensors="np")["token_ids"].shape == (2, 6)
    with pytest.raises(ValueError, match="width"):
        text_inputs.pad_rows(rows, 1, width=2)
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        text_inputs.pad_rows(rows, 1, pad_to_multiple_of=0)


def test_datasets_map_then_dataloader_with_pad_sequences(preprocessor):
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1, 0, 1, 1, 0, 1]})

    def tokenize(batch):  # padded to each map batch's longest row: rows of different lengths
        return preprocessor(batch["text"], return_tensors="np")

    tokenized = dataset.map(tokenize, batched=True, batch_size=3, remove_columns=["text"])
    assert len({len(row) for row in tokenized["token_ids"]}) > 1  # uneven rows: default_collate fails
    with pytest.raises(RuntimeError):
        next(iter(DataLoader(tokenized, batch_size=7)))

    loader = DataLoader(tokenized, batch_size=4, collate_fn=roberta_torch.pad_sequences)
    batches = list(loader)
    assert [b["token_ids"].shape[0] for b in batches] == [4, 3]
    expected = preprocessor(TEXTS)
    backbone = roberta_torch.Backbone.from_preset(str(TINY_PRESET)).eval()
    with torch.no_grad():
        reference = backbone(expected)
        start = 0
        for batch in batches:
            assert set(batch) == {"token_ids", "padding_mask", "label"}
            assert batch["label"].tolist() == dataset["label"][start : start + len(batch["label"])]
            rows = expected["padding_mask"][start : start + len(batch["label"])]
            width = int(rows.sum(1).max())  # the longest real row of this batch, not of its map batch
            assert batch["token_ids"].shape[1] == width and batch["padding_mask"].dtype == torch.bool
            assert torch.equal(batch["token_ids"], expected["token_ids"][start : start + 4, :width])
            assert torch.equal(batch["padding_mask"], rows[:, :width])
            out = backbone({"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"]})
            mask = batch["padding_mask"]
            torch.testing.assert_close(out[mask], reference[start : start + 4, :width][mask], rtol=1e-5, atol=1e-5)
            start += len(batch["label"])

    multiple = DataLoader(tokenized, batch_size=4, collate_fn=functools.partial(roberta_torch.pad_sequences,
                                                                                pad_to_multiple_of=8))
    assert all(b["token_ids"].shape[1] % 8 == 0 for b in multiple)


def test_pad_sequences_pads_per_token_labels_and_checks_its_input():
    samples = [
        {"token_ids": [0, 7, 8, 2], "labels": [-100, 3, 4, -100], "weight": 0.5},
        {"token_ids": np.array([0, 9, 2]), "labels": np.array([-100, 5, -100]), "weight": 1.0},
        {"token_ids": torch.tensor([0, 2]), "labels": torch.tensor([-100, -100]), "weight": 2.0},
    ]
    batch = roberta_torch.pad_sequences(samples)
    assert batch["token_ids"].tolist() == [[0, 7, 8, 2], [0, 9, 2, 1], [0, 2, 1, 1]]
    assert batch["padding_mask"].sum(1).tolist() == [4, 3, 2]
    assert batch["labels"].tolist() == [[-100, 3, 4, -100], [-100, 5, -100, -100], [-100, -100, -100, -100]]
    assert batch["weight"].dtype == torch.float64 and batch["weight"].tolist() == [0.5, 1.0, 2.0]
    numpy_batch = roberta_torch.pad_sequences(samples, return_tensors="np", pad_to_multiple_of=8)
    assert numpy_batch["token_ids"].shape == (3, 8) and isinstance(numpy_batch["weight"], np.ndarray)
    assert numpy_batch["labels"][0, 4:].tolist() == [-100] * 4
    # Plain id lists (no dict) work as for pack_sequences.
    assert roberta_torch.pad_sequences([[0, 5, 2], [0, 2]])["token_ids"].tolist() == [[0, 5, 2], [0, 2, 1]]
    # A mask already padded wider than the batch needs is cut to the longest real row.
    padded = roberta_torch.pad_sequences([{"token_ids": [0, 5, 2, 1, 1], "padding_mask": [1, 1, 1, 0, 0]}])
    assert padded["token_ids"].tolist() == [[0, 5, 2]]

    bad = [
        ([{"token_ids": [0.5, 2.0]}], TypeError, "integer token ids"),
        ([{"token_ids": [0, 2], "padding_mask": [1, 0.5]}], ValueError, "booleans or 0/1"),
        ([{"token_ids": [0, 2], "padding_mask": [1]}], ValueError, "has 1 entries"),
        ([{"token_ids": [[0, 2]]}], ValueError, "1-D"),
        ([{"token_ids": [0, 2], "x": [1, 2, 3]}, {"token_ids": [0], "x": [1]}], ValueError, "different lengths"),
        ([{"token_ids": [0, 2], "y": 1}, {"token_ids": [0]}], ValueError, "'y' is in some samples"),
        ([], ValueError, "empty"),
        ([{"token_ids": [0, 2], "padding_mask": [0, 0]}], ValueError, "every sample is empty"),
    ]
    for samples, error, words in bad:
        with pytest.raises(error, match=words):
            roberta_torch.pad_sequences(samples)
