"""The masked-LM preprocessor's masking statistics and keras_hub's layout; the classifier
preprocessor's label pass-through."""

import numpy as np
import pytest
import torch

from helpers.paths import TINY_PRESET
from roberta_torch.tasks.preprocessors import RobertaMaskedLMPreprocessor, RobertaTextClassifierPreprocessor

TEXTS = ["the quick brown fox jumps over the lazy dog", "a b", "hello world, hello again and again"]


def masker(**kwargs):
    return RobertaMaskedLMPreprocessor.from_preset(str(TINY_PRESET), sequence_length=24, **kwargs)


def synthetic_rows(batch=4000, seq=40, seed=0):
    """Packed-looking rows: <s> ids </s> <pad>..., random lengths, ids in [3, 1000)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, seq + 1, (batch,), generator=g)
    ids = torch.randint(3, 1000, (batch, seq), generator=g)
    positions = torch.arange(seq)
    mask = positions < lengths[:, None]
    ids = torch.where(mask, ids, torch.ones_like(ids))
    ids[:, 0] = 0
    ids[torch.arange(batch), lengths - 1] = 2
    return ids, mask


def test_masking_statistics_match_keras_hub_rates():
    pre = masker(seed=0)
    ids, mask = synthetic_rows()
    masked, positions, mask_ids, weights = pre.mask(ids, mask)
    selectable = mask & (ids != 0) & (ids != 2) & (ids != 1)
    n_selectable = int(selectable.sum())
    n_selected = int(weights.sum())
    rate = n_selected / n_selectable
    sigma = (0.15 * 0.85 / n_selectable) ** 0.5
    assert abs(rate - 0.15) < 5 * sigma
    real = weights.bool()
    rows = torch.arange(ids.shape[0])[:, None].expand_as(positions)
    # Never a special token or padding; mask_ids are the original tokens.
    assert selectable[rows[real], positions[real]].all()
    assert torch.equal(mask_ids[real], ids[rows[real], positions[real]])
    assert not mask_ids[~real].any() and not positions[~real].any()
    # 80 % <mask>, 10 % random (which can hit the same id: 1/1024), 10 % unchanged.
    after = masked[rows[real], positions[real]]
    is_mask = after == pre.tokenizer.mask_token_id
    unchanged = after == mask_ids[real]
    sigma = (0.1 * 0.9 / n_selected) ** 0.5
    assert abs(is_mask.float().mean() - 0.8) < 5 * (0.16 / n_selected) ** 0.5
    assert abs(unchanged.float().mean() - 0.1) < 5 * sigma + 0.001
    assert abs((~is_mask & ~unchanged).float().mean() - 0.1) < 5 * sigma
    # Tokens that were not selected never change.
    untouched = torch.ones_like(ids, dtype=torch.bool)
    untouched[rows[real], positions[real]] = False
    assert torch.equal(masked[untouched], ids[untouched])
    # Positions are in increasing order within a row.
    for row in range(50):
        p = positions[row][weights[row].bool()]
        assert torch.equal(p, p.sort().values)


def test_selections_are_capped_at_mask_selection_length():
    pre = masker(mask_selection_rate=1.0, mask_selection_length=5, seed=1)
    ids, mask = synthetic_rows(batch=200, seq=30, seed=1)
    _, positions, _, weights = pre.mask(ids, mask)
    assert positions.shape == (200, 5)
    selectable = (mask & (ids > 2)).sum(1)
    torch.testing.assert_close(weights.sum(1), selectable.clamp(max=5).float())
    # A random subset, not always the first five.
    assert len({tuple(p.tolist()) for p in positions[selectable > 10]}) > 1


def test_layout_equals_keras_hub_at_deterministic_rates():
    import keras_hub

    kwargs = dict(mask_selection_rate=1.0, mask_token_rate=1.0, random_token_rate=0.0, mask_selection_length=30)
    ours = masker(pad_to_sequence_length=True, **kwargs)
    theirs = keras_hub.models.RobertaMaskedLMPreprocessor.from_preset(str(TINY_PRESET), sequence_length=24, **kwargs)
    x, y, w = ours(TEXTS)
    kx, ky, kw = theirs(TEXTS)
    for key in ("token_ids", "padding_mask", "mask_positions"):
        np.testing.assert_array_equal(x[key].numpy(), np.asarray(kx[key]).astype(x[key].numpy().dtype), err_msg=key)
    np.testing.assert_array_equal(y.numpy(), np.asarray(ky))
    np.testing.assert_array_equal(w.numpy(), np.asarray(kw))


def test_seed_reproduces_and_bad_arguments_are_typed_errors():
    a, b = masker(seed=3)(TEXTS), masker(seed=3)(TEXTS)
    for left, right in zip(a[0].values(), b[0].values()):
        assert torch.equal(left, right)
    with pytest.raises(ValueError, match="mask_selection_rate"):
        masker(mask_selection_rate=1.5)
    with pytest.raises(ValueError, match="mask_selection_length"):
        masker(mask_selection_length=0)
    with pytest.raises(ValueError, match="mask_token_rate.*random_token_rate"):
        masker(mask_token_rate=0.9, random_token_rate=0.2)
    with pytest.raises(ValueError, match="y"):
        masker()(TEXTS, y=[1, 2, 3])


def test_text_classifier_preprocessor_passes_labels_through():
    pre = RobertaTextClassifierPreprocessor.from_preset(str(TINY_PRESET), sequence_length=16)
    x = pre(TEXTS)
    assert set(x) == {"token_ids", "padding_mask"}
    x, y = pre(TEXTS, [0, 1, 2])
    assert torch.equal(y, torch.tensor([0, 1, 2]))
    x, y, w = pre([("a", "b"), ("c", "d")], np.array([1, 0]), [0.5, 1.0])
    assert x["token_ids"].shape[0] == 2 and y.tolist() == [1, 0] and w.tolist() == [0.5, 1.0]
    assert torch.equal(x["token_ids"], pre.packer([("a", "b"), ("c", "d")])["token_ids"])
    with pytest.raises(ValueError, match="`y`"):
        pre(TEXTS, [0, 1])


def test_mask_selection_length_is_bounded_by_the_sequence_length():
    """Before: 10**9 was accepted and the first call allocated B x 10**9 (issue 22 B4)."""
    with pytest.raises(ValueError, match="mask_selection_length.*sequence_length=24.*<= 96"):
        masker(mask_selection_length=10**9)
    with pytest.raises(ValueError, match="mask_selection_length"):
        RobertaMaskedLMPreprocessor.from_preset(str(TINY_PRESET), sequence_length=200, mask_selection_length=201)
    tokenizer = masker().tokenizer
    with pytest.raises(ValueError, match="mask_selection_length"):
        RobertaMaskedLMPreprocessor(tokenizer, sequence_length=24, mask_selection_length=97)
    # keras_hub's default (96) on short rows, and any width up to the sequence length, stay valid.
    assert masker()(TEXTS)[1].shape == (3, 96)
    long = RobertaMaskedLMPreprocessor(tokenizer, sequence_length=200, mask_selection_length=200)
    assert long(TEXTS)[1].shape == (3, 200)
