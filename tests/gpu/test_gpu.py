"""Real-size checks that need a CUDA GPU (skipped elsewhere; see benchmarks/gpu_session.sh).

The kernel is judged as in tests/kernels/test_flash_attention.py (tests/helpers/attention_checks.py): against
a float32 reference, our error must stay within twice PyTorch's own error in the same low
precision (plus a small atol), for the output and dq, dk, dv.
"""

import pytest
import torch

from helpers.attention_checks import check_forward_backward, random_qkv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [32, 64, 80, 96, 128])
@pytest.mark.parametrize("seq", [512, 1024])
def test_padded_kernel_at_real_sizes(dtype, head_dim, seq):
    from roberta_torch.kernels import flash_attention
    from roberta_torch.kernels.reference import attention_reference

    g = torch.Generator().manual_seed(seq + head_dim)
    shape = (4, seq, 12, head_dim)
    lengths = torch.tensor([seq, 1, 0, seq * 2 // 3 + 5], device="cuda")
    check_forward_backward(
        lambda q, k, v: flash_attention(q, k, v, key_lengths=lengths),
        lambda q, k, v, upcast: attention_reference(q, k, v, key_lengths=lengths, upcast=upcast),
        random_qkv(shape, dtype, "cuda", g),
        dtype,
        shape,
        g,
    )


def _real_size_masks(seq, generator):
    """Rows the masked kernel plans differently: right and left padding, an inner run,
    scattered tokens, one token, nothing valid."""
    positions = torch.arange(seq)
    return torch.stack([
        positions < seq * 2 // 3 + 5,
        positions >= seq // 3 + 7,
        (positions >= 70) & (positions < seq - 45),
        torch.rand(seq, generator=generator) < 0.4,
        positions == seq // 2,
        torch.zeros(seq, dtype=torch.bool),
    ]).cuda()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("seq", [1024, 2048])
def test_masked_kernel_at_real_sizes(dtype, head_dim, seq):
    from roberta_torch.kernels import flash_attention
    from roberta_torch.kernels.reference import attention_reference

    g = torch.Generator().manual_seed(seq + head_dim + 1)
    mask = _real_size_masks(seq, g)
    shape = (mask.shape[0], seq, 12, head_dim)
    check_forward_backward(
        lambda q, k, v: flash_attention(q, k, v, key_padding_mask=mask),
        lambda q, k, v, upcast: attention_reference(q, k, v, key_padding_mask=mask, upcast=upcast),
        random_qkv(shape, dtype, "cuda", g),
        dtype,
        shape,
        g,
    )


def test_masked_kernel_dropout_at_real_size():
    from roberta_torch.kernels import flash_attention, flash_attn
    from roberta_torch.kernels.reference import attention_reference, dropout_keep_mask

    g = torch.Generator().manual_seed(5)
    seq, heads, dropout_p = 512, 12, 0.1
    mask = _real_size_masks(seq, g)
    shape = (mask.shape[0], seq, heads, 64)
    torch.manual_seed(77)
    keep = dropout_keep_mask(flash_attn.draw_dropout_seed("cuda"), shape[0], heads, seq, dropout_p).cuda()

    def run_ours(q, k, v):
        torch.manual_seed(77)  # the kernel draws the same seed
        return flash_attention(q, k, v, dropout_p=dropout_p, key_padding_mask=mask)

    check_forward_backward(
        run_ours,
        lambda q, k, v, upcast: attention_reference(q, k, v, dropout_p=dropout_p, dropout_keep=keep,
                                                    upcast=upcast, key_padding_mask=mask),
        random_qkv(shape, torch.bfloat16, "cuda", g),
        torch.bfloat16,
        shape,
        g,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_varlen_kernel_at_real_sizes(dtype):
    from roberta_torch.kernels import flash_attention_varlen
    from roberta_torch.kernels.reference import attention_reference_varlen

    g = torch.Generator().manual_seed(0)
    lengths = [512, 1, 0, 300, 129, 1000]
    cu_seqlens = torch.tensor([0] + lengths, device="cuda").cumsum(0).to(torch.int32)
    shape = (int(cu_seqlens[-1]), 16, 64)
    check_forward_backward(
        lambda q, k, v: flash_attention_varlen(q, k, v, cu_seqlens=cu_seqlens, max_seqlen=max(lengths)),
        lambda q, k, v, upcast: attention_reference_varlen(q, k, v, cu_seqlens=cu_seqlens, upcast=upcast),
        random_qkv(shape, dtype, "cuda", g),
        dtype,
        shape,
        g,
    )


@pytest.mark.parametrize("padding_free", [False, True])
def test_model_on_cuda_matches_cpu_float32(padding_free):
    """The whole backbone on CUDA in bfloat16 (Triton attention) against the CPU float32 model,
    within twice the error of the same model on CUDA with SDPA."""
    from roberta_torch import RobertaBackbone

    torch.manual_seed(0)
    cpu = RobertaBackbone(1000, 4, 12, 768, 3072, max_sequence_length=512, dropout=0.0).eval()
    with torch.no_grad():
        for name, p in cpu.named_parameters():
            p.add_(torch.randn_like(p) * (0.02 if "norm" in name else 0.01))
    ids = torch.randint(0, 1000, (6, 384))
    mask = torch.arange(384)[None] < torch.tensor([384, 1, 0, 200, 383, 57])[:, None]
    with torch.no_grad():
        reference = cpu({"token_ids": ids, "padding_mask": mask})
    outputs = {}
    for backend in ("triton", "sdpa"):
        gpu = RobertaBackbone.from_config({**cpu.get_config(), "dtype": "bfloat16"})
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.cuda().eval()
        gpu.padding_free, gpu.attention_backend = padding_free, backend
        with torch.no_grad():
            outputs[backend] = gpu({"token_ids": ids, "padding_mask": mask}).float().cpu()
        assert torch.isfinite(outputs[backend]).all()
    triton_error = (outputs["triton"][mask] - reference[mask]).abs().max()
    sdpa_error = (outputs["sdpa"][mask] - reference[mask]).abs().max()
    assert triton_error <= 2 * sdpa_error + 2e-2, (triton_error, sdpa_error)


def test_training_step_with_in_kernel_dropout_on_cuda():
    from roberta_torch import RobertaBackbone

    torch.manual_seed(0)
    model = RobertaBackbone(1000, 2, 12, 768, 3072, dtype="bfloat16", dropout=0.1).cuda().train()
    ids = torch.randint(0, 1000, (4, 256), device="cuda")
    mask = torch.arange(256, device="cuda")[None] < torch.tensor([256, 100, 3, 0], device="cuda")[:, None]
    out = model({"token_ids": ids, "padding_mask": mask})
    out[mask].float().pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_compile_fullgraph_on_cuda():
    from roberta_torch import RobertaBackbone

    torch._dynamo.reset()
    model = RobertaBackbone(1000, 2, 12, 768, 3072, dtype="bfloat16", dropout=0.0).cuda().eval()
    ids = torch.randint(0, 1000, (4, 128), device="cuda")
    with torch.no_grad():
        eager = model({"token_ids": ids})
        compiled = torch.compile(model, fullgraph=True)({"token_ids": ids})
    torch.testing.assert_close(compiled.float(), eager.float(), rtol=2e-2, atol=2e-2)


def test_compile_fullgraph_padded_batch_takes_the_masked_kernel():
    """Under torch.compile a padded batch (here left and scattered padding) runs the Triton
    masked kernel (no host sync needed) and matches eager on the valid positions."""
    from roberta_torch import RobertaBackbone, attention

    torch._dynamo.reset()
    model = RobertaBackbone(1000, 2, 12, 768, 3072, dtype="bfloat16", dropout=0.0).cuda().eval()
    model.padding_free, model.attention_backend = False, "triton"
    ids = torch.randint(0, 1000, (4, 256), device="cuda")
    positions = torch.arange(256, device="cuda")
    mask = torch.stack([positions >= 100, positions < 17, torch.rand(256, device="cuda") < 0.5,
                        torch.ones(256, dtype=torch.bool, device="cuda")])
    inputs = {"token_ids": ids, "padding_mask": mask}
    with torch.no_grad():
        with attention.record_dispatch() as calls:
            eager = model(inputs)
        assert calls == [("triton", "masked")] * 2
        compiled = torch.compile(model, fullgraph=True)(inputs)
    assert torch.isfinite(compiled).all()
    torch.testing.assert_close(compiled[mask].float(), eager[mask].float(), rtol=2e-2, atol=2e-2)
