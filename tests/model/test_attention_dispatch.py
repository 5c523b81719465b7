"""The attention dispatcher: backend choice, overrides, and both backends on the same inputs.

On this CPU-only CI the Triton kernel runs under TRITON_INTERPRET=1 (set by conftest.py), so
the 'triton' backend is exercised for real, on small shapes.
"""

import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, attention

pytest.importorskip("triton")

# head dim 32 (hidden 64, 2 heads): a size the kernel supports.
TINY = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=96, max_sequence_length=24)


def randomized(**kwargs):
    return randomize_(RobertaBackbone(**TINY, **kwargs), scale=0.15, norm_scale=0.05).eval()


@pytest.fixture
def default_backend():
    """Set the process-wide default backend for one test, restored afterwards."""
    previous = attention.default_backend()
    yield attention.set_default_backend
    attention.set_default_backend(previous)


def test_requested_backend_from_argument_and_default(default_backend):
    default_backend("auto")
    assert attention.requested_backend() == "auto"
    default_backend("sdpa")
    assert attention.requested_backend() == "sdpa"
    assert attention.requested_backend("triton") == "triton"  # the argument wins
    with pytest.raises(ValueError, match="set_default_backend"):
        default_backend("flash")
    with pytest.raises(ValueError, match="attention_backend"):
        attention.requested_backend("flash")


def test_auto_never_picks_triton_on_cpu(default_backend):
    default_backend("auto")
    q = torch.randn(1, 4, 2, 32, dtype=torch.bfloat16)
    assert attention.choose_backend(q, 0.0) == "sdpa"
    assert attention.choose_backend(q, 0.0, "triton") == "triton"  # interpreter


@pytest.mark.parametrize(
    "q, words",
    [
        (torch.randn(1, 4, 2, 33, dtype=torch.bfloat16), "head dim 33"),
        (torch.randn(1, 4, 2, 32, dtype=torch.float64), "dtype"),
    ],
)
def test_forcing_triton_where_it_cannot_run_raises(q, words):
    with pytest.raises(ValueError, match=words):
        attention.choose_backend(q, 0.0, "triton")


@pytest.mark.parametrize("padding_free", [False, True])
def test_triton_and_sdpa_backends_agree_on_the_model(padding_free):
    """nanoGPT-style: the same model and inputs through both backends."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (3, 19), generator=g)
    mask = torch.arange(19)[None, :] < torch.tensor([19, 7, 0])[:, None]
    outputs = {}
    for backend in ("sdpa", "triton"):
        model = randomized(dtype="bfloat16", padding_free=padding_free, attention_backend=backend)
        with torch.no_grad():
            outputs[backend] = model({"token_ids": ids, "padding_mask": mask}).float()
    ref32 = randomized(padding_free=padding_free)
    with torch.no_grad():
        reference = ref32({"token_ids": ids, "padding_mask": mask})
    for out in outputs.values():
        assert torch.isfinite(out).all()
    sdpa_error = (outputs["sdpa"][mask] - reference[mask]).abs().max()
    triton_error = (outputs["triton"][mask] - reference[mask]).abs().max()
    assert triton_error <= 2 * sdpa_error + 2e-2, (triton_error, sdpa_error)


def test_default_backend_reaches_the_model(default_backend):
    model = randomized(dtype="bfloat16", padding_free=False)
    ids = torch.randint(0, 50, (2, 5))
    default_backend("sdpa")
    with torch.no_grad(), attention.record_dispatch() as calls:
        model({"token_ids": ids})
    assert calls == [("sdpa", "padded")] * 2
    default_backend("triton")
    with torch.no_grad(), attention.record_dispatch() as calls:
        model({"token_ids": ids})
    assert calls == [("triton", "padded")] * 2


def test_every_padding_mask_feeds_triton_with_sdpa_numbers():
    """Right, left and scattered padding all take the Triton kernel (its bounds come from
    the mask on the device, no prefix test); valid positions match the SDPA backend."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 50, (4, 19), generator=g)
    positions = torch.arange(19)[None, :]
    masks = {
        "right": positions < torch.tensor([19, 7, 0, 1])[:, None],
        "left": positions >= torch.tensor([0, 12, 19, 18])[:, None],
        "scattered": torch.rand(4, 19, generator=g) < 0.5,
    }
    masks["scattered"][2] = False  # a row with no valid token
    triton_model = randomized(dtype="bfloat16", padding_free=False, attention_backend="triton")
    sdpa_model = randomized(dtype="bfloat16", padding_free=False, attention_backend="sdpa")
    for name, mask in masks.items():
        with torch.no_grad(), attention.record_dispatch() as calls:
            out = triton_model({"token_ids": ids, "padding_mask": mask}).float()
        assert calls == [("triton", "masked")] * 2, name
        with torch.no_grad():
            expected = sdpa_model({"token_ids": ids, "padding_mask": mask}).float()
        assert torch.isfinite(out).all(), name
        torch.testing.assert_close(out[mask], expected[mask], rtol=0, atol=5e-2, msg=name)
