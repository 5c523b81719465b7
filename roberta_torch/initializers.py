"""Keras's initializers, fast on CPU.

keras_hub initializes RoBERTa's kernels and embeddings with TruncatedNormal(stddev=0.02):
normal values, "more than two standard deviations from the mean are discarded and
re-drawn". `truncated_normal_` does exactly that, vectorized: one normal draw over the
tensor, then, for the ~4.6 % of elements outside the bounds, one draw each from the normal
restricted to them (inverse CDF on those few: the distribution re-drawing converges to),
written back in one masked scatter: a few passes over the tensor. torch 2.13's
`nn.init.trunc_normal_` re-draws the whole tensor until every element is inside (about five
full normal draws), which took 95 % of `from_preset(..., load_weights=False)` of
roberta_base_en (see benchmarks/bench_init.py).
"""

from __future__ import annotations

import math

import torch

INITIALIZER_STDDEV = 0.02
TRUNCATION_STDDEVS = 2.0  # Keras's TruncatedNormal cuts at two standard deviations


@torch.no_grad()
def truncated_normal_(tensor: torch.Tensor, std: float = INITIALIZER_STDDEV, mean: float = 0.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill `tensor` with N(mean, std) values redrawn until they lie within two standard
    deviations of the mean (Keras's TruncatedNormal); returns `tensor`."""
    if tensor.is_meta or tensor.numel() == 0:
        return tensor
    bound = TRUNCATION_STDDEVS * std
    # Draw in float32 at least (a bfloat16 draw would round values onto the bound), in place
    # when the tensor already is a contiguous float32/float64 one.
    in_place = tensor.is_contiguous() and tensor.dtype in (torch.float32, torch.float64)
    flat = tensor.view(-1) if in_place else torch.empty(tensor.numel(), dtype=torch.float32, device=tensor.device)
    flat.normal_(0.0, std, generator=generator)
    outside = flat.abs() > bound
    count = int(outside.count_nonzero())
    if count:
        # Each discarded value is re-drawn from the normal restricted to the bounds (what
        # re-drawing until inside gives), by inverse CDF on these few values only:
        # x = sqrt(2) std erfinv(u), u uniform in (-erf(sqrt(2)), erf(sqrt(2))).
        limit = math.erf(TRUNCATION_STDDEVS / math.sqrt(2))
        redrawn = flat.new_empty(count).uniform_(-limit, limit, generator=generator)
        flat.masked_scatter_(outside, redrawn.erfinv_().mul_(math.sqrt(2) * std))
    if mean:
        flat.add_(mean)
    if not in_place:
        tensor.copy_(flat.view(tensor.shape))
    return tensor
