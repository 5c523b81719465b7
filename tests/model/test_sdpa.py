"""Packed (varlen) attention on SDPA: the eager ways of roberta_torch/sdpa.py and the custom op
of roberta_torch/varlen_sdpa.py (what compiled graphs run). Each equals the pure-torch
reference forward and backward, passes a float64 gradcheck, and drops with one mask in the
forward and the backward, eager and compiled."""

import pytest
import torch

from roberta_torch import sdpa, varlen_sdpa
from roberta_torch.kernels.reference import attention_reference_varlen
from roberta_torch.padding import cumulative_lengths

LENGTHS = [5, 0, 3, 7, 7, 1]  # an empty sequence, a run of equal lengths
HEADS, DIM = 2, 8  # DIM >= the longest sequence (see the dropout test)


def packed(lengths=LENGTHS, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k, v = (torch.randn(total, HEADS, DIM, generator=g, dtype=dtype) for _ in range(3))
    return q, k, v, cumulative_lengths(torch.tensor(lengths))


def per_sequence(q, k, v, cu, dropout_p=0.0):
    return sdpa.per_sequence_attention(q, k, v, (cu[1:] - cu[:-1]).tolist(), dropout_p)


def repadded(q, k, v, cu, dropout_p=0.0, longest=max(LENGTHS) + 2):
    # `longest` above the true maximum (any bound is correct).
    return sdpa.repadded_attention(q, k, v, sdpa.repadding(cu, q.shape[0], longest), dropout_p)


def op(way):
    return lambda q, k, v, cu, dropout_p=0.0: varlen_sdpa.varlen_attention(q, k, v, cu, dropout_p, way)


WAYS = {"per_sequence": per_sequence, "repadded": repadded, "op_per_sequence": op("per_sequence"), "op_repadded": op("repadded")}


@pytest.mark.parametrize("way", WAYS)
def test_packed_ways_match_the_reference_forward_and_backward(way):
    q, k, v, cu = packed()
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    reference_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = WAYS[way](*inputs, cu)
    expected = attention_reference_varlen(*reference_inputs, cu)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    for mine, theirs in zip(inputs, reference_inputs):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("way", WAYS)
def test_float64_gradcheck(way):
    q, k, v, cu = packed([3, 0, 4, 2], dtype=torch.float64)
    inputs = [t[:, :1, :4].contiguous().requires_grad_() for t in (q, k, v)]  # small: 3 x 36 inputs
    assert torch.autograd.gradcheck(lambda q, k, v: WAYS[way](q, k, v, cu), inputs, fast_mode=True)


def test_op_with_dropout_float64_gradcheck_and_opcheck():
    """With a fixed seed the op is a deterministic function: its hand-written backward
    (which redraws the mask) is checked numerically, and by torch.library.opcheck."""
    q, k, v, cu = packed([3, 0, 4, 2], dtype=torch.float64)
    q, k, v = (t[:, :1, :4].contiguous().requires_grad_() for t in (q, k, v))
    seed = torch.tensor(1234)
    fn = lambda q, k, v: torch.ops.roberta_torch.varlen_sdpa(q, k, v, cu, 0.3, seed, "per_sequence")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), fast_mode=True)
    torch.library.opcheck(torch.ops.roberta_torch.varlen_sdpa, (q, k, v, cu, 0.3, seed, "per_sequence"))
    torch.library.opcheck(torch.ops.roberta_torch.varlen_sdpa, (q, k, v, cu, 0.0, None, "repadded"))
    with pytest.raises(ValueError, match="way"):
        varlen_sdpa.varlen_attention(q, k, v, cu, 0.3, "repadded")


def test_no_tokens_at_all():
    q, k, v, cu = packed([0, 0])
    assert per_sequence(q, k, v, cu).shape == (0, HEADS, DIM)
    assert repadded(q, k, v, cu, longest=4).shape == (0, HEADS, DIM)
    assert op("repadded")(q, k, v, cu).shape == (0, HEADS, DIM)


def dropped_probabilities_and_value_grad(fn, dropout_p, seed):
    """Run `fn` with one-hot values: value of the token at position j in its sequence is the
    unit vector e_j, so the output rows are the dropped probabilities A themselves. Returns
    (A rows per token, dv, the upstream gradient)."""
    q, k, _, cu = packed()
    position = torch.cat([torch.arange(n) for n in LENGTHS])
    v = torch.nn.functional.one_hot(position, DIM).float()[:, None, :].expand(-1, HEADS, -1).contiguous()
    v.requires_grad_()
    torch.manual_seed(seed)
    out = fn(q, k, v, cu, dropout_p)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(grad)
    return out.detach(), v.grad, grad


def expected_value_grad(rows, grad):
    """dv_j = sum_i A_ij g_i within each sequence, from the forward's A."""
    expected = torch.zeros_like(grad)
    start = 0
    for n in LENGTHS:
        a = rows[start : start + n, :, :n]  # (i, N, j)
        expected[start : start + n] = torch.einsum("inj,ind->jnd", a, grad[start : start + n])
        start += n
    return expected


def sequence_rows(rows):
    """[(N, n, n) block of each non-empty sequence], from (total, N, DIM) output rows."""
    blocks, start = [], 0
    for n in LENGTHS:
        if n:
            blocks.append(rows[start : start + n, :, :n].transpose(0, 1))
        start += n
    return blocks


@pytest.mark.parametrize(
    "way, compiled",
    [
        ("per_sequence", None),
        ("repadded", None),
        ("op_per_sequence", None),
        ("op_per_sequence", "aot_eager"),
        ("op_per_sequence", "inductor"),  # what compiled training runs: the op's seeded dropout
    ],
)
def test_dropout_backward_uses_the_forward_mask(way, compiled):
    fn = WAYS[way]
    if compiled:
        torch._dynamo.reset()
        fn = torch.compile(fn, fullgraph=True, backend=compiled)
    try:
        rows, dv, grad = dropped_probabilities_and_value_grad(fn, dropout_p=0.4, seed=0)
    finally:
        torch._dynamo.reset()
    blocks = sequence_rows(rows)
    # Dropout happened (softmax is never exactly zero), the kept ones are scaled by 1/(1-p):
    # each row sums to 1/(1-p) times its kept probability mass, not to one.
    assert sum(int((block == 0).sum()) for block in blocks) > 0
    assert not torch.allclose(torch.cat([b.sum(-1).flatten() for b in blocks]), torch.ones(1))
    # The backward used the same mask: dv = A^T g with the forward's A.
    torch.testing.assert_close(dv, expected_value_grad(rows, grad), rtol=1e-5, atol=1e-6)
