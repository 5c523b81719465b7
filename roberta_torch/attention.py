"""The attention dispatcher: the one place that knows about Triton, SDPA and csrc.

The model builds an `AttentionMask` once per forward (`padded_attention_mask` or
`packed_attention_mask`) and calls `self_attention` in every layer. Per call, the dispatcher
picks a backend:

| backend  | when (`auto`)                                                      |
|----------|--------------------------------------------------------------------|
| `triton` | CUDA tensor, float16/bfloat16, supported head dim, Triton importable |
| `sdpa`   | everything else (CPU, float32, other head dims, no Triton)          |

An explicit override (`backend=` argument, or the process-wide default: the environment
variable `ROBERTA_TORCH_ATTENTION=auto|triton|sdpa`, read once at import, or
`set_default_backend`) forces one; forcing `triton` where it cannot run raises a ValueError
instead of silently falling back. `record_dispatch()` reports which backend took each call.

Masking semantics are Keras's: padded *keys* are masked; a query row whose sequence has no
valid key at all gets zero attention output (Keras zeroes the probabilities of fully masked
rows), so the layer output there is finite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

import torch
import torch.nn.functional as F

from .padding import PackedLayout

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "triton", "sdpa")
BACKEND_ENV_VAR = "ROBERTA_TORCH_ATTENTION"

# torch >= 2.5 returns zeros for fully masked rows in every SDPA backend on CPU; elsewhere we
# zero them ourselves (older versions return NaN).
_SDPA_ZEROES_EMPTY_ROWS_ON_CPU = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


@dataclasses.dataclass
class AttentionMask:
    """What the backends need to know about padding, prepared once per forward.

    sdpa_mask:    (batch, 1, 1, seq) bool, True = attend; None when nothing is padded.
    row_has_key:  (batch, 1, 1, 1) bool, False for rows with no valid token; set only where
                  SDPA does not already zero such rows itself.
    layout:       set for packed (padding-free) inputs of shape (total_tokens, heads, dim).
    eager:        False inside torch.compile, where no host sync may happen.
    """

    sdpa_mask: torch.Tensor | None = None
    row_has_key: torch.Tensor | None = None
    layout: PackedLayout | None = None
    eager: bool = True
    _triton_key_bounds: tuple = dataclasses.field(default=(), repr=False)  # () = not computed yet

    @property
    def is_packed(self) -> bool:
        return self.layout is not None

    def triton_key_bounds(self) -> torch.Tensor:
        """The Triton kernel's per-sequence loop bounds of the padding mask, (batch, 3) int32.

        Computed by torch ops on the mask's device (no host sync, so the same under
        torch.compile), on the first Triton call of a forward, and shared by every layer.
        """
        if not self._triton_key_bounds:
            from .kernels.ops import key_mask_bounds  # imports no Triton itself

            self._triton_key_bounds = (key_mask_bounds(self.sdpa_mask[:, 0, 0, :]),)
        return self._triton_key_bounds[0]


def padded_attention_mask(padding_mask: torch.Tensor | None, eager: bool = True) -> AttentionMask:
    """Prepare a (batch, seq) bool padding mask (True = valid) for padded attention.

    `eager=False` marks a call inside torch.compile, where no host sync may happen (the
    Triton path needs none: it takes the mask itself).
    """
    if padding_mask is None:
        return AttentionMask(eager=eager)
    row_has_key = None
    if padding_mask.is_cuda or not _SDPA_ZEROES_EMPTY_ROWS_ON_CPU:
        row_has_key = padding_mask.any(dim=1)[:, None, None, None]
    return AttentionMask(
        sdpa_mask=padding_mask[:, None, None, :], row_has_key=row_has_key, eager=eager
    )


def packed_attention_mask(layout: PackedLayout) -> AttentionMask:
    """Prepare packed (padding-free) attention over `layout`'s sequences."""
    return AttentionMask(layout=layout)


def _check_backend(backend: str, source: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"Attention backend {backend!r} (from {source}) is not one of {BACKENDS}.")
    return backend


def _backend_from_environment() -> str:
    value = os.environ.get(BACKEND_ENV_VAR, "auto") or "auto"
    if value not in BACKENDS:
        # A bad value must not break `import roberta_torch`: say so once and use "auto".
        logger.warning("Ignoring $%s=%r: not one of %s; using 'auto'.", BACKEND_ENV_VAR, value, BACKENDS)
        return "auto"
    return value


# The process-wide default, read from the environment once (not on every call).
_default_backend = _backend_from_environment()


def default_backend() -> str:
    """The backend used when neither the model nor the call names one."""
    return _default_backend


def set_default_backend(backend: str) -> str:
    """Set the process-wide default backend ('auto', 'triton' or 'sdpa'); returns the old one.

    Overrides $ROBERTA_TORCH_ATTENTION (which is read once, at import)."""
    global _default_backend
    previous, _default_backend = _default_backend, _check_backend(backend, "set_default_backend")
    return previous


def requested_backend(backend: str | None = None) -> str:
    """The override in force: the argument, else the process-wide default (see above)."""
    if backend is None:
        return _default_backend
    return _check_backend(backend, "the `attention_backend` argument")


# Observers of dispatch decisions (see record_dispatch); empty in normal runs.
_dispatch_records: list = []


@contextlib.contextmanager
def record_dispatch():
    """Within the block, every `self_attention` call appends (backend, layout) to the yielded
    list: backend "triton" or "sdpa"; layout "padded" (no mask or per-sequence key lengths),
    "masked" (a general key mask) or "packed". For tests, debugging and benchmarks."""
    calls: list = []
    _dispatch_records.append(calls)
    try:
        yield calls
    finally:
        _dispatch_records.remove(calls)


def _record(backend: str, layout: str) -> None:
    for calls in _dispatch_records:
        calls.append((backend, layout))


def triton_unsupported_reason(q: torch.Tensor, dropout_p: float) -> str | None:
    """Why the Triton kernel cannot take this call, or None if it can."""
    from . import kernels  # imports no Triton itself

    if not kernels.triton_is_usable(q.device):
        return f"Triton is not usable on device {q.device} (needs CUDA, or TRITON_INTERPRET=1)"
    if q.dtype not in kernels.SUPPORTED_DTYPES:
        return f"dtype {q.dtype} is not one of {kernels.SUPPORTED_DTYPES}"
    if q.shape[-1] not in kernels.SUPPORTED_HEAD_DIMS:
        return f"head dim {q.shape[-1]} is not one of {kernels.SUPPORTED_HEAD_DIMS}"
    return None


def choose_backend(q: torch.Tensor, dropout_p: float, backend: str | None = None) -> str:
    """Pick 'triton' or 'sdpa' for this call (see the module docstring's table)."""
    requested = requested_backend(backend)
    if requested == "sdpa":
        return "sdpa"
    if requested == "auto" and not q.is_cuda:
        # On CPU Triton only runs under its (slow) interpreter: never pick it implicitly.
        return "sdpa"
    reason = triton_unsupported_reason(q, dropout_p)
    if reason is None:
        return "triton"
    if requested == "triton":
        raise ValueError(
            f"Attention backend 'triton' was forced but {reason}; use backend 'auto' or 'sdpa'."
        )
    return "sdpa"


def self_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: AttentionMask,
    dropout_p: float = 0.0,
    backend: str | None = None,
) -> torch.Tensor:
    """Non-causal multi-head self-attention with Keras's masking.

    Padded:  q, k, v (batch, seq, heads, head_dim) -> (batch, seq, heads, head_dim).
    Packed:  q, k, v (total_tokens, heads, head_dim) -> (total_tokens, heads, head_dim).
    Scores are scaled by 1/sqrt(head_dim); dropout_p applies to the probabilities.
    """
    chosen = choose_backend(q, dropout_p, backend)
    if mask.is_packed:
        _record(chosen, "packed")
        if chosen == "triton":
            return _triton_packed(q, k, v, mask.layout, dropout_p)
        return _sdpa_packed(q, k, v, mask.layout, dropout_p)
    if chosen == "triton":
        # Any padding mask (right, left or scattered): the kernel derives its loop bounds
        # on the device, so there is no host-synced prefix test, eager or compiled.
        _record("triton", "padded" if mask.sdpa_mask is None else "masked")
        return _triton_padded(q, k, v, mask, dropout_p)
    _record("sdpa", "padded" if mask.sdpa_mask is None else "masked")
    return _sdpa_padded(q, k, v, mask, dropout_p)


def _sdpa_padded(q, k, v, mask: AttentionMask, dropout_p: float) -> torch.Tensor:
    # SDPA wants (batch, heads, seq, head_dim).
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask.sdpa_mask,
        dropout_p=dropout_p,
    )  # (B, N, T, D)
    if mask.row_has_key is not None:
        out = torch.where(mask.row_has_key, out, out.new_zeros(()))
    return out.transpose(1, 2)  # (B, T, N, D)


def _sdpa_packed(q, k, v, layout: PackedLayout, dropout_p: float) -> torch.Tensor:
    # Exact and cheapest on CPU: one SDPA call per run of equal-length sequences would save
    # launches, but per-sequence calls already cost far less than the dense layers.
    outputs = []
    start = 0
    for length in layout.seqlens:
        if length == 0:
            continue
        end = start + length
        # (L, N, D) -> (1, N, L, D)
        qi, ki, vi = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        outputs.append(
            F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout_p)[0].transpose(0, 1)
        )
        start = end
    if not outputs:
        return q.new_zeros(q.shape)
    return torch.cat(outputs, dim=0)  # (total, N, D)


def _triton_padded(q, k, v, mask: AttentionMask, dropout_p: float) -> torch.Tensor:
    from .kernels import flash_attention

    if mask.sdpa_mask is None:
        return flash_attention(q, k, v, dropout_p=dropout_p)
    return flash_attention(
        q,
        k,
        v,
        dropout_p=dropout_p,
        key_padding_mask=mask.sdpa_mask[:, 0, 0, :],
        key_mask_bounds=mask.triton_key_bounds(),
    )


def _triton_packed(q, k, v, layout: PackedLayout, dropout_p: float) -> torch.Tensor:
    from .kernels import flash_attention_varlen

    return flash_attention_varlen(
        q,
        k,
        v,
        cu_seqlens=layout.cu_seqlens,
        max_seqlen=layout.max_seqlen,
        dropout_p=dropout_p,
        validate_lengths=False,
    )
