"""Triton FlashAttention-2 kernels (forward, backward) for padded and packed batches.

Only `@triton.jit` kernels and one launcher per kernel live here; the reference, the
custom ops, autograd and input validation live in `flash_attn.py`, which imports this
module lazily so that `import roberta_torch` never needs Triton.

Layout shared by every kernel: q, k, v, out, dout are packed `(total_tokens, heads,
head_dim)` views (last dim contiguous). Sequence `b` occupies tokens
`[start_b, start_b + seqlen_b)`:

* padded mode (`IS_VARLEN=False`): `start_b = b * max_seqlen`; `seqlen_b` is
  `key_lengths[b]` (or `max_seqlen` without lengths). Rows `[seqlen_b, max_seqlen)` are
  padding: their outputs and gradients are written as zeros, and keys there are masked.
* packed mode (`IS_VARLEN=True`): `start_b = cu_seqlens[b]`, `seqlen_b =
  cu_seqlens[b+1] - cu_seqlens[b]`; nothing outside a sequence is written.

Loop bounds come from `seqlen_b`: key/query blocks past a sequence's end are never
visited, and only the last partial block pays for masking. Scores are kept in base 2:
`qk_scale_log2 = softmax_scale * log2(e)` is folded into one multiply and `exp2` is used
throughout; the saved row statistic is `lse_log2 = max + log2(sum)` of those base-2
scores, shape `(heads, total_tokens)`, float32.

Dropout uses Philox (`tl.philox`) keyed by a 64-bit seed read from device memory, with
counter `(query * max_seqlen + key, batch * heads + head, 0, 0)`, so the forward and both
backward kernels regenerate the same mask; `flash_attn.dropout_keep_mask` rebuilds it in
pure torch.
"""

import torch
import triton
import triton.language as tl

# Recorded once, from the same knob `triton.jit` reads: it decides at decoration time
# whether kernels are compiled for a GPU or interpreted on the CPU (TRITON_INTERPRET=1),
# so changing the environment later has no effect on this module.
KERNELS_INTERPRETED = bool(triton.knobs.runtime.interpret)

_LOG2_E = 1.4426950408889634


@triton.jit
def _sequence_bounds(SequenceBounds, batch_index, max_seqlen, total_tokens,
                     IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr):
    """(first token, valid length, rows this sequence owns) of sequence `batch_index`.

    Values are clamped so that malformed lengths can never address memory outside the
    packed tensors (the Python entry validates them; this is the second line of defence).
    """
    if IS_VARLEN:
        start = tl.load(SequenceBounds + batch_index)
        end = tl.load(SequenceBounds + batch_index + 1)
        start = tl.minimum(tl.maximum(start, 0), total_tokens)
        end = tl.minimum(tl.maximum(end, start), total_tokens)
        seqlen = tl.minimum(end - start, max_seqlen)
        owned_rows = seqlen
    else:
        start = batch_index * max_seqlen
        if HAS_LENGTHS:
            seqlen = tl.load(SequenceBounds + batch_index)
            seqlen = tl.minimum(tl.maximum(seqlen, 0), max_seqlen)
        else:
            seqlen = max_seqlen
        owned_rows = max_seqlen
    return start, seqlen, owned_rows


@triton.jit
def _load_rows(ptrs, offs_rows, row_limit, offs_d,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASK_ROWS: tl.constexpr):
    """Load a (rows, BLOCK_D) tile; masked rows and padded head-dim columns read 0."""
    if MASK_ROWS:
        if BLOCK_D == HEAD_DIM:
            tile = tl.load(ptrs, mask=(offs_rows < row_limit)[:, None], other=0.0)
        else:
            tile = tl.load(ptrs, mask=(offs_rows < row_limit)[:, None] & (offs_d < HEAD_DIM)[None, :],
                           other=0.0)
    else:
        if BLOCK_D == HEAD_DIM:
            tile = tl.load(ptrs)
        else:
            tile = tl.load(ptrs, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    return tile


@triton.jit
def _store_rows(ptrs, tile, offs_rows, valid_rows, owned_rows, offs_d,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Store rows `< owned_rows`; rows in `[valid_rows, owned_rows)` (padding) get zeros."""
    tile = tl.where((offs_rows < valid_rows)[:, None], tile, 0.0)
    mask = (offs_rows < owned_rows)[:, None]
    if BLOCK_D != HEAD_DIM:
        mask = mask & (offs_d < HEAD_DIM)[None, :]
    tl.store(ptrs, tile.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _dot(a, b, acc, DOT_IN_FP32: tl.constexpr):
    """`tl.dot` with fp32 accumulation. DOT_IN_FP32 is set only under the interpreter for
    bfloat16, whose `tl.dot` there multiplies the raw uint16 bit patterns (Triton 3.x);
    upcasting first is exact (bf16 -> fp32 is lossless and the GPU MMA also accumulates
    exact bf16 products in fp32)."""
    if DOT_IN_FP32:
        result = tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        result = tl.dot(a, b, acc)
    return result


@triton.jit
def _dropout_keep(dropout_seed, query_index, key_index, batch_head, max_seqlen, dropout_p):
    """Boolean keep mask, broadcast of `query_index` against `key_index` (both int32).

    The Philox counter is (query * max_seqlen + key, batch * heads + head, 0, 0): unique per
    attention-matrix element for max_seqlen <= 65536; the uniform is Triton's
    `uint_to_uniform_float` of the first output word.
    """
    counter = query_index * max_seqlen + key_index
    zeros = counter * 0
    random_word, _, _, _ = tl.philox(dropout_seed, counter, zeros + batch_head, zeros, zeros)
    return tl.uint_to_uniform_float(random_word) >= dropout_p


@triton.jit
def _forward_inner(acc, row_sum, row_max, q, k_base, v_base, stride_k_token, stride_v_token,
                   offs_m, offs_d, key_start, key_end, seqlen, qk_scale_log2,
                   dropout_seed, batch_head, max_seqlen, dropout_p,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                   MASK_KEYS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                   DOT_IN_FP32: tl.constexpr):
    """Online-softmax accumulation over key blocks `[key_start, key_end)`."""
    for block_start in range(key_start, key_end, BLOCK_N):
        block_start = tl.multiple_of(block_start, BLOCK_N)
        offs_n = block_start + tl.arange(0, BLOCK_N)
        k = _load_rows(k_base + offs_n[:, None] * stride_k_token + offs_d[None, :], offs_n, seqlen,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_KEYS)
        scores = _dot(q, tl.trans(k), None, DOT_IN_FP32)  # (BLOCK_M, BLOCK_N), unscaled
        if MASK_KEYS:
            scores = tl.where((offs_n < seqlen)[None, :], scores, float("-inf"))
        # The scale (> 0) commutes with max, so it is applied inside one FMA per element.
        new_max = tl.maximum(row_max, tl.max(scores, 1) * qk_scale_log2)
        probs = tl.math.exp2(scores * qk_scale_log2 - new_max[:, None])
        correction = tl.math.exp2(row_max - new_max)
        # The normaliser sums the probabilities before dropout (dropout acts after softmax).
        row_sum = row_sum * correction + tl.sum(probs, 1)
        if HAS_DROPOUT:
            keep = _dropout_keep(dropout_seed, offs_m[:, None], offs_n[None, :], batch_head,
                                 max_seqlen, dropout_p)
            probs = tl.where(keep, probs, 0.0)
        v = _load_rows(v_base + offs_n[:, None] * stride_v_token + offs_d[None, :], offs_n, seqlen,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_KEYS)
        acc = acc * correction[:, None]
        acc = _dot(probs.to(v.dtype), v, acc, DOT_IN_FP32)
        row_max = new_max
    return acc, row_sum, row_max


@triton.jit
def _attention_forward_kernel(
        Q, K, V, Out, LseLog2, SequenceBounds, DropoutSeed,
        stride_q_token, stride_q_head, stride_k_token, stride_k_head,
        stride_v_token, stride_v_head, stride_o_token, stride_o_head, stride_lse_head,
        total_tokens, max_seqlen, qk_scale_log2, dropout_p,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
        DOT_IN_FP32: tl.constexpr):
    """One program: BLOCK_M query rows of one (sequence, head). Grid (m blocks, heads, batch)."""
    block_m = tl.program_id(0)
    head_index = tl.program_id(1)
    batch_index = tl.program_id(2)
    batch_head = batch_index * tl.num_programs(1) + head_index
    start, seqlen, owned_rows = _sequence_bounds(SequenceBounds, batch_index, max_seqlen,
                                                 total_tokens, IS_VARLEN, HAS_LENGTHS)
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    start = start.to(tl.int64)
    o_ptrs = (Out + start * stride_o_token + head_index * stride_o_head
              + offs_m[:, None] * stride_o_token + offs_d[None, :])
    lse_ptrs = LseLog2 + head_index * stride_lse_head + start + offs_m
    if block_m * BLOCK_M >= seqlen:
        # Entirely past the sequence: only padded layouts own these rows. They get zero
        # output and lse = -inf (the log-sum-exp of no keys), so every output is defined.
        if not IS_VARLEN:
            _store_rows(o_ptrs, tl.zeros([BLOCK_M, BLOCK_D], tl.float32), offs_m, seqlen, owned_rows,
                        offs_d, HEAD_DIM, BLOCK_D)
            tl.store(lse_ptrs, tl.full([BLOCK_M], float("-inf"), tl.float32), mask=offs_m < owned_rows)
        return

    q_ptrs = (Q + start * stride_q_token + head_index * stride_q_head
              + offs_m[:, None] * stride_q_token + offs_d[None, :])
    q = _load_rows(q_ptrs, offs_m, seqlen, offs_d, HEAD_DIM, BLOCK_D, True)
    k_base = K + start * stride_k_token + head_index * stride_k_head
    v_base = V + start * stride_v_token + head_index * stride_v_head
    if HAS_DROPOUT:
        dropout_seed = tl.load(DropoutSeed)
    else:
        dropout_seed = 0

    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    full_end = (seqlen // BLOCK_N) * BLOCK_N
    acc, row_sum, row_max = _forward_inner(
        acc, row_sum, row_max, q, k_base, v_base, stride_k_token, stride_v_token, offs_m, offs_d,
        0, full_end, seqlen, qk_scale_log2, dropout_seed, batch_head, max_seqlen, dropout_p,
        HEAD_DIM, BLOCK_D, BLOCK_N, False, HAS_DROPOUT, DOT_IN_FP32)
    acc, row_sum, row_max = _forward_inner(
        acc, row_sum, row_max, q, k_base, v_base, stride_k_token, stride_v_token, offs_m, offs_d,
        full_end, seqlen, seqlen, qk_scale_log2, dropout_seed, batch_head, max_seqlen, dropout_p,
        HEAD_DIM, BLOCK_D, BLOCK_N, True, HAS_DROPOUT, DOT_IN_FP32)

    # row_sum >= 1 on every row: rows inside the sequence include their own maximum, and
    # rows past it loaded q = 0 (finite scores), so nothing here divides by zero.
    if HAS_DROPOUT:
        acc = acc * (1.0 / (1.0 - dropout_p))
    acc = acc / row_sum[:, None]
    _store_rows(o_ptrs, acc, offs_m, seqlen, owned_rows, offs_d, HEAD_DIM, BLOCK_D)
    lse_log2 = tl.where(offs_m < seqlen, row_max + tl.math.log2(row_sum), float("-inf"))
    tl.store(lse_ptrs, lse_log2, mask=offs_m < owned_rows)


@triton.jit
def _attention_backward_preprocess_kernel(Out, DOut, Delta, stride_o_token, stride_o_head,
                                          stride_do_token, stride_do_head, stride_delta_head,
                                          total_tokens, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                                          BLOCK_T: tl.constexpr):
    """delta[h, t] = sum_d dout[t, h, d] * out[t, h, d] (float32). Grid (token blocks, heads)."""
    head_index = tl.program_id(1)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_t < total_tokens)[:, None] & (offs_d < HEAD_DIM)[None, :]
    offs_t64 = offs_t.to(tl.int64)
    out = tl.load(Out + head_index * stride_o_head + offs_t64[:, None] * stride_o_token + offs_d[None, :],
                  mask=mask, other=0.0)
    dout = tl.load(DOut + head_index * stride_do_head + offs_t64[:, None] * stride_do_token + offs_d[None, :],
                   mask=mask, other=0.0)
    delta = tl.sum(out.to(tl.float32) * dout.to(tl.float32), 1)
    tl.store(Delta + head_index * stride_delta_head + offs_t, delta, mask=offs_t < total_tokens)


@triton.jit
def _backward_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                         stride_q_token, stride_do_token, offs_n, offs_d,
                         query_start, query_end, seqlen, qk_scale_log2,
                         dropout_seed, batch_head, max_seqlen, dropout_p,
                         HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                         MASK_QUERIES: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                         DOT_IN_FP32: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks `[query_start, query_end)`.

    Works on transposed tiles (keys x queries) so that the sums over queries are plain
    `tl.dot(..., q)` / `tl.dot(..., dout)` products.
    """
    for block_start in range(query_start, query_end, BLOCK_M):
        block_start = tl.multiple_of(block_start, BLOCK_M)
        offs_m = block_start + tl.arange(0, BLOCK_M)
        q = _load_rows(q_base + offs_m[:, None] * stride_q_token + offs_d[None, :], offs_m, seqlen,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_QUERIES)
        dout = _load_rows(do_base + offs_m[:, None] * stride_do_token + offs_d[None, :], offs_m, seqlen,
                          offs_d, HEAD_DIM, BLOCK_D, MASK_QUERIES)
        if MASK_QUERIES:
            lse = tl.load(lse_base + offs_m, mask=offs_m < seqlen, other=0.0)
            delta = tl.load(delta_base + offs_m, mask=offs_m < seqlen, other=0.0)
        else:
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        scores_t = _dot(k, tl.trans(q), None, DOT_IN_FP32) * qk_scale_log2  # (BLOCK_N, BLOCK_M)
        probs_t = tl.math.exp2(scores_t - lse[None, :])
        if MASK_QUERIES:
            probs_t = tl.where((offs_m < seqlen)[None, :], probs_t, 0.0)
        dprobs_t = _dot(v, tl.trans(dout), None, DOT_IN_FP32)  # dL/d(dropped probs), transposed
        if HAS_DROPOUT:
            keep_t = _dropout_keep(dropout_seed, offs_m[None, :], offs_n[:, None], batch_head,
                                   max_seqlen, dropout_p)
            rescale = 1.0 / (1.0 - dropout_p)
            dv = _dot((tl.where(keep_t, probs_t, 0.0) * rescale).to(dout.dtype), dout, dv, DOT_IN_FP32)
            dprobs_t = tl.where(keep_t, dprobs_t * rescale, 0.0)
        else:
            dv = _dot(probs_t.to(dout.dtype), dout, dv, DOT_IN_FP32)
        # Softmax backward: dS = P * (dP - rowsum(dO * O)); delta already holds that rowsum.
        dscores_t = probs_t * (dprobs_t - delta[None, :])
        dk = _dot(dscores_t.to(q.dtype), q, dk, DOT_IN_FP32)
    return dk, dv


@triton.jit
def _attention_backward_dkdv_kernel(
        Q, K, V, DOut, LseLog2, Delta, DK, DV, SequenceBounds, DropoutSeed,
        stride_q_token, stride_q_head, stride_k_token, stride_k_head, stride_v_token, stride_v_head,
        stride_do_token, stride_do_head, stride_dk_token, stride_dk_head, stride_dv_token, stride_dv_head,
        stride_lse_head, total_tokens, max_seqlen, qk_scale_log2, softmax_scale, dropout_p,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
        DOT_IN_FP32: tl.constexpr):
    """One program: dK, dV for BLOCK_N keys of one (sequence, head). Grid (n blocks, heads, batch)."""
    block_n = tl.program_id(0)
    head_index = tl.program_id(1)
    batch_index = tl.program_id(2)
    batch_head = batch_index * tl.num_programs(1) + head_index
    start, seqlen, owned_rows = _sequence_bounds(SequenceBounds, batch_index, max_seqlen,
                                                 total_tokens, IS_VARLEN, HAS_LENGTHS)
    start = start.to(tl.int64)
    offs_n = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dk_ptrs = (DK + start * stride_dk_token + head_index * stride_dk_head
               + offs_n[:, None] * stride_dk_token + offs_d[None, :])
    dv_ptrs = (DV + start * stride_dv_token + head_index * stride_dv_head
               + offs_n[:, None] * stride_dv_token + offs_d[None, :])
    if block_n * BLOCK_N >= seqlen:
        if not IS_VARLEN:
            zeros = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
            _store_rows(dk_ptrs, zeros, offs_n, seqlen, owned_rows, offs_d, HEAD_DIM, BLOCK_D)
            _store_rows(dv_ptrs, zeros, offs_n, seqlen, owned_rows, offs_d, HEAD_DIM, BLOCK_D)
        return

    k_ptrs = (K + start * stride_k_token + head_index * stride_k_head
              + offs_n[:, None] * stride_k_token + offs_d[None, :])
    v_ptrs = (V + start * stride_v_token + head_index * stride_v_head
              + offs_n[:, None] * stride_v_token + offs_d[None, :])
    k = _load_rows(k_ptrs, offs_n, seqlen, offs_d, HEAD_DIM, BLOCK_D, True)
    v = _load_rows(v_ptrs, offs_n, seqlen, offs_d, HEAD_DIM, BLOCK_D, True)
    q_base = Q + start * stride_q_token + head_index * stride_q_head
    do_base = DOut + start * stride_do_token + head_index * stride_do_head
    lse_base = LseLog2 + head_index * stride_lse_head + start
    delta_base = Delta + head_index * stride_lse_head + start
    if HAS_DROPOUT:
        dropout_seed = tl.load(DropoutSeed)
    else:
        dropout_seed = 0

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    full_end = (seqlen // BLOCK_M) * BLOCK_M
    dk, dv = _backward_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                  stride_q_token, stride_do_token, offs_n, offs_d, 0, full_end, seqlen,
                                  qk_scale_log2, dropout_seed, batch_head, max_seqlen, dropout_p,
                                  HEAD_DIM, BLOCK_D, BLOCK_M, False, HAS_DROPOUT, DOT_IN_FP32)
    dk, dv = _backward_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                  stride_q_token, stride_do_token, offs_n, offs_d, full_end, seqlen, seqlen,
                                  qk_scale_log2, dropout_seed, batch_head, max_seqlen, dropout_p,
                                  HEAD_DIM, BLOCK_D, BLOCK_M, True, HAS_DROPOUT, DOT_IN_FP32)
    # Scores were softmax_scale * q.k, so dK picks up that factor once here.
    _store_rows(dk_ptrs, dk * softmax_scale, offs_n, seqlen, owned_rows, offs_d, HEAD_DIM, BLOCK_D)
    _store_rows(dv_ptrs, dv, offs_n, seqlen, owned_rows, offs_d, HEAD_DIM, BLOCK_D)


@triton.jit
def _backward_dq_inner(dq, q, dout, lse, delta, k_base, v_base, stride_k_token, stride_v_token,
                       offs_m, offs_d, key_start, key_end, seqlen, qk_scale_log2,
                       dropout_seed, batch_head, max_seqlen, dropout_p,
                       HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                       MASK_KEYS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                       DOT_IN_FP32: tl.constexpr):
    """Accumulate dQ of one query block over key blocks `[key_start, key_end)`."""
    for block_start in range(key_start, key_end, BLOCK_N):
        block_start = tl.multiple_of(block_start, BLOCK_N)
        offs_n = block_start + tl.arange(0, BLOCK_N)
        k = _load_rows(k_base + offs_n[:, None] * stride_k_token + offs_d[None, :], offs_n, seqlen,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_KEYS)
        v = _load_rows(v_base + offs_n[:, None] * stride_v_token + offs_d[None, :], offs_n, seqlen,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_KEYS)
        scores = _dot(q, tl.trans(k), None, DOT_IN_FP32) * qk_scale_log2
        probs = tl.math.exp2(scores - lse[:, None])
        if MASK_KEYS:
            probs = tl.where((offs_n < seqlen)[None, :], probs, 0.0)
        dprobs = _dot(dout, tl.trans(v), None, DOT_IN_FP32)
        if HAS_DROPOUT:
            keep = _dropout_keep(dropout_seed, offs_m[:, None], offs_n[None, :], batch_head,
                                 max_seqlen, dropout_p)
            dprobs = tl.where(keep, dprobs * (1.0 / (1.0 - dropout_p)), 0.0)
        dscores = probs * (dprobs - delta[:, None])
        dq = _dot(dscores.to(k.dtype), k, dq, DOT_IN_FP32)
    return dq


@triton.jit
def _attention_backward_dq_kernel(
        Q, K, V, DOut, LseLog2, Delta, DQ, SequenceBounds, DropoutSeed,
        stride_q_token, stride_q_head, stride_k_token, stride_k_head, stride_v_token, stride_v_head,
        stride_do_token, stride_do_head, stride_dq_token, stride_dq_head,
        stride_lse_head, total_tokens, max_seqlen, qk_scale_log2, softmax_scale, dropout_p,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
        DOT_IN_FP32: tl.constexpr):
    """One program: dQ for BLOCK_M queries of one (sequence, head). Grid (m blocks, heads, batch)."""
    block_m = tl.program_id(0)
    head_index = tl.program_id(1)
    batch_index = tl.program_id(2)
    batch_head = batch_index * tl.num_programs(1) + head_index
    start, seqlen, owned_rows = _sequence_bounds(SequenceBounds, batch_index, max_seqlen,
                                                 total_tokens, IS_VARLEN, HAS_LENGTHS)
    start = start.to(tl.int64)
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dq_ptrs = (DQ + start * stride_dq_token + head_index * stride_dq_head
               + offs_m[:, None] * stride_dq_token + offs_d[None, :])
    if block_m * BLOCK_M >= seqlen:
        if not IS_VARLEN:
            _store_rows(dq_ptrs, tl.zeros([BLOCK_M, BLOCK_D], tl.float32), offs_m, seqlen, owned_rows,
                        offs_d, HEAD_DIM, BLOCK_D)
        return

    q_ptrs = (Q + start * stride_q_token + head_index * stride_q_head
              + offs_m[:, None] * stride_q_token + offs_d[None, :])
    do_ptrs = (DOut + start * stride_do_token + head_index * stride_do_head
               + offs_m[:, None] * stride_do_token + offs_d[None, :])
    q = _load_rows(q_ptrs, offs_m, seqlen, offs_d, HEAD_DIM, BLOCK_D, True)
    dout = _load_rows(do_ptrs, offs_m, seqlen, offs_d, HEAD_DIM, BLOCK_D, True)
    lse = tl.load(LseLog2 + head_index * stride_lse_head + start + offs_m, mask=offs_m < seqlen, other=0.0)
    delta = tl.load(Delta + head_index * stride_lse_head + start + offs_m, mask=offs_m < seqlen, other=0.0)
    k_base = K + start * stride_k_token + head_index * stride_k_head
    v_base = V + start * stride_v_token + head_index * stride_v_head
    if HAS_DROPOUT:
        dropout_seed = tl.load(DropoutSeed)
    else:
        dropout_seed = 0

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    full_end = (seqlen // BLOCK_N) * BLOCK_N
    dq = _backward_dq_inner(dq, q, dout, lse, delta, k_base, v_base, stride_k_token, stride_v_token,
                            offs_m, offs_d, 0, full_end, seqlen, qk_scale_log2, dropout_seed, batch_head,
                            max_seqlen, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, False, HAS_DROPOUT, DOT_IN_FP32)
    dq = _backward_dq_inner(dq, q, dout, lse, delta, k_base, v_base, stride_k_token, stride_v_token,
                            offs_m, offs_d, full_end, seqlen, seqlen, qk_scale_log2, dropout_seed,
                            batch_head, max_seqlen, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, True,
                            HAS_DROPOUT, DOT_IN_FP32)
    _store_rows(dq_ptrs, dq * softmax_scale, offs_m, seqlen, owned_rows, offs_d, HEAD_DIM, BLOCK_D)


# ---------------------------------------------------------------------------------------
# Launch configuration: (BLOCK_M, BLOCK_N, num_warps, num_stages) keyed by (padded head
# dim 64 or 128, has dropout). Fixed tiles keep results deterministic run to run. Tile
# shapes follow the FA2 Triton tutorial (forward 128 x 64; dK/dV 128 keys per program
# stepping over queries; dQ 128 queries stepping over 32 keys); warps and stages were
# picked from an sm_90 ahead-of-time compile sweep (`bench_attention.py
# --aot-compile-check`): ptxas reports no register spills for padded head dims <= 64 (at
# most 16 bytes for 128) and shared memory <= 128 KB of H100's 227 KB. Not yet timed on a GPU:
# `benchmarks/bench_attention.py --sweep-configs` times alternatives by replacing entries
# of these tables. The interpreter uses 16-wide tiles (the smallest `tl.dot` accepts) so
# that short test sequences still cross block boundaries.
# ---------------------------------------------------------------------------------------

FORWARD_CONFIGS = {
    (64, False): (128, 64, 8, 3),
    (64, True): (128, 64, 8, 3),
    (128, False): (128, 64, 8, 3),
    (128, True): (128, 64, 8, 3),
}
# BLOCK_N keys per program, BLOCK_M queries per inner step.
BACKWARD_DKDV_CONFIGS = {
    (64, False): (32, 128, 8, 3),
    (64, True): (32, 128, 8, 3),
    (128, False): (32, 128, 8, 3),
    (128, True): (16, 128, 8, 3),
}
# BLOCK_M queries per program, BLOCK_N keys per inner step.
BACKWARD_DQ_CONFIGS = {
    (64, False): (128, 32, 8, 3),
    (64, True): (128, 32, 8, 3),
    (128, False): (128, 32, 8, 3),
    (128, True): (128, 32, 8, 3),
}
INTERPRETER_CONFIG = (16, 16, 1, 1)


def _launch_config(table, block_d, has_dropout):
    if KERNELS_INTERPRETED:
        return INTERPRETER_CONFIG
    return table[(64 if block_d <= 64 else 128, has_dropout)]


def _dot_in_fp32(dtype):
    return KERNELS_INTERPRETED and dtype == torch.bfloat16


def _launch_flags(sequence_bounds, is_varlen, dropout_p):
    has_lengths = is_varlen or sequence_bounds is not None
    return has_lengths, dropout_p > 0.0


def attention_forward(q, k, v, sequence_bounds, is_varlen, num_sequences, max_seqlen,
                      softmax_scale, dropout_p, dropout_seed):
    """Launch the forward kernel.

    Args:
        q, k, v: (total_tokens, heads, head_dim), last dim contiguous.
        sequence_bounds: int32 `cu_seqlens` (num_sequences + 1,) when `is_varlen`, else
            int32 key lengths (num_sequences,) or None (every sequence full).
        max_seqlen: padded length (padded mode) or longest sequence (packed mode).
        dropout_seed: int64 tensor (1,) on the device, or None when dropout_p == 0.
    Returns:
        out (total_tokens, heads, head_dim) in q's dtype and lse_log2 (heads,
        total_tokens) float32 (only rows inside a sequence are written).
    """
    total_tokens, num_heads, head_dim = q.shape
    block_d = triton.next_power_of_2(head_dim)
    out = torch.empty((total_tokens, num_heads, head_dim), dtype=q.dtype, device=q.device)
    lse_log2 = torch.empty((num_heads, total_tokens), dtype=torch.float32, device=q.device)
    has_lengths, has_dropout = _launch_flags(sequence_bounds, is_varlen, dropout_p)
    block_m, block_n, num_warps, num_stages = _launch_config(FORWARD_CONFIGS, block_d, has_dropout)
    grid = (triton.cdiv(max_seqlen, block_m), num_heads, num_sequences)
    _attention_forward_kernel[grid](
        q, k, v, out, lse_log2, sequence_bounds, dropout_seed,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), lse_log2.stride(0),
        total_tokens, max_seqlen, softmax_scale * _LOG2_E, dropout_p,
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
        IS_VARLEN=is_varlen, HAS_LENGTHS=has_lengths, HAS_DROPOUT=has_dropout,
        DOT_IN_FP32=_dot_in_fp32(q.dtype),
        num_warps=num_warps, num_stages=num_stages)
    return out, lse_log2


def attention_backward_preprocess(out, dout):
    """delta = rowsum(dout * out): (heads, total_tokens) float32."""
    total_tokens, num_heads, head_dim = out.shape
    block_d = triton.next_power_of_2(head_dim)
    delta = torch.empty((num_heads, total_tokens), dtype=torch.float32, device=out.device)
    block_t = 16 if KERNELS_INTERPRETED else 128
    grid = (triton.cdiv(total_tokens, block_t), num_heads)
    _attention_backward_preprocess_kernel[grid](
        out, dout, delta, out.stride(0), out.stride(1), dout.stride(0), dout.stride(1), delta.stride(0),
        total_tokens, HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_T=block_t,
        num_warps=1 if KERNELS_INTERPRETED else 4)
    return delta


def attention_backward_dkdv(dout, q, k, v, lse_log2, delta, sequence_bounds, is_varlen,
                            num_sequences, max_seqlen, softmax_scale, dropout_p, dropout_seed):
    """Launch the dK/dV kernel; returns dk, dv shaped like k, v (contiguous)."""
    total_tokens, num_heads, head_dim = q.shape
    block_d = triton.next_power_of_2(head_dim)
    dk = torch.empty((total_tokens, num_heads, head_dim), dtype=k.dtype, device=k.device)
    dv = torch.empty((total_tokens, num_heads, head_dim), dtype=v.dtype, device=v.device)
    has_lengths, has_dropout = _launch_flags(sequence_bounds, is_varlen, dropout_p)
    block_m, block_n, num_warps, num_stages = _launch_config(BACKWARD_DKDV_CONFIGS, block_d, has_dropout)
    grid = (triton.cdiv(max_seqlen, block_n), num_heads, num_sequences)
    _attention_backward_dkdv_kernel[grid](
        q, k, v, dout, lse_log2, delta, dk, dv, sequence_bounds, dropout_seed,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        dout.stride(0), dout.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
        lse_log2.stride(0), total_tokens, max_seqlen, softmax_scale * _LOG2_E, softmax_scale, dropout_p,
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
        IS_VARLEN=is_varlen, HAS_LENGTHS=has_lengths, HAS_DROPOUT=has_dropout,
        DOT_IN_FP32=_dot_in_fp32(q.dtype),
        num_warps=num_warps, num_stages=num_stages)
    return dk, dv


def attention_backward_dq(dout, q, k, v, lse_log2, delta, sequence_bounds, is_varlen,
                          num_sequences, max_seqlen, softmax_scale, dropout_p, dropout_seed):
    """Launch the dQ kernel; returns dq shaped like q (contiguous)."""
    total_tokens, num_heads, head_dim = q.shape
    block_d = triton.next_power_of_2(head_dim)
    dq = torch.empty((total_tokens, num_heads, head_dim), dtype=q.dtype, device=q.device)
    has_lengths, has_dropout = _launch_flags(sequence_bounds, is_varlen, dropout_p)
    block_m, block_n, num_warps, num_stages = _launch_config(BACKWARD_DQ_CONFIGS, block_d, has_dropout)
    grid = (triton.cdiv(max_seqlen, block_m), num_heads, num_sequences)
    _attention_backward_dq_kernel[grid](
        q, k, v, dout, lse_log2, delta, dq, sequence_bounds, dropout_seed,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        dout.stride(0), dout.stride(1), dq.stride(0), dq.stride(1),
        lse_log2.stride(0), total_tokens, max_seqlen, softmax_scale * _LOG2_E, softmax_scale, dropout_p,
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
        IS_VARLEN=is_varlen, HAS_LENGTHS=has_lengths, HAS_DROPOUT=has_dropout,
        DOT_IN_FP32=_dot_in_fp32(q.dtype),
        num_warps=num_warps, num_stages=num_stages)
    return dq

