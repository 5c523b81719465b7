"""torch.autocast: the dense layers and attention run in the autocast dtype, the fused CPU
path (oneDNN) still runs, results stay within low-precision bounds of float32, training works."""

import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, attention, dense, dispatch

CONFIG = dict(vocabulary_size=61, num_layers=2, num_heads=3, hidden_dim=24, intermediate_dim=40, max_sequence_length=16)
TOKEN_IDS = torch.randint(0, 61, (4, 12), generator=torch.Generator().manual_seed(1))
MASK = torch.tensor([[1] * 12, [1] * 5 + [0] * 7, [1] * 9 + [0] * 3, [1] * 12])
INPUTS = {"token_ids": TOKEN_IDS, "padding_mask": MASK}
# bfloat16 keeps 8 bits of mantissa: a 2-layer encoder lands within a few per cent.
BF16_RELATIVE_BOUND = 3e-2

needs_bf16_fusion = pytest.mark.skipif(
    torch.bfloat16 not in dense.FUSED_DTYPES, reason="this CPU's oneDNN has no bfloat16 kernels"
)


def relative_error(out, expected, mask=MASK):
    valid = mask.bool()
    return float((out.float() - expected)[valid].abs().max() / expected[valid].abs().max())


def randomized(**kwargs):
    return randomize_(RobertaBackbone(**CONFIG, **kwargs), seed=0, scale=0.2).eval()


@pytest.mark.parametrize("padding_free", [False, True])
def test_cpu_autocast_bfloat16_is_close_to_float32(padding_free):
    model = randomized(padding_free=padding_free)
    with torch.no_grad():
        expected = model(INPUTS)
        with torch.autocast("cpu", dtype=torch.bfloat16), dense.record_paths() as paths:
            out = model(INPUTS)
    assert out.dtype == torch.bfloat16  # computed in low precision, not silently float32
    assert {dtype for _, dtype in paths} == {torch.bfloat16}
    assert 1e-4 < relative_error(out, expected) < BF16_RELATIVE_BOUND
    assert model.token_embedding.weight.dtype == torch.float32  # autocast casts no parameter


@needs_bf16_fusion
def test_cpu_autocast_takes_the_fused_path_and_agrees_with_the_plain_one():
    model = randomized(padding_free=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with dense.record_paths() as paths, dispatch.override(dense_epilogue="fused"):
            fused = model(INPUTS)
        previous = dense.set_onednn_enabled(False)
        try:
            with dense.record_paths() as plain_paths:
                plain = model(INPUTS)
        finally:
            dense.set_onednn_enabled(previous)
    assert paths and {path for path, _ in paths} == {"fused"}
    assert {path for path, _ in plain_paths} == {"plain"}
    assert relative_error(fused, plain.float()) < BF16_RELATIVE_BOUND


def test_autocast_matches_the_mixed_policy():
    # Both compute the dense layers in bfloat16 with float32 parameters.
    model = randomized(padding_free=False)
    mixed = randomized(padding_free=False, dtype="mixed_bfloat16")
    with torch.no_grad():
        expected = model(INPUTS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_out = model(INPUTS)
        mixed_out = mixed(INPUTS)
    assert relative_error(autocast_out, mixed_out.float()) < BF16_RELATIVE_BOUND
    assert relative_error(mixed_out, expected) < BF16_RELATIVE_BOUND


def test_attention_gets_low_precision_inputs_under_autocast():
    # The Triton kernel takes only float16/bfloat16: forced here (interpreted on CPU), it
    # runs only if autocast reached the attention inputs, which is what picks it on CUDA.
    model = randomize_(
        RobertaBackbone(vocabulary_size=61, num_layers=1, num_heads=2, hidden_dim=64, intermediate_dim=32,
                        max_sequence_length=16, padding_free=False, attention_backend="triton"),
        seed=0, scale=0.2,
    ).eval()
    inputs = {"token_ids": TOKEN_IDS[:2, :8], "padding_mask": MASK[:2, :8]}
    with torch.no_grad():
        model.attention_backend = "sdpa"
        expected = model(inputs)
        model.attention_backend = "triton"
        with pytest.raises(ValueError, match="dtype"):
            model(inputs)  # float32 attention inputs: refused, not silently SDPA
        with torch.autocast("cpu", dtype=torch.bfloat16), attention.record_dispatch() as calls:
            out = model(inputs)
    assert calls == [("triton", "masked")]  # a padded batch takes the masked kernel
    assert relative_error(out, expected, inputs["padding_mask"]) < BF16_RELATIVE_BOUND


def test_training_under_autocast():
    model = randomized(dropout=0.0).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(INPUTS)
        loss = out.float().pow(2).mean()
    loss.backward()
    assert out.dtype == torch.bfloat16
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_double_model_ignores_autocast():
    model = randomized(dtype="float64", padding_free=False)
    with torch.no_grad():
        expected = model(INPUTS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(INPUTS)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_autocast_compiles_without_graph_break():
    model = randomized(padding_free=False)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(INPUTS)
        eager = model(INPUTS)
    assert out.dtype == torch.bfloat16
    assert relative_error(out, eager.float()) < BF16_RELATIVE_BOUND
