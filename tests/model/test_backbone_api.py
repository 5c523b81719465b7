"""Constructor, config, dtype policies and every bad-input path of the backbone."""

import numpy as np
import pytest
import torch

import roberta_torch
from roberta_torch import RobertaBackbone, XLMRobertaBackbone

SMALL = dict(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=10)


def small(**overrides):
    return RobertaBackbone(**{**SMALL, **overrides})


def batch(seq=6, batch_size=2, vocab=30):
    ids = torch.randint(0, vocab, (batch_size, seq))
    return {"token_ids": ids, "padding_mask": torch.ones_like(ids)}


def test_config_round_trip_and_repr():
    model = small(dropout=0.2, dtype="mixed_bfloat16")
    config = model.get_config()
    assert config == {**SMALL, "dropout": 0.2, "dtype": "mixed_bfloat16"}
    rebuilt = RobertaBackbone.from_config(config)
    assert rebuilt.get_config() == config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    text = repr(model)
    assert text.startswith("RobertaBackbone(") and "hidden_dim=8" in text and "mixed_bfloat16" in text
    assert isinstance(model.token_embedding, torch.nn.Embedding)
    assert model.token_embedding.weight.shape == (30, 8)


def test_xlm_roberta_is_its_own_subclass():
    model = XLMRobertaBackbone(**SMALL)
    assert isinstance(model, RobertaBackbone) and type(model) is XLMRobertaBackbone
    assert XLMRobertaBackbone.keras_class_name == "XLMRobertaBackbone"


def test_keras_config_keys_are_accepted():
    model = RobertaBackbone.from_config({**SMALL, "name": "roberta_backbone", "trainable": True,
                                         "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "bfloat16"}, "registered_name": None}})
    assert model.dtype_policy.name == "bfloat16"
    frozen = small(trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_initializers_follow_keras():
    model = RobertaBackbone(vocabulary_size=2000, num_layers=1, num_heads=2, hidden_dim=64, intermediate_dim=128)
    emb = model.token_embedding.weight
    assert abs(emb.std().item() - 0.0176) < 0.002  # trunc normal(0.02) at 2 sigma has std 0.88*0.02
    assert emb.abs().max().item() <= 0.04 + 1e-6
    layer = model.layers[0]
    assert torch.count_nonzero(layer.attention.query.bias) == 0
    assert torch.all(layer.attention_layer_norm.weight == 1)


@pytest.mark.parametrize(
    "dtype, variable, compute",
    [
        (None, torch.float32, torch.float32),
        ("float32", torch.float32, torch.float32),
        ("bfloat16", torch.bfloat16, torch.bfloat16),
        ("float16", torch.float16, torch.float16),
        ("mixed_bfloat16", torch.float32, torch.bfloat16),
        ("mixed_float16", torch.float32, torch.float16),
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        ({"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}, torch.float32, torch.float16),
    ],
)
def test_dtype_policies(dtype, variable, compute):
    model = small(dtype=dtype).eval()
    assert all(p.dtype == variable for p in model.parameters())
    with torch.no_grad():
        out = model(batch())
    assert out.dtype == compute
    assert torch.isfinite(out).all()


def test_output_is_on_the_model_device_and_shape():
    out = small().eval()(batch(seq=7, batch_size=3))
    assert out.shape == (3, 7, 8)


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "overrides, error, words",
    [
        (dict(hidden_dim=9, num_heads=2), ValueError, "divisible"),
        (dict(num_layers=0), ValueError, "num_layers"),
        (dict(vocabulary_size=-3), ValueError, "vocabulary_size"),
        (dict(intermediate_dim=2.5), TypeError, "intermediate_dim"),
        (dict(max_sequence_length=True), TypeError, "max_sequence_length"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(dropout=-0.1), ValueError, "dropout"),
        (dict(dropout="0.1"), TypeError, "dropout"),
        (dict(dtype="float128"), ValueError, "dtype"),
        (dict(dtype=torch.complex64), ValueError, "dtype"),
        (dict(dtype="mixed_float8"), ValueError, "dtype"),
        (dict(dtype=torch.int32), ValueError, "dtype"),
        (dict(dtype=3), TypeError, "dtype"),
        (dict(colour="red"), TypeError, "colour"),
        (dict(padding_free="sometimes"), ValueError, "padding_free"),
        (dict(attention_backend="cuda"), ValueError, "backend"),
    ],
)
def test_constructor_errors(overrides, error, words):
    with pytest.raises(error, match=words):
        small(**overrides)


def _call(model, **inputs):
    return model(inputs)


@pytest.mark.parametrize(
    "inputs, error, words",
    [
        (dict(token_ids=torch.tensor([[1, 2, 30]])), ValueError, r"vocabulary_size=30"),
        (dict(token_ids=torch.tensor([[1, -1, 3]])), ValueError, r"\[0, vocabulary_size"),
        (dict(token_ids=torch.tensor([[1.0, 2.0]])), TypeError, "integers"),
        (dict(token_ids=np.array([[1.0, 2.0]])), TypeError, "integers"),
        (dict(token_ids=torch.tensor([1, 2, 3])), ValueError, "rank 2"),
        (dict(token_ids=torch.ones(1, 2, 3, dtype=torch.long)), ValueError, "rank 2"),
        (dict(token_ids=torch.ones(2, 11, dtype=torch.long)), ValueError, "max_sequence_length=10"),
        (dict(token_ids=torch.ones(2, 0, dtype=torch.long)), ValueError, "at least 1"),
        (dict(token_ids=torch.ones(2, 4, dtype=torch.long), padding_mask=torch.ones(2, 5)), ValueError, "shape"),
        (dict(token_ids=torch.ones(2, 4, dtype=torch.long), padding_mask=torch.ones(4)), ValueError, "rank 2"),
        (dict(token_ids=torch.ones(2, 4, dtype=torch.long), padding_mask=torch.full((2, 4), 2)), ValueError, "0 or 1"),
        (dict(token_ids=torch.ones(2, 4, dtype=torch.long), padding_mask=torch.full((2, 4), 0.5)), ValueError, "0 or 1"),
        (dict(token_ids="hello"), TypeError, "token_ids"),
        (dict(padding_mask=torch.ones(2, 4)), ValueError, "token_ids"),
        # attention_mask is transformers' alias of padding_mask (transformers_calls.py); typos are not.
        (dict(token_ids=torch.ones(2, 4, dtype=torch.long), attention_masks=torch.ones(2, 4)), ValueError, "unknown keys"),
        (dict(token_ids=torch.ones(2, 4, dtype=torch.long), input_ids=torch.ones(2, 4, dtype=torch.long)), ValueError, "Both"),
    ],
)
def test_call_errors(inputs, error, words):
    model = small()
    with pytest.raises(error, match=words):
        _call(model, **inputs)


def test_call_requires_a_dict():
    with pytest.raises(TypeError, match="dict"):
        small()(torch.ones(2, 4, dtype=torch.long))


def test_missing_mask_means_all_valid():
    model = small().eval()
    ids = torch.randint(0, 30, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model({"token_ids": ids}), model({"token_ids": ids, "padding_mask": torch.ones_like(ids)}))
