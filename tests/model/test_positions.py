"""The optional `position_ids` input: transformers' positions reproduce transformers'
outputs on left-padded batches, the default stays Keras's column positions, bad input gets
typed errors, and left padding without positions is announced once."""

import logging

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.keras_fixtures import max_relative_error
from helpers.random_weights import randomize_
from helpers.transformers_models import padded_batch, random_transformers_model

CONFIG = dict(vocabulary_size=61, num_layers=2, num_heads=3, hidden_dim=12, intermediate_dim=20, max_sequence_length=16)
LENGTHS = [16, 1, 9, 4, 0]


def small(seed=0, **kwargs):
    return randomize_(roberta_torch.RobertaBackbone(**CONFIG, **kwargs), seed).eval()


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
def test_transformers_positions_match_transformers_on_left_padding(tmp_path, model_type, padding_free):
    transformers = pytest.importorskip("transformers")
    hf_model = random_transformers_model(model_type, seed=3)
    hf_model.save_pretrained(tmp_path)
    ours = roberta_torch.Backbone.from_preset(str(tmp_path), padding_free=padding_free)
    token_ids, mask = padded_batch(61, LENGTHS[:-1], 16, side="left", seed=1)
    with torch.no_grad():
        expected = hf_model(input_ids=token_ids, attention_mask=mask).last_hidden_state
        with_positions = ours({
            "token_ids": token_ids,
            "padding_mask": mask,
            "position_ids": roberta_torch.transformers_position_ids(mask),
        })
        by_column = ours({"token_ids": token_ids, "padding_mask": mask})
    assert isinstance(hf_model, transformers.PreTrainedModel)
    valid = mask.numpy()
    assert max_relative_error(with_positions.numpy(), expected.numpy(), valid) < 1e-5
    # Without them the left-padded rows differ: the reason the input exists.
    assert max_relative_error(by_column.numpy(), expected.numpy(), valid) > 1e-2


def test_transformers_positions_are_the_column_positions_on_right_padding():
    token_ids, mask = padded_batch(61, LENGTHS, 16, side="right")
    positions = roberta_torch.transformers_position_ids(mask)
    columns = torch.arange(16).expand(len(LENGTHS), 16)
    assert torch.equal(positions[mask.bool()], columns[mask.bool()])
    assert positions.dtype == torch.int64 and int(positions.min()) == 0
    model = small()
    with torch.no_grad():
        default = model({"token_ids": token_ids, "padding_mask": mask})
        given = model({"token_ids": token_ids, "padding_mask": mask, "position_ids": positions})
    np.testing.assert_array_equal(given[mask.bool()].numpy(), default[mask.bool()].numpy())


def test_transformers_positions_left_padded_rows():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 0, 0], [0, 0, 0, 0, 0]])
    assert torch.equal(roberta_torch.transformers_position_ids(mask), expected)
    assert torch.equal(roberta_torch.transformers_position_ids(mask.numpy().astype(bool)), expected)


def test_position_ids_move_the_embedding_and_accept_every_form():
    model = small(padding_free=False)
    token_ids = torch.randint(0, 61, (2, 6))
    shifted = torch.arange(3, 9).expand(2, 6)
    with torch.no_grad():
        default = model({"token_ids": token_ids})
        explicit = model({"token_ids": token_ids, "position_ids": torch.arange(6).expand(2, 6)})
        moved = model({"token_ids": token_ids, "position_ids": shifted})
        as_numpy = model(token_ids=token_ids, position_ids=shifted.numpy().astype(np.int32))
    torch.testing.assert_close(explicit, default, rtol=0, atol=0)
    assert (moved - default).abs().max() > 1e-2
    torch.testing.assert_close(as_numpy, moved, rtol=0, atol=0)


@pytest.mark.parametrize(
    "position_ids,error,words",
    [
        (torch.zeros(2, 5, dtype=torch.long), ValueError, "shape"),
        (torch.zeros(6, dtype=torch.long), ValueError, "rank 2"),
        (torch.zeros(2, 6), TypeError, "integers"),
        (torch.full((2, 6), 16), ValueError, r"\[0, max_sequence_length=16\)"),
        (torch.full((2, 6), -1), ValueError, "transformers_position_ids"),
        ("0 1 2", TypeError, "position_ids"),
    ],
)
def test_bad_position_ids_get_typed_errors(position_ids, error, words):
    model = small()
    with pytest.raises(error, match=words):
        model({"token_ids": torch.zeros(2, 6, dtype=torch.long), "position_ids": position_ids})


def test_inputs_dict_and_keywords_together_are_refused():
    model = small()
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="not both"):
        model({"token_ids": ids}, position_ids=torch.zeros(1, 3, dtype=torch.long))


def _left_padding_warnings(caplog):
    return [r for r in caplog.records if "left-padded" in r.getMessage()]


def test_left_padding_warns_once_per_model(caplog):
    token_ids, left = padded_batch(61, [4, 16], 16, side="left")
    _, right = padded_batch(61, [4, 16], 16, side="right")
    model = small()
    with caplog.at_level(logging.WARNING, logger="roberta_torch"), torch.no_grad():
        model({"token_ids": token_ids, "padding_mask": right})
        model({"token_ids": token_ids, "padding_mask": left, "position_ids": roberta_torch.transformers_position_ids(left)})
        assert not _left_padding_warnings(caplog)
        model({"token_ids": token_ids, "padding_mask": left})
        model({"token_ids": token_ids, "padding_mask": left})
    warnings = _left_padding_warnings(caplog)
    assert len(warnings) == 1
    assert "transformers_position_ids" in warnings[0].getMessage()


def test_position_ids_compile_without_graph_break():
    model = small(padding_free=False)
    token_ids, mask = padded_batch(61, [4, 16], 16, side="left")
    inputs = {"token_ids": token_ids, "padding_mask": mask, "position_ids": roberta_torch.transformers_position_ids(mask)}
    with torch.no_grad():
        expected = model(inputs)
        compiled = torch.compile(model, fullgraph=True, backend="eager")(inputs)
    torch.testing.assert_close(compiled, expected, rtol=1e-6, atol=1e-6)
