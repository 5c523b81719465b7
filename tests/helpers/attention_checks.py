"""How the attention kernel is judged, shared by the interpreter tests and the GPU tests.

Low-precision results are judged like flash-attention's tests: max|ours - ref32| <=
2 * max|torch_lowp - ref32| + atol, where ref32 is the reference on float32 copies of the
inputs and torch_lowp the same reference computed in the inputs' dtype.
"""

import torch

# Extra absolute slack on top of twice PyTorch's own low-precision error: about one ulp at
# |x| ~ 2-4 for the half types, because with tiny tensors the max error is a noisy
# statistic (a 5-key softmax row once gave 2.4x torch's bf16 error). float32 has no
# low-precision reference error, so its slack is the whole budget.
ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}


def random_qkv(shape, dtype, device, generator):
    return [torch.randn(shape, generator=generator).to(device=device, dtype=dtype).requires_grad_()
            for _ in range(3)]


def _upcast_leaves(tensors):
    return [x.detach().float().requires_grad_() for x in tensors]


def _lowp_leaves(tensors):
    return [x.detach().clone().requires_grad_() for x in tensors]


def _assert_within_budget(label, ours, ref32, lowp, atol):
    ours_error = (ours.float() - ref32).abs().max().item()
    lowp_error = 0.0 if lowp is None else (lowp.float() - ref32).abs().max().item()
    budget = 2 * lowp_error + atol
    assert ours_error <= budget, (f"{label}: max error {ours_error:.3g} > budget {budget:.3g} "
                                  f"(torch low-precision error {lowp_error:.3g})")


def check_forward_backward(run_ours, run_reference, inputs, dtype, grad_out_shape, generator, atol=None):
    """Compare output and dq, dk, dv of the kernel with ref32 (and torch_lowp for budget).

    `atol` overrides ATOL[dtype] (e.g. a tighter float32 bound where the test knows it)."""
    # One upstream gradient for all three, rounded to the inputs' dtype first.
    grad_out = torch.randn(grad_out_shape, generator=generator).to(inputs[0].device, dtype)
    out = run_ours(*inputs)
    out.backward(grad_out)

    ref_inputs = _upcast_leaves(inputs)
    ref_out = run_reference(*ref_inputs, upcast=True)
    ref_out.backward(grad_out.float())

    lowp_inputs, lowp_out = None, None
    if dtype != torch.float32:
        lowp_inputs = _lowp_leaves(inputs)
        lowp_out = run_reference(*lowp_inputs, upcast=False)
        lowp_out.backward(grad_out)

    atol = ATOL[dtype] if atol is None else atol
    _assert_within_budget("out", out, ref_out, lowp_out, atol)
    for index, name in enumerate(("dq", "dk", "dv")):
        lowp_grad = None if lowp_inputs is None else lowp_inputs[index].grad
        _assert_within_budget(name, inputs[index].grad, ref_inputs[index].grad, lowp_grad, atol)
