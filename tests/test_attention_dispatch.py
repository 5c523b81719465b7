"""The attention dispatcher: backend choice, overrides, and both backends on the same inputs.

On this CPU-only CI the Triton kernel runs under TRITON_INTERPRET=1 (set by conftest.py), so
the 'triton' backend is exercised for real, on small shapes.
"""

import pytest
import torch

from roberta_torch import RobertaBackbone, attention

pytest.importorskip("triton")

# head dim 32 (hidden 64, 2 heads): a size the kernel supports.
TINY = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=96, max_sequence_length=24)


def randomized(**kwargs):
    model = RobertaBackbone(**TINY, **kwargs)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((torch.randn(p.shape, generator=g) * (0.05 if "norm" in name else 0.15) + (1.0 if "norm.weight" in name else 0.0)).to(p.dtype))
    return model.eval()


def test_requested_backend_from_argument_and_environment(monkeypatch):
    monkeypatch.delenv(attention.BACKEND_ENV_VAR, raising=False)
    assert attention.requested_backend() == "auto"
    monkeypatch.setenv(attention.BACKEND_ENV_VAR, "sdpa")
    assert attention.requested_backend() == "sdpa"
    assert attention.requested_backend("triton") == "triton"  # the argument wins
    monkeypatch.setenv(attention.BACKEND_ENV_VAR, "flash")
    with pytest.raises(ValueError, match="ROBERTA_TORCH_ATTENTION"):
        attention.requested_backend()


def test_auto_never_picks_triton_on_cpu(monkeypatch):
    monkeypatch.delenv(attention.BACKEND_ENV_VAR, raising=False)
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


def test_environment_override_reaches_the_model(monkeypatch):
    calls = []
    import roberta_torch.attention as module

    original = module._sdpa_padded
    monkeypatch.setattr(module, "_sdpa_padded", lambda *a: calls.append("sdpa") or original(*a))
    model = randomized(dtype="bfloat16", padding_free=False)
    ids = torch.randint(0, 50, (2, 5))
    monkeypatch.setenv(attention.BACKEND_ENV_VAR, "sdpa")
    with torch.no_grad():
        model({"token_ids": ids})
    assert calls == ["sdpa", "sdpa"]
    calls.clear()
    monkeypatch.setenv(attention.BACKEND_ENV_VAR, "triton")
    with torch.no_grad():
        model({"token_ids": ids})
    assert calls == []


def test_prefix_lengths_feed_triton_and_other_masks_fall_back_to_sdpa(monkeypatch):
    import roberta_torch.attention as module

    seen = []
    original = module._triton_padded
    monkeypatch.setattr(module, "_triton_padded", lambda q, k, v, lengths, p: seen.append(lengths) or original(q, k, v, lengths, p))
    model = randomized(dtype="bfloat16", padding_free=False, attention_backend="triton")
    ids = torch.randint(0, 50, (3, 19))
    mask = torch.arange(19)[None, :] < torch.tensor([19, 7, 0])[:, None]
    with torch.no_grad():
        model({"token_ids": ids, "padding_mask": mask})
    assert [lengths.tolist() for lengths in seen] == [[19, 7, 0]] * 2
    assert seen[0] is seen[1]  # the prefix test ran once per forward, not per layer
    seen.clear()
    mask[0, 0] = False  # no longer a prefix: SDPA's general mask takes it
    with torch.no_grad():
        model({"token_ids": ids, "padding_mask": mask})
    assert seen == []
