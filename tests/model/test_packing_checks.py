"""The packing collates check their input as the backbone does (issue 22 W6): float ids were
truncated (1.7 -> 1) and mask values 0.5, -1 and NaN counted as valid tokens."""

import numpy as np
import pytest
import torch

from roberta_torch import RobertaBackbone, pack_padded_batch, pack_sequences


@pytest.mark.parametrize(
    "sequences",
    [
        [[0, 5, 2], [0, 1.7, 2]],
        [np.array([0.0, 5.0, 2.0])],
        [torch.tensor([0.0, 5.0])],
        [[True, False]],
        [{"token_ids": [0, 4.5, 2], "labels": 1}],
    ],
)
def test_pack_sequences_refuses_non_integer_ids(sequences):
    with pytest.raises(TypeError, match=r"sequences\[\d\].*integers"):
        pack_sequences(sequences)


def test_pack_sequences_keeps_integer_ids_and_empty_sequences():
    packed = pack_sequences([[0, 5, 2], np.array([0, 7], dtype=np.int32), [], torch.tensor([0, 1, 1, 2])])
    assert packed["token_ids"].dtype == torch.int64
    assert packed["token_ids"].tolist() == [0, 5, 2, 0, 7, 0, 1, 1, 2]
    assert packed["cu_seqlens"].tolist() == [0, 3, 5, 5, 9] and packed["max_seqlen"] == 4


@pytest.mark.parametrize("bad", [0.5, -1.0, float("nan"), 2.0])
def test_pack_padded_batch_refuses_masks_that_are_not_0_or_1(bad):
    ids = torch.randint(3, 30, (2, 5))
    mask = torch.ones(2, 5)
    mask[1, 3] = bad
    with pytest.raises(ValueError, match=r"padding_mask.*0 or 1"):
        pack_padded_batch({"token_ids": ids, "padding_mask": mask})
    with pytest.raises(ValueError, match=r"padding_mask.*0 or 1"):  # the backbone says the same
        RobertaBackbone(vocabulary_size=30, num_layers=1, num_heads=1, hidden_dim=4, intermediate_dim=4)(
            {"token_ids": ids, "padding_mask": mask}
        )


def test_pack_padded_batch_refuses_float_ids_and_odd_mask_dtypes():
    with pytest.raises(TypeError, match="token_ids.*integers"):
        pack_padded_batch({"token_ids": torch.tensor([[0.0, 1.9]]), "padding_mask": torch.ones(1, 2)})
    with pytest.raises(TypeError, match="padding_mask.*bool or 0/1"):
        pack_padded_batch({"token_ids": torch.tensor([[0, 1]]), "padding_mask": torch.ones(1, 2, dtype=torch.complex64)})


def test_pack_padded_batch_accepts_every_binary_mask_form():
    ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
    expected = pack_padded_batch({"token_ids": ids, "padding_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool()})
    for mask in ([[1, 1, 1, 1], [1, 1, 1, 0]], np.array([[1.0, 1, 1, 1], [1, 1, 1, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])):
        packed = pack_padded_batch({"token_ids": ids.numpy(), "padding_mask": mask})
        assert packed["token_ids"].tolist() == expected["token_ids"].tolist() == [0, 5, 6, 2, 0, 7, 2]
        assert packed["cu_seqlens"].tolist() == [0, 4, 7]
