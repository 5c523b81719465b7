"""`output_hidden_states=True`: the embedding output and every layer's output, equal on the
padded and padding-free paths, equal to transformers' hidden states; a plain call is unchanged."""

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.keras_fixtures import max_relative_error
from helpers.random_weights import randomize_
from helpers.transformers_models import padded_batch, random_transformers_model

CONFIG = dict(vocabulary_size=61, num_layers=3, num_heads=3, hidden_dim=12, intermediate_dim=20, max_sequence_length=16)
LENGTHS = [16, 1, 9, 4, 0]


def small(seed=0, **kwargs):
    return randomize_(roberta_torch.RobertaBackbone(**CONFIG, **kwargs), seed).eval()


def test_plain_call_unchanged_and_last_hidden_state_is_the_output():
    model = small()
    token_ids, mask = padded_batch(61, LENGTHS, 16)
    inputs = {"token_ids": token_ids, "padding_mask": mask}
    with torch.no_grad():
        plain = model(inputs)
        out = model(inputs, output_hidden_states=True)
        as_keywords = model(token_ids=token_ids, padding_mask=mask, output_hidden_states=True)
    assert isinstance(plain, torch.Tensor)
    assert isinstance(out, roberta_torch.BackboneOutput)
    assert len(out.hidden_states) == CONFIG["num_layers"] + 1
    assert all(h.shape == (len(LENGTHS), 16, 12) for h in out.hidden_states)
    assert out.hidden_states[-1] is out.sequence_output
    torch.testing.assert_close(out.sequence_output, plain, rtol=0, atol=0)
    torch.testing.assert_close(as_keywords.sequence_output, plain, rtol=0, atol=0)
    sequence_output, hidden_states = out  # a NamedTuple
    assert sequence_output is out.sequence_output


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_and_padding_free_hidden_states_agree(side):
    token_ids, mask = padded_batch(61, LENGTHS, 16, side=side, seed=2)
    inputs = {"token_ids": token_ids, "padding_mask": mask, "position_ids": roberta_torch.transformers_position_ids(mask)}
    with torch.no_grad():
        padded = small(1, padding_free=False)(inputs, output_hidden_states=True).hidden_states
        packed = small(1, padding_free=True)(inputs, output_hidden_states=True).hidden_states
    valid = mask.bool()
    for layer, (a, b) in enumerate(zip(padded, packed)):
        torch.testing.assert_close(b[valid], a[valid], rtol=1e-5, atol=1e-5, msg=f"hidden state {layer}")
        assert not b[~valid].any(), "padding-free hidden states are zero at padded positions"
        assert torch.isfinite(a).all()


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_hidden_states_match_transformers(tmp_path, side, padding_free):
    pytest.importorskip("transformers")
    hf_model = random_transformers_model("roberta", seed=5, num_hidden_layers=3)
    hf_model.save_pretrained(tmp_path)
    ours = roberta_torch.Backbone.from_preset(str(tmp_path), padding_free=padding_free)
    token_ids, mask = padded_batch(61, LENGTHS[:-1], 16, side=side, seed=4)
    with torch.no_grad():
        expected = hf_model(input_ids=token_ids, attention_mask=mask, output_hidden_states=True).hidden_states
        out = ours(
            {"token_ids": token_ids, "padding_mask": mask, "position_ids": roberta_torch.transformers_position_ids(mask)},
            output_hidden_states=True,
        )
    assert len(out.hidden_states) == len(expected) == 4
    for layer, (a, b) in enumerate(zip(out.hidden_states, expected)):
        error = max_relative_error(a.numpy(), b.numpy(), mask.numpy())
        assert error < 1e-5, f"hidden state {layer}: relative error {error:.2e}"


def test_hidden_states_backpropagate_with_gradient_checkpointing():
    model = small(2, gradient_checkpointing=True, dropout=0.0).train()
    token_ids, mask = padded_batch(61, LENGTHS, 16, seed=3)
    out = model({"token_ids": token_ids, "padding_mask": mask}, output_hidden_states=True)
    # Layer-wise pooling, as in probing or distillation: every layer gets a gradient.
    torch.stack([h.mean() for h in out.hidden_states]).sum().backward()
    grads = [p.grad for p in model.layers[0].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert np.isfinite(model.token_embedding.weight.grad.numpy()).all()
