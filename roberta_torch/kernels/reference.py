"""Pure-torch ground truth for the kernels (tests and debugging; not public API).

* `attention_reference` / `attention_reference_varlen`: attention with the kernels'
  semantics (padded keys masked, padding query rows and rows without keys give zeros),
  differentiable, in float32 or in the inputs' dtype.
* `dropout_keep_mask`: a bit-exact torch rebuild of the kernels' in-kernel Philox dropout
  mask, so tests can run the reference with the very mask the kernel used.
"""

import math

import torch


def attention_reference(q, k, v, key_lengths=None, dropout_p=0.0, softmax_scale=None,
                        dropout_keep=None, upcast=True, key_padding_mask=None):
    """Padded attention with the kernels' semantics, in plain torch (differentiable).

    Args:
        q, k, v: (batch, seq, heads, head_dim).
        key_lengths: int (batch,) or None; keys and query rows `>= length` are padding.
        key_padding_mask: bool (batch, seq), True = valid, or None (at most one of this
            and `key_lengths`); keys and query rows where it is False are padding.
        dropout_keep: bool (batch, heads, seq, seq) keep mask (see `dropout_keep_mask`),
            applied with scale 1 / (1 - dropout_p); None means no dropout.
        upcast: compute and return float32 (the ground truth); otherwise compute in the
            inputs' dtype (PyTorch's own low-precision error, the tests' yardstick).
    Returns:
        (batch, seq, heads, head_dim), float32 if `upcast` else q's dtype.
    """
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    batch, seqlen, _, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    scores = torch.einsum("bihd,bjhd->bhij", q * scale, k)
    if key_padding_mask is not None:
        valid = key_padding_mask.to(device=q.device, dtype=torch.bool)
    else:
        if key_lengths is None:
            key_lengths = torch.full((batch,), seqlen, device=q.device)
        valid = torch.arange(seqlen, device=q.device)[None, :] < key_lengths.to(q.device)[:, None]
    # A finite fill keeps the softmax (and its gradient) NaN-free for length-0 rows,
    # which are zeroed below anyway.
    scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    if dropout_keep is not None:
        probs = probs.masked_fill(~dropout_keep, 0.0) / (1.0 - dropout_p)
    out = torch.einsum("bhij,bjhd->bihd", probs.to(v.dtype), v)
    return out.masked_fill(~valid[:, :, None, None], 0.0)


def attention_reference_varlen(q, k, v, cu_seqlens, dropout_p=0.0, softmax_scale=None,
                               dropout_keep=None, upcast=True):
    """Packed attention in plain torch: `attention_reference` on each sequence.

    Args:
        q, k, v: (total_tokens, heads, head_dim); cu_seqlens: int (batch + 1,).
        dropout_keep: bool (batch, heads, max_seqlen, max_seqlen) or None; sequence b
            uses `dropout_keep[b, :, :len_b, :len_b]`.
    Returns:
        (total_tokens, heads, head_dim), float32 if `upcast` else q's dtype.
    """
    bounds = cu_seqlens.tolist()
    outputs = []
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        keep = None
        if dropout_keep is not None:
            keep = dropout_keep[index:index + 1, :, :end - start, :end - start]
        outputs.append(attention_reference(
            q[None, start:end], k[None, start:end], v[None, start:end], dropout_p=dropout_p,
            softmax_scale=softmax_scale, dropout_keep=keep, upcast=upcast)[0])
    if not outputs:
        return q.new_zeros(q.shape, dtype=torch.float32 if upcast else q.dtype)
    return torch.cat(outputs, dim=0)


_UINT32 = 0xFFFFFFFF
_PHILOX_KEY_A, _PHILOX_KEY_B = 0x9E3779B9, 0xBB67AE85
_PHILOX_ROUND_A, _PHILOX_ROUND_B = 0xD2511F53, 0xCD9E8D57
_PHILOX_ROUNDS = 10


def _mul_wide_uint32(constant, x):
    """(high, low) 32-bit words of constant * x for uint32 values held in int64 tensors.

    Split into 16-bit halves so no intermediate exceeds 2**34 (int64 would overflow)."""
    c_lo, c_hi = constant & 0xFFFF, constant >> 16
    x_lo, x_hi = x & 0xFFFF, x >> 16
    lo_lo, hi_lo, lo_hi, hi_hi = c_lo * x_lo, c_hi * x_lo, c_lo * x_hi, c_hi * x_hi
    cross = (lo_lo >> 16) + (hi_lo & 0xFFFF) + (lo_hi & 0xFFFF)
    high = (hi_hi + (hi_lo >> 16) + (lo_hi >> 16) + (cross >> 16)) & _UINT32
    low = ((cross & 0xFFFF) << 16) | (lo_lo & 0xFFFF)
    return high, low


def _philox_first_word(seed, c0, c1):
    """First output word of Triton's `tl.philox(seed, c0, c1, 0, 0)` (10 rounds)."""
    key0, key1 = seed & _UINT32, (seed >> 32) & _UINT32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(_PHILOX_ROUNDS):
        high_b, low_b = _mul_wide_uint32(_PHILOX_ROUND_B, c2)
        high_a, low_a = _mul_wide_uint32(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = high_b ^ c1 ^ key0, low_b, high_a ^ c3 ^ key1, low_a
        key0, key1 = (key0 + _PHILOX_KEY_A) & _UINT32, (key1 + _PHILOX_KEY_B) & _UINT32
    return c0


def dropout_keep_mask(dropout_seed, batch, heads, max_seqlen, dropout_p):
    """The kernels' dropout keep mask, rebuilt in torch (for tests and debugging).

    Args:
        dropout_seed: int64 tensor (1,) (as drawn by `draw_dropout_seed`) or an int.
        max_seqlen: the padded length (padded API) or `max_seqlen` (packed API).
    Returns:
        bool (batch, heads, max_seqlen, max_seqlen); [b, h, i, j] tells whether the
        probability of local query i attending local key j of sequence b survives.
    """
    seed = int(dropout_seed.reshape(-1)[0].item()) if torch.is_tensor(dropout_seed) else int(dropout_seed)
    seed &= (1 << 64) - 1
    positions = torch.arange(max_seqlen, dtype=torch.int64)
    counter = ((positions[:, None] * max_seqlen + positions[None, :]) & _UINT32)[None, None]
    batch_head = torch.arange(batch * heads, dtype=torch.int64).reshape(batch, heads, 1, 1)
    counter, batch_head = torch.broadcast_tensors(counter, batch_head)
    word = _philox_first_word(seed, counter, batch_head)
    # Triton's uint_to_uniform_float: reinterpret as int32, fold negatives, scale.
    signed = torch.where(word >= 2**31, word - 2**32, word)
    signed = torch.where(signed < 0, -signed - 1, signed)
    uniform = signed.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32)
    return uniform >= torch.tensor(dropout_p, dtype=torch.float32)
