"""The backbone against keras_hub's outputs on the committed fixtures (real Keras files)."""

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.keras_fixtures import (
    FLOAT32_CASES,
    LOW_PRECISION_POLICIES,
    batches,
    max_relative_error,
    preset_dir,
)

FLOAT32_TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=FLOAT32_CASES)
def case(request):
    return request.param


@pytest.mark.parametrize("padding_free", ["auto", True, False])
def test_float32_matches_keras_hub(case, padding_free):
    model = roberta_torch.Backbone.from_preset(str(preset_dir(case)), padding_free=padding_free)
    model.eval()
    for token_ids, padding_mask, expected in batches(case):
        with torch.no_grad():
            out = model({"token_ids": token_ids, "padding_mask": padding_mask})
        assert out.shape == expected.shape
        assert out.dtype == torch.float32
        out = out.numpy()
        # Keras masks keys only; rows with no valid token still give finite output.
        assert np.isfinite(out).all()
        assert max_relative_error(out, expected, padding_mask) < FLOAT32_TOLERANCE


def test_backbone_returns_the_class_named_in_the_preset():
    assert type(roberta_torch.Backbone.from_preset(str(preset_dir("xlm_roberta_2layer")))) is (
        roberta_torch.XLMRobertaBackbone
    )
    assert type(roberta_torch.Backbone.from_preset(str(preset_dir("roberta_1layer")))) is (
        roberta_torch.RobertaBackbone
    )


def test_bool_int_and_numpy_or_torch_masks_agree():
    model = roberta_torch.Backbone.from_preset(str(preset_dir("roberta_1layer"))).eval()
    token_ids, padding_mask, _ = list(batches("roberta_1layer"))[1]
    with torch.no_grad():
        outputs = [
            model({"token_ids": token_ids, "padding_mask": padding_mask}),
            model({"token_ids": torch.from_numpy(token_ids).long(), "padding_mask": torch.from_numpy(padding_mask).bool()}),
            model(token_ids=torch.from_numpy(token_ids), padding_mask=torch.from_numpy(padding_mask).float()),
        ]
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0], rtol=0, atol=0)


@pytest.mark.parametrize("policy", LOW_PRECISION_POLICIES)
def test_low_precision_matches_keras_within_keras_own_error(policy):
    """Judge our low-precision run like a kernel: against Keras's float32 output, our error
    must be within twice Keras's own error in the same policy (plus a small atol)."""
    model = roberta_torch.Backbone.from_preset(str(preset_dir("roberta_1layer")), dtype=policy).eval()
    compute_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "mixed_bfloat16": torch.bfloat16}[policy]
    assert model.dtype_policy.compute_dtype == compute_dtype
    expected_variable = torch.float32 if policy.startswith("mixed") else compute_dtype
    assert model.token_embedding.weight.dtype == expected_variable
    reference = list(batches("roberta_1layer"))
    keras_lowp = list(batches(f"roberta_1layer_{policy}"))
    for (token_ids, padding_mask, ref32), (_, _, keras_out) in zip(reference, keras_lowp):
        with torch.no_grad():
            out = model({"token_ids": token_ids, "padding_mask": padding_mask})
        assert out.dtype == compute_dtype
        out = out.float().numpy()
        valid = padding_mask.astype(bool)
        if not valid.any():
            continue
        ours = np.abs(out[valid] - ref32[valid]).max()
        keras = np.abs(keras_out[valid] - ref32[valid]).max()
        assert ours <= 2 * keras + 1e-2, (ours, keras)
