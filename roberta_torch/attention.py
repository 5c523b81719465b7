"""The attention dispatcher: the one place that picks Triton or SDPA.

The model builds an `AttentionMask` once per forward (`padded_attention_mask` or
`packed_attention_mask`) and calls `self_attention` in every layer. Per call, the dispatcher
picks a backend at the decision point "attention" (see roberta_torch/dispatch.py):

| backend  | when (`auto`)                                                      |
|----------|--------------------------------------------------------------------|
| `triton` | CUDA tensor, float16/bfloat16, supported head dim, Triton importable |
| `sdpa`   | everything else (CPU, float32, other head dims, no Triton)          |

and, for packed batches on SDPA, a way at the point "packed_sdpa":

| way            | eager                                  | traced (torch.compile/export)         |
|----------------|----------------------------------------|---------------------------------------|
| `per_sequence` | one SDPA call per run of equal lengths | the same, inside one custom op (varlen_sdpa.py); the only way with dropout |
| `repadded`     | one key-masked SDPA call over the sequences re-padded to the longest (sdpa.py) | the same, inside the op |
| `auto`         | `per_sequence`                         | `repadded` without dropout, else `per_sequence` |

A forced choice (the `backend=` argument, the model's `attention_backend`, `dispatch.override`,
`dispatch.set_default`, or `ROBERTA_TORCH_ATTENTION=auto|triton|sdpa` /
`ROBERTA_TORCH_PACKED_SDPA=auto|per_sequence|repadded`, read once at import) is honoured;
forcing `triton` where it cannot run raises a ValueError instead of silently falling back;
`repadded` in a traced graph with dropout goes per sequence, and says so to the recorder.
`dispatch.record()` (or the older `record_dispatch()`) reports the choices.

Masking semantics are Keras's: padded *keys* are masked; a query row whose sequence has no
valid key at all gets zero attention output (Keras zeroes the probabilities of fully masked
rows), so the layer output there is finite.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from . import dispatch, sdpa
from .padding import PackedLayout
from .tracing import is_compiling
from .varlen_sdpa import varlen_attention

BACKENDS = ("auto", "triton", "sdpa")
BACKEND_ENV_VAR = "ROBERTA_TORCH_ATTENTION"
PACKED_SDPA_WAYS = ("auto", "per_sequence", "repadded")

ATTENTION = dispatch.declare(
    "attention",
    BACKENDS,
    env_var=BACKEND_ENV_VAR,
    call_name="the `backend` argument (the model's `attention_backend`)",
    model_name="the `attention_backend` argument",
).name
PACKED_SDPA = dispatch.declare("packed_sdpa", PACKED_SDPA_WAYS, env_var="ROBERTA_TORCH_PACKED_SDPA").name


@dataclasses.dataclass
class AttentionMask:
    """What the backends need to know about padding, prepared once per forward.

    sdpa_mask:    (batch, 1, 1, seq) bool, True = attend; None when nothing is padded.
    row_has_key:  (batch, 1, 1, 1) bool, False for rows with no valid token; set only where
                  SDPA does not already zero such rows itself (off CPU).
    layout:       set for packed (padding-free) inputs of shape (total_tokens, heads, dim).
    """

    sdpa_mask: torch.Tensor | None = None
    row_has_key: torch.Tensor | None = None
    layout: PackedLayout | None = None
    _triton_key_bounds: tuple = dataclasses.field(default=(), repr=False)  # () = not computed yet

    @property
    def is_packed(self) -> bool:
        return self.layout is not None

    @property
    def kind(self) -> str:
        """"packed", "masked" (a key mask) or "padded" (nothing masked): the recorded case."""
        if self.layout is not None:
            return "packed"
        return "padded" if self.sdpa_mask is None else "masked"

    def triton_key_bounds(self) -> torch.Tensor:
        """The Triton kernel's per-sequence loop bounds of the padding mask, (batch, 3) int32,
        computed by torch ops on the mask's device (no host sync, the same under compile) on
        first use, and shared by every layer."""
        if not self._triton_key_bounds:
            from .kernels.ops import key_mask_bounds  # imports no Triton itself

            self._triton_key_bounds = (key_mask_bounds(self.sdpa_mask[:, 0, 0, :]),)
        return self._triton_key_bounds[0]


def padded_attention_mask(padding_mask: torch.Tensor | None) -> AttentionMask:
    """Prepare a (batch, seq) bool padding mask (True = valid) for padded attention (no host
    sync: the same eager and inside torch.compile; the Triton path takes the mask itself)."""
    if padding_mask is None:
        return AttentionMask()
    row_has_key = None
    if padding_mask.device.type != "cpu":  # CPU SDPA zeroes rows without a key itself
        row_has_key = padding_mask.any(dim=1)[:, None, None, None]
    mask = AttentionMask(sdpa_mask=padding_mask[:, None, None, :], row_has_key=row_has_key)
    if is_compiling():
        # A checkpointed layer may not fill a cache from outside it while tracing: compute
        # the bounds now (the graph drops them if no layer takes the Triton path).
        mask.triton_key_bounds()
    return mask


def packed_attention_mask(layout: PackedLayout) -> AttentionMask:
    """Prepare packed (padding-free) attention over `layout`'s sequences."""
    return AttentionMask(layout=layout)


# -- the older spellings of the "attention" point's switches --------------------------------


def default_backend() -> str:
    """The backend used when neither the call, the model nor an override names one."""
    return dispatch.get_default(ATTENTION)


def set_default_backend(backend: str) -> str:
    """Set the process-wide default backend ('auto', 'triton' or 'sdpa'); returns the old one.
    The same as `dispatch.set_default("attention", backend)`; overrides $ROBERTA_TORCH_ATTENTION
    (which is read once, at import)."""
    return dispatch.set_default(ATTENTION, backend, source="set_default_backend")


def requested_backend(backend: str | None = None) -> str:
    """The backend requested for a model whose `attention_backend` is `backend`: that, else
    the scoped override, else the process-wide default (see roberta_torch.dispatch)."""
    return dispatch.requested(ATTENTION, model=backend)[0]


@contextlib.contextmanager
def record_dispatch():
    """Within the block, every `self_attention` call appends (backend, layout) to the yielded
    list: backend "triton" or "sdpa"; layout "padded" (no mask or per-sequence key lengths),
    "masked" (a general key mask) or "packed". `dispatch.record("attention")` gives the same
    as `Decision`s, with the reason."""
    with dispatch._recording((ATTENTION,), lambda d: (d.choice, d.case)) as calls:
        yield calls


# -- the decisions ----------------------------------------------------------------------------


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


def _decide_backend(q: torch.Tensor, dropout_p: float, backend: str | None) -> tuple:
    """('triton' or 'sdpa', why) for this call (see the module docstring's table)."""
    requested, source = dispatch.requested(ATTENTION, call=backend)
    if requested == "sdpa":
        return "sdpa", source
    if requested == "auto" and not q.is_cuda:
        # On CPU Triton only runs under its (slow) interpreter: never pick it implicitly.
        return "sdpa", "auto: not a CUDA tensor"
    reason = triton_unsupported_reason(q, dropout_p)
    if reason is None:
        return "triton", source if requested == "triton" else "auto: CUDA, Triton supports it"
    if requested == "triton":
        raise ValueError(
            f"Attention backend 'triton' was forced (by {source}) but {reason}; use backend "
            "'auto' or 'sdpa'."
        )
    return "sdpa", f"auto: {reason}"


def choose_backend(q: torch.Tensor, dropout_p: float, backend: str | None = None) -> str:
    """Pick 'triton' or 'sdpa' for this call (see the module docstring's table)."""
    return _decide_backend(q, dropout_p, backend)[0]


# -- the call ---------------------------------------------------------------------------------


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
    `backend` ('auto', 'triton', 'sdpa' or None) forces a backend for this call.
    """
    chosen, why = _decide_backend(q, dropout_p, backend)
    dispatch.note(ATTENTION, chosen, mask.kind, why)
    if chosen == "triton":
        return _triton(q, k, v, mask, dropout_p)
    if not mask.is_packed:
        return sdpa.padded_attention(q, k, v, mask.sdpa_mask, mask.row_has_key, dropout_p)
    return _sdpa_packed(q, k, v, mask.layout, dropout_p)


def _sdpa_packed(q, k, v, layout: PackedLayout, dropout_p: float) -> torch.Tensor:
    """Packed attention on SDPA, the way the "packed_sdpa" point says (module docstring)."""
    eager = layout.seqlens is not None and not is_compiling()
    way, why = _packed_sdpa_way(eager, dropout_p)
    dispatch.note(PACKED_SDPA, way, q.dtype, why)
    if not eager:
        # Traced: no host lengths. One custom op reads them when it runs.
        return varlen_attention(q, k, v, layout.cu_seqlens, dropout_p, way)
    if way == "per_sequence":
        return sdpa.per_sequence_attention(q, k, v, layout.seqlens, dropout_p)
    grid = sdpa.repadding(layout.cu_seqlens, q.shape[0], layout.max_seqlen)
    return sdpa.repadded_attention(q, k, v, grid, dropout_p)


def _packed_sdpa_way(eager: bool, dropout_p: float) -> tuple:
    """('per_sequence' or 'repadded', why)."""
    requested, source = dispatch.requested(PACKED_SDPA)
    if eager:
        return ("per_sequence", "auto: eager") if requested == "auto" else (requested, source)
    if dropout_p > 0.0:
        if requested == "per_sequence":
            return requested, source
        return "per_sequence", "traced with dropout: the op draws its mask per sequence"
    return ("repadded", "auto: traced, no dropout") if requested == "auto" else (requested, source)


def _triton(q, k, v, mask: AttentionMask, dropout_p: float) -> torch.Tensor:
    from .kernels import flash_attention, flash_attention_varlen

    if mask.is_packed:
        return flash_attention_varlen(
            q,
            k,
            v,
            cu_seqlens=mask.layout.cu_seqlens,
            max_seqlen=mask.layout.max_seqlen,  # an upper bound (the padded length) under compile
            dropout_p=dropout_p,
            validate_lengths=False,
        )
    if mask.sdpa_mask is None:
        return flash_attention(q, k, v, dropout_p=dropout_p)
    # Any padding mask (right, left or scattered): the kernel derives its loop bounds on the
    # device, so there is no host-synced prefix test, eager or compiled.
    return flash_attention(
        q,
        k,
        v,
        dropout_p=dropout_p,
        key_padding_mask=mask.sdpa_mask[:, 0, 0, :],
        key_mask_bounds=mask.triton_key_bounds(),
    )
