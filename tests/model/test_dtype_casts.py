"""dtype follows the module: every torch cast, then a forward equal to a model built with
that dtype (same weights); mixed policies under casts; config round trips."""

import pytest
import torch

import roberta_torch
from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone

CONFIG = dict(vocabulary_size=61, num_layers=2, num_heads=3, hidden_dim=12, intermediate_dim=20, max_sequence_length=16)
TOKEN_IDS = torch.randint(0, 61, (3, 9), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] * 7 + [0] * 2])
INPUTS = {"token_ids": TOKEN_IDS, "padding_mask": MASK}

CASTS = {
    ".to(bfloat16)": (lambda m: m.to(torch.bfloat16), "bfloat16"),
    ".to(cpu, float16)": (lambda m: m.to("cpu", torch.float16), "float16"),
    ".to(dtype=float64)": (lambda m: m.to(dtype=torch.float64), "float64"),
    ".half()": (lambda m: m.half(), "float16"),
    ".bfloat16()": (lambda m: m.bfloat16(), "bfloat16"),
    ".double()": (lambda m: m.double(), "float64"),
    ".float()": (lambda m: m.float(), "float32"),
}


def randomized(dtype=None, seed=0, **kwargs):
    return randomize_(RobertaBackbone(**CONFIG, dtype=dtype, **kwargs), seed).eval()


def built_like(model, dtype):
    """A model built with `dtype` holding `model`'s weights."""
    reference = RobertaBackbone(**CONFIG, dtype=dtype).eval()
    reference.load_state_dict(model.state_dict())
    return reference


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("start", ["float32", "bfloat16"])
@pytest.mark.parametrize("cast", list(CASTS))
def test_cast_then_forward_equals_model_built_with_that_dtype(cast, start, padding_free):
    apply_cast, name = CASTS[cast]
    model = randomized(start, padding_free=padding_free)
    assert apply_cast(model) is model
    assert model.get_config()["dtype"] == name
    assert model.dtype_policy.compute_dtype == model.token_embedding.weight.dtype
    assert {p.dtype for p in model.parameters()} == {model.dtype_policy.variable_dtype}
    reference = built_like(model, name)
    reference.padding_free = padding_free
    with torch.no_grad():
        out, expected = model(INPUTS), reference(INPUTS)
    assert out.dtype == expected.dtype == model.dtype_policy.compute_dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert torch.isfinite(out).all()


def test_preset_cast_to_bfloat16_runs():
    # The reported failure: "RuntimeError: mixed dtype (CPU)".
    model = roberta_torch.Backbone.from_preset("roberta_tiny_random")
    with torch.no_grad():
        expected = model(token_ids=TOKEN_IDS % 50, padding_mask=MASK)
        out = model.to(torch.bfloat16)(token_ids=TOKEN_IDS % 50, padding_mask=MASK)
    assert out.dtype == torch.bfloat16
    valid = MASK.bool()
    error = (out.float() - expected)[valid].abs().max() / expected[valid].abs().max()
    assert error < 0.05


@pytest.mark.parametrize("policy", ["float32", "bfloat16", "float16", "float64", "mixed_bfloat16", "mixed_float16"])
def test_config_round_trip_after_casts(policy):
    model = randomized(policy)
    rebuilt = RobertaBackbone.from_config(model.get_config())
    assert rebuilt.dtype_policy == model.dtype_policy
    model.double()
    assert RobertaBackbone.from_config(model.get_config()).dtype_policy.name == "float64"


def test_mixed_policy_keeps_float32_parameters_through_float_and_device_moves():
    model = randomized("mixed_bfloat16")
    model.float().to("cpu").to(torch.device("cpu"), torch.float32)
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.no_grad():
        assert model(INPUTS).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "cast,name", [(lambda m: m.half(), "float16"), (lambda m: m.bfloat16(), "bfloat16"), (lambda m: m.double(), "float64")]
)
def test_cast_of_mixed_model_follows_the_cast(cast, name):
    # A torch cast means "these parameters, this precision": the mixed policy gives way to
    # the plain policy of the new dtype (documented in the README), and stays there.
    model = randomized("mixed_float16")
    cast(model)
    assert model.get_config()["dtype"] == name
    reference = built_like(model, name)
    with torch.no_grad():
        torch.testing.assert_close(model(INPUTS), reference(INPUTS), rtol=0, atol=0)
    model.float()
    assert model.get_config()["dtype"] == "float32"


def test_setting_the_policy_casts_the_parameters():
    model = randomized("bfloat16")
    model.dtype_policy = "mixed_bfloat16"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.dtype_policy.name == "mixed_bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        model.dtype_policy = "float8"


def test_state_dict_assigned_in_another_dtype_sets_the_policy():
    model = randomized("float32")
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    assert model.dtype_policy.name == "bfloat16"
    with torch.no_grad():
        assert model(INPUTS).dtype == torch.bfloat16


def test_cast_model_compiles_without_graph_break():
    model = randomized("float32", padding_free=False)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        for dtype, tolerance in ((torch.float32, 1e-6), (torch.bfloat16, 3e-2)):
            model.to(dtype)  # a dtype guard fails: recompiles, no graph break
            out = compiled(INPUTS)
            assert out.dtype == dtype
            # Eager fuses the epilogues in oneDNN, the compiled graph does not: rounding differs.
            torch.testing.assert_close(out, model(INPUTS), rtol=tolerance, atol=tolerance)


def test_cast_inside_a_wrapper_module():
    # Casting a task model that holds the backbone reaches the backbone's hook too.
    head = torch.nn.Linear(12, 2)
    wrapper = torch.nn.ModuleDict({"backbone": randomized("float32"), "head": head}).bfloat16()
    assert wrapper["backbone"].get_config()["dtype"] == "bfloat16"
    with torch.no_grad():
        assert head(wrapper["backbone"](INPUTS)).dtype == torch.bfloat16
