"""Triton FlashAttention kernels against the float32 reference.

On a CPU machine the kernels run under the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), so shapes stay small. Low-precision results are judged like
flash-attention's tests: max|ours - ref32| <= 2 * max|torch_lowp - ref32| + atol, where
ref32 is the reference on float32 copies of the inputs and torch_lowp the same reference
computed in the inputs' dtype.
"""

import re
import subprocess
import sys

import pytest
import torch

from roberta_torch.kernels import flash_attention, flash_attention_varlen, triton_is_usable
from roberta_torch.kernels import flash_attn, ops
from roberta_torch.kernels.reference import attention_reference, attention_reference_varlen, dropout_keep_mask

from helpers.attention_checks import check_forward_backward, random_qkv

@pytest.fixture(scope="module")
def device():
    name = "cuda" if torch.cuda.is_available() else "cpu"
    if not triton_is_usable(name):
        pytest.skip(f"Triton kernels cannot run on {name} (no triton, or TRITON_INTERPRET unset on CPU)")
    return torch.device(name)


def _dtypes_for(device):
    return (torch.float16, torch.bfloat16) + ((torch.float32,) if device.type == "cpu" else ())


# (batch, seqlen, key lengths); seqlens are not multiples of the 16-row interpreter tile
# and the lengths include 0, 1, a partial tile and the full length.
PADDED_CASES = {
    "lengths_0_1_full": (3, 37, [37, 1, 0]),
    "lengths_partial": (2, 45, [23, 40]),
    "no_lengths": (2, 21, None),
}


@pytest.mark.parametrize("head_dim", [32, 64, 80])
@pytest.mark.parametrize("case", sorted(PADDED_CASES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_padded_forward_backward_matches_reference(device, dtype, case, head_dim):
    if dtype not in _dtypes_for(device):
        pytest.skip(f"{dtype} is interpreter-only")
    batch, seqlen, lengths = PADDED_CASES[case]
    heads = 2
    generator = torch.Generator().manual_seed(sorted(PADDED_CASES).index(case) * 1000 + head_dim)
    inputs = random_qkv((batch, seqlen, heads, head_dim), dtype, device, generator)
    key_lengths = None if lengths is None else torch.tensor(lengths, device=device)
    check_forward_backward(
        lambda q, k, v: flash_attention(q, k, v, key_lengths),
        lambda q, k, v, upcast: attention_reference(q, k, v, key_lengths, upcast=upcast),
        inputs, dtype, (batch, seqlen, heads, head_dim), generator)


@pytest.mark.parametrize("head_dim", [96, 128])
def test_large_head_dims_match_reference(device, head_dim):
    generator = torch.Generator().manual_seed(head_dim)
    inputs = random_qkv((2, 19, 1, head_dim), torch.bfloat16, device, generator)
    key_lengths = torch.tensor([19, 6], device=device)
    check_forward_backward(
        lambda q, k, v: flash_attention(q, k, v, key_lengths, softmax_scale=0.3),
        lambda q, k, v, upcast: attention_reference(q, k, v, key_lengths, softmax_scale=0.3, upcast=upcast),
        inputs, torch.bfloat16, (2, 19, 1, head_dim), generator)


# Packed lengths: empty, single token, one tile + tail, exactly one tile, and more.
VARLEN_LENGTHS = [5, 0, 1, 33, 16, 24]


@pytest.mark.parametrize("head_dim", [32, 80])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_varlen_forward_backward_matches_per_sequence_reference(device, dtype, head_dim):
    if dtype not in _dtypes_for(device):
        pytest.skip(f"{dtype} is interpreter-only")
    cu_seqlens = torch.tensor([0] + VARLEN_LENGTHS, device=device).cumsum(0).to(torch.int32)
    total_tokens = int(cu_seqlens[-1])
    generator = torch.Generator().manual_seed(head_dim)
    inputs = random_qkv((total_tokens, 2, head_dim), dtype, device, generator)
    # max_seqlen larger than the longest sequence only adds empty programs.
    check_forward_backward(
        lambda q, k, v: flash_attention_varlen(q, k, v, cu_seqlens, max(VARLEN_LENGTHS) + 7),
        lambda q, k, v, upcast: attention_reference_varlen(q, k, v, cu_seqlens, upcast=upcast),
        inputs, dtype, (total_tokens, 2, head_dim), generator)


def test_varlen_equals_padded_bitwise(device):
    """Same sequences, packed or padded: each row does the same tile arithmetic."""
    batch, seqlen, heads, head_dim = 3, 29, 2, 64
    lengths = [29, 0, 17]
    generator = torch.Generator().manual_seed(0)
    q, k, v = (x.detach() for x in random_qkv((batch, seqlen, heads, head_dim), torch.float16, device, generator))
    padded = flash_attention(q, k, v, torch.tensor(lengths, device=device))
    valid = torch.arange(seqlen, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    cu_seqlens = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
    packed = flash_attention_varlen(q[valid], k[valid], v[valid], cu_seqlens, seqlen)
    assert torch.equal(packed, padded[valid])


def test_strided_views_of_a_fused_qkv_projection(device):
    """q, k, v as views of one (batch, seq, 3, heads, head_dim) projection (the model's
    layout) and a non-contiguous upstream gradient give the same results as copies."""
    batch, seqlen, heads, head_dim = 2, 26, 2, 32
    generator = torch.Generator().manual_seed(8)
    qkv = torch.randn((batch, seqlen, 3, heads, head_dim), generator=generator).to(device, torch.float16)
    key_lengths = torch.tensor([26, 11], device=device)
    grad_out = torch.randn((batch, heads, seqlen, head_dim), generator=generator).to(device, torch.float16)
    grad_out = grad_out.transpose(1, 2)  # (batch, seq, heads, head_dim), non-contiguous
    strided = qkv.clone().requires_grad_()
    out_strided = flash_attention(*strided.unbind(2), key_lengths)
    out_strided.backward(grad_out)
    copies = [x.contiguous().requires_grad_() for x in qkv.unbind(2)]
    out_copies = flash_attention(*copies, key_lengths)
    out_copies.backward(grad_out.contiguous())
    assert torch.equal(out_strided, out_copies)
    assert torch.equal(strided.grad, torch.stack([x.grad for x in copies], dim=2))


def test_padding_is_never_read_and_gets_zero_output_and_gradients(device):
    batch, seqlen, heads, head_dim = 2, 20, 2, 32
    lengths = torch.tensor([20, 3], device=device)
    generator = torch.Generator().manual_seed(1)
    q, k, v = (x.detach() for x in random_qkv((batch, seqlen, heads, head_dim), torch.float16, device, generator))
    for x in (q, k, v):
        x[1, 3:] = float("nan")  # padding content must not leak into anything
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out = flash_attention(q, k, v, lengths)
    grad_out = torch.ones_like(out)  # non-zero upstream gradient on padded rows, too
    out.backward(grad_out)
    assert torch.isfinite(out).all()
    assert (out[1, 3:] == 0).all()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
        assert (x.grad[1, 3:] == 0).all()


def test_all_empty_batch_gives_zeros(device):
    generator = torch.Generator().manual_seed(2)
    q, k, v = random_qkv((2, 18, 1, 32), torch.bfloat16, device, generator)
    out = flash_attention(q, k, v, torch.zeros(2, dtype=torch.int64, device=device))
    out.sum().backward()
    assert (out == 0).all()
    assert all((x.grad == 0).all() for x in (q, k, v))


def test_dropout_matches_reference_with_rebuilt_mask(device):
    """The in-kernel Philox mask is rebuilt bit-exactly by `dropout_keep_mask`, so forward
    and backward match the reference with that mask to float32 rounding."""
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    batch, seqlen, heads, head_dim, dropout_p = 2, 37, 2, 32, 0.3
    generator = torch.Generator().manual_seed(3)
    inputs = random_qkv((batch, seqlen, heads, head_dim), dtype, device, generator)
    key_lengths = torch.tensor([37, 20], device=device)
    torch.manual_seed(1234)
    seed = flash_attn.draw_dropout_seed(device)
    keep = dropout_keep_mask(seed, batch, heads, seqlen, dropout_p).to(device)
    assert abs(keep.float().mean().item() - (1 - dropout_p)) < 0.02

    def run_ours(q, k, v):
        torch.manual_seed(1234)  # the kernel draws the same seed
        return flash_attention(q, k, v, key_lengths, dropout_p=dropout_p)

    check_forward_backward(
        run_ours,
        lambda q, k, v, upcast: attention_reference(q, k, v, key_lengths, dropout_p=dropout_p,
                                                    dropout_keep=keep, upcast=upcast),
        inputs, dtype, (batch, seqlen, heads, head_dim), generator)


def test_varlen_dropout_matches_reference_with_rebuilt_mask(device):
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    lengths, max_seqlen, heads, head_dim, dropout_p = [5, 0, 27], 27, 2, 64, 0.5
    cu_seqlens = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
    generator = torch.Generator().manual_seed(4)
    inputs = random_qkv((sum(lengths), heads, head_dim), dtype, device, generator)
    torch.manual_seed(99)
    keep = dropout_keep_mask(flash_attn.draw_dropout_seed(device), len(lengths), heads, max_seqlen,
                             dropout_p).to(device)

    def run_ours(q, k, v):
        torch.manual_seed(99)
        return flash_attention_varlen(q, k, v, cu_seqlens, max_seqlen, dropout_p=dropout_p)

    check_forward_backward(
        run_ours,
        lambda q, k, v, upcast: attention_reference_varlen(q, k, v, cu_seqlens, dropout_p=dropout_p,
                                                           dropout_keep=keep, upcast=upcast),
        inputs, dtype, (sum(lengths), heads, head_dim), generator)


def test_dropout_is_reproducible_from_the_torch_seed(device):
    generator = torch.Generator().manual_seed(5)
    q, k, v = (x.detach() for x in random_qkv((1, 24, 1, 32), torch.float16, device, generator))
    outputs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        outputs.append(flash_attention(q, k, v, dropout_p=0.2))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


def test_dropout_keep_mask_statistics():
    """Pure torch: keep rate, and independence across heads and batch entries."""
    keep = dropout_keep_mask(torch.tensor([123456789012345]), 2, 2, 128, 0.25)
    assert keep.shape == (2, 2, 128, 128)
    assert abs(keep.float().mean().item() - 0.75) < 0.01
    assert not torch.equal(keep[0, 0], keep[0, 1])
    assert not torch.equal(keep[0, 0], keep[1, 0])


def test_fullgraph_compile_traces_custom_ops(device):
    """torch.compile(fullgraph=True) sees the custom ops as opaque nodes: no graph break,
    forward and backward equal to eager."""
    generator = torch.Generator().manual_seed(6)
    q, k, v = random_qkv((2, 20, 2, 32), torch.float16, device, generator)
    key_lengths = torch.tensor([20, 9], device=device)
    cu_seqlens = torch.tensor([0, 20, 29], dtype=torch.int32, device=device)

    def loss(q, k, v):
        padded = flash_attention(q, k, v, key_lengths).float().sum()
        packed = flash_attention_varlen(q.flatten(0, 1)[:29], k.flatten(0, 1)[:29], v.flatten(0, 1)[:29],
                                        cu_seqlens, 20)
        return padded + packed.float().square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    compiled_loss = compiled(q, k, v)
    compiled_grads = torch.autograd.grad(compiled_loss, (q, k, v))
    eager_loss = loss(q, k, v)
    eager_grads = torch.autograd.grad(eager_loss, (q, k, v))
    assert torch.equal(compiled_loss, eager_loss)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        assert torch.equal(compiled_grad, eager_grad)


def test_custom_ops_pass_opcheck(device):
    generator = torch.Generator().manual_seed(7)
    q, k, v = random_qkv((40, 2, 32), torch.float16, device, generator)
    key_lengths = torch.tensor([20, 9], dtype=torch.int32, device=device)
    cu_seqlens = torch.tensor([0, 20, 29, 40], dtype=torch.int32, device=device)
    torch.library.opcheck(ops.flash_attn_forward_op, (q, k, v, key_lengths, None, False, 20, 0.2, 0.0, None))
    out, lse = ops.flash_attn_forward_op(q, k, v, cu_seqlens, None, True, 20, 0.2, 0.0, None)
    dout = torch.randn(out.shape, generator=generator).to(device=device, dtype=out.dtype)
    torch.library.opcheck(ops.flash_attn_backward_op,
                          (dout, q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), cu_seqlens, None, True,
                           20, 0.2, 0.0, None))


def _small(device, shape=(1, 4, 1, 32), dtype=torch.float16):
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(3)]


@pytest.mark.parametrize("make_call, error, message", [
    (lambda d: flash_attention(*_small(d, (4, 1, 32))), ValueError, "4-D"),
    (lambda d: flash_attention(_small(d)[0], _small(d)[1], _small(d, (1, 5, 1, 32))[2]), ValueError, "same shape"),
    (lambda d: flash_attention(*_small(d)[:2], _small(d, dtype=torch.bfloat16)[2]), TypeError, "one dtype"),
    (lambda d: flash_attention(*_small(d, dtype=torch.float64)), TypeError, "not supported"),
    (lambda d: flash_attention(*_small(d, (1, 4, 1, 48))), ValueError, "head_dim 48"),
    (lambda d: flash_attention(*_small(d), key_lengths=[4]), TypeError, "key_lengths"),
    (lambda d: flash_attention(*_small(d), key_lengths=torch.tensor([4.0], device=d)), TypeError, "integer"),
    (lambda d: flash_attention(*_small(d), key_lengths=torch.tensor([4, 4], device=d)), ValueError, "shape"),
    (lambda d: flash_attention(*_small(d), key_lengths=torch.tensor([5], device=d)), ValueError, "[0, 4]"),
    (lambda d: flash_attention(*_small(d), key_lengths=torch.tensor([-1], device=d)), ValueError, "[0, 4]"),
    (lambda d: flash_attention(*_small(d), dropout_p=1.0), ValueError, "dropout_p"),
    (lambda d: flash_attention(*_small(d), softmax_scale=float("nan")), ValueError, "softmax_scale"),
    (lambda d: flash_attention(*_small(d), softmax_scale=-0.5), ValueError, "softmax_scale"),
    (lambda d: flash_attention_varlen(*_small(d, (4, 1, 32)), torch.tensor([0, 4], device=d), 4),
     TypeError, "int32"),
    (lambda d: flash_attention_varlen(*_small(d, (4, 1, 32)), torch.tensor([0, 3], dtype=torch.int32, device=d), 4),
     ValueError, "end at total_tokens"),
    (lambda d: flash_attention_varlen(*_small(d, (4, 1, 32)), torch.tensor([0, 3, 2, 4], dtype=torch.int32,
                                                                            device=d), 4),
     ValueError, "never decrease"),
    (lambda d: flash_attention_varlen(*_small(d, (4, 1, 32)), torch.tensor([0, 4], dtype=torch.int32, device=d), 3),
     ValueError, "max_seqlen"),
    (lambda d: flash_attention_varlen(*_small(d, (4, 1, 32)), torch.tensor([0, 4], dtype=torch.int32, device=d),
                                      4.0), TypeError, "max_seqlen"),
    (lambda d: flash_attention_varlen(*_small(d, (4, 1, 32)), torch.tensor([4], dtype=torch.int32, device=d), 4),
     ValueError, "cu_seqlens"),
])
def test_invalid_arguments_raise_typed_errors(make_call, error, message):
    # Argument checks come before any backend check, so they run with or without Triton.
    with pytest.raises(error, match=re.escape(message)):
        make_call(torch.device("cpu"))


def test_float32_is_rejected_outside_the_interpreter():
    q = torch.zeros(1, 4, 1, 32, device="meta")
    with pytest.raises(TypeError, match="not supported on meta"):
        flash_attention(q, q, q)


def test_kernels_package_imports_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, roberta_torch.kernels as kernels\n"
        "assert 'roberta_torch.kernels.flash_attn_triton' not in sys.modules\n"
        "assert not kernels.triton_is_usable('cpu') and not kernels.triton_is_usable('cuda')\n"
        "q = torch.zeros(1, 4, 1, 32, dtype=torch.float16)\n"
        "try:\n"
        "    kernels.flash_attention(q, q, q)\n"
        "except ImportError as error:\n"
        "    assert 'pip install triton' in str(error)\n"
        "else:\n"
        "    raise AssertionError('expected ImportError')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
