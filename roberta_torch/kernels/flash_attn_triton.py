"""Triton FlashAttention-2 kernels (forward, backward) for padded, masked and packed batches.

Only `@triton.jit` kernels, their launch tables and one launcher live here; validation is
in `validation.py`, the custom ops and autograd in `ops.py`, which imports this module
lazily so that `import roberta_torch` never needs Triton.

Layout shared by every kernel: q, k, v, out, dout are packed `(total_tokens, heads,
head_dim)` views (last dim contiguous). Sequence `b` occupies tokens
`[start_b, start_b + max_seqlen)` (padded) or `[cu_seqlens[b], cu_seqlens[b+1])` (packed).
Which of its tokens are valid (valid keys are attended; valid query rows are computed):

* right padding (`HAS_LENGTHS`, padded): tokens `[0, key_lengths[b])`, or all of them
  without lengths. Rows past the end get zero outputs and gradients.
* any mask (`HAS_KEY_MASK`, padded): tokens where `KeyMask[b, :]` (uint8) is non-zero.
  `SequenceBounds` holds per-sequence `[first, last + 1, contiguous]` computed on the
  device (`ops.key_mask_bounds`), so loop bounds need no host sync: blocks outside
  `[first, last + 1)` are never visited. A contiguous run of valid tokens (left or right
  padding) needs per-element masking only in its two edge blocks (from the bounds, no
  mask reads); other rows read the mask for every visited block. Invalid rows get zero
  outputs and gradients.
* packed (`IS_VARLEN`): every token of the sequence; nothing outside a sequence is written.

Scores are kept in base 2: `qk_scale_log2 = softmax_scale * log2(e)` is folded into one
multiply and `exp2` is used throughout; the saved row statistic is `lse_log2 = max +
log2(sum)` of those base-2 scores, shape `(heads, total_tokens)`, float32 (-inf on
invalid rows of padded layouts).

Dropout uses Philox (`tl.philox`) keyed by a 64-bit seed read from device memory, with
counter `(query * max_seqlen + key, batch * heads + head, 0, 0)`, so the forward and both
backward kernels regenerate the same mask; `reference.dropout_keep_mask` rebuilds it in
pure torch.
"""

import dataclasses
from typing import Mapping, NamedTuple

import torch
import triton
import triton.language as tl

# Recorded once, from the same knob `triton.jit` reads: it decides at decoration time
# whether kernels are compiled for a GPU or interpreted on the CPU (TRITON_INTERPRET=1),
# so changing the environment later has no effect on this module.
KERNELS_INTERPRETED = bool(triton.knobs.runtime.interpret)

_LOG2_E = 1.4426950408889634

# How a loop masks the rows (keys or queries) it visits; a constexpr of the inner loops.
MASK_NONE = tl.constexpr(0)  # whole blocks inside the valid range: no masking at all
MASK_BELOW_END = tl.constexpr(1)  # right padding: valid iff index < end
MASK_FROM_MEMORY = tl.constexpr(2)  # any mask: read KeyMask inside [first, end)


# ---------------------------------------------------------------------------------------
# Helpers shared by the kernels
# ---------------------------------------------------------------------------------------

@triton.jit
def _sequence_bounds(SequenceBounds, batch_index, max_seqlen, total_tokens,
                     IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr):
    """(first token, first valid, end of valid, contiguous, rows owned) of sequence `batch_index`.

    Values are clamped so that malformed bounds can never address memory outside the
    packed tensors (the Python entry validates them; this is the second line of defence).
    """
    first = 0
    contiguous = True
    if IS_VARLEN:
        start = tl.load(SequenceBounds + batch_index)
        end = tl.load(SequenceBounds + batch_index + 1)
        start = tl.minimum(tl.maximum(start, 0), total_tokens)
        end = tl.minimum(tl.maximum(end, start), total_tokens)
        seqlen = tl.minimum(end - start, max_seqlen)
        owned_rows = seqlen
    else:
        start = batch_index * max_seqlen
        if HAS_KEY_MASK:
            first = tl.load(SequenceBounds + batch_index * 3)
            seqlen = tl.load(SequenceBounds + batch_index * 3 + 1)
            contiguous = tl.load(SequenceBounds + batch_index * 3 + 2) != 0
            first = tl.minimum(tl.maximum(first, 0), max_seqlen)
            seqlen = tl.minimum(tl.maximum(seqlen, first), max_seqlen)
        elif HAS_LENGTHS:
            seqlen = tl.load(SequenceBounds + batch_index)
            seqlen = tl.minimum(tl.maximum(seqlen, 0), max_seqlen)
        else:
            seqlen = max_seqlen
        owned_rows = max_seqlen
    return start, first, seqlen, contiguous, owned_rows


@triton.jit
def _program_prologue(SequenceBounds, DropoutSeed, total_tokens, max_seqlen,
                      IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
                      HAS_DROPOUT: tl.constexpr):
    """What every program starts with. Grid (row blocks, heads, sequences).

    Returns (row block, head, batch index, batch * heads + head, first token (int64),
    first valid, end of valid, contiguous, rows owned, dropout seed).
    """
    block_index = tl.program_id(0)
    head_index = tl.program_id(1)
    batch_index = tl.program_id(2)
    batch_head = batch_index * tl.num_programs(1) + head_index
    start, first, seqlen, contiguous, owned_rows = _sequence_bounds(
        SequenceBounds, batch_index, max_seqlen, total_tokens, IS_VARLEN, HAS_LENGTHS, HAS_KEY_MASK)
    if HAS_DROPOUT:
        dropout_seed = tl.load(DropoutSeed)
    else:
        dropout_seed = 0
    return (block_index, head_index, batch_index, batch_head, start.to(tl.int64), first, seqlen, contiguous,
            owned_rows, dropout_seed)


@triton.jit
def _head_base(Base, start, head_index, stride_token, stride_head):
    """Pointer to token 0 of this sequence, this head. Callers add the row and column
    offsets to it one after the other (pointer + rows + columns): summing the offsets
    first cost ptxas up to 7 more registers in the sm_90 compile check."""
    return Base + start * stride_token + head_index * stride_head


@triton.jit
def _rows_valid(mask_row, offs, first, end, MASK: tl.constexpr):
    """Which of the rows `offs` are valid tokens (see the MASK_* constants)."""
    if MASK == MASK_FROM_MEMORY:
        in_range = (offs >= first) & (offs < end)
        valid = in_range & (tl.load(mask_row + offs, mask=in_range, other=0) != 0)
    else:
        valid = offs < end
    return valid


@triton.jit
def _masked_schedule(first, end, contiguous, BLOCK: tl.constexpr):
    """Loop plan over the blocks of `[first, end)` for the any-mask layout: two loops, like
    the other layouts (more loops would cost shared memory for their pipelines).

    Returns (whole_start, whole_end, edge_start, edge_end, gap_at, gap): blocks in
    `[whole_start, whole_end)` are all valid (contiguous rows only) and need no mask; the
    edge loop steps over `[edge_start, edge_end)`, adding `gap` to block starts >= gap_at,
    and reads the mask. A contiguous run's edge blocks are its first and last partial
    blocks (zero, one or two); any other row's are all blocks of `[first, end)`. The whole
    blocks come first, so the first block visited always holds a valid key.
    """
    first_block = (first // BLOCK) * BLOCK
    aligned_start = tl.cdiv(first, BLOCK) * BLOCK
    aligned_end = (end // BLOCK) * BLOCK
    has_head = (first_block < aligned_start).to(tl.int32)
    has_tail = ((aligned_end < end) & (aligned_end >= aligned_start)).to(tl.int32)
    run_edge_start = tl.where(has_head != 0, first_block, aligned_end)
    whole_start = tl.where(contiguous, aligned_start, 0)
    whole_end = tl.where(contiguous, tl.maximum(aligned_end, aligned_start), 0)
    edge_start = tl.where(contiguous, run_edge_start, first_block)
    edge_end = tl.where(contiguous, run_edge_start + (has_head + has_tail) * BLOCK, tl.cdiv(end, BLOCK) * BLOCK)
    gap_at = edge_start + BLOCK
    gap = tl.where(contiguous, aligned_end - first_block - BLOCK, 0)
    return whole_start, whole_end, edge_start, edge_end, gap_at, gap


@triton.jit
def _none_valid(valid):
    return tl.max(valid.to(tl.int32), 0) == 0


@triton.jit
def _mask_row(KeyMask, start, HAS_KEY_MASK: tl.constexpr):
    """This sequence's row of the (batch, seq) key mask (KeyMask is None without a mask)."""
    if HAS_KEY_MASK:
        row = KeyMask + start
    else:
        row = KeyMask
    return row


@triton.jit
def _load_rows(ptrs, row_valid, offs_d,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASK_ROWS: tl.constexpr):
    """Load a (rows, BLOCK_D) tile; invalid rows and padded head-dim columns read 0."""
    if MASK_ROWS:
        if BLOCK_D == HEAD_DIM:
            tile = tl.load(ptrs, mask=row_valid[:, None], other=0.0)
        else:
            tile = tl.load(ptrs, mask=row_valid[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    else:
        if BLOCK_D == HEAD_DIM:
            tile = tl.load(ptrs)
        else:
            tile = tl.load(ptrs, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    return tile


@triton.jit
def _store_rows(ptrs, tile, row_valid, row_owned, offs_d,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Store the owned rows; owned rows that are not valid (padding) get zeros."""
    tile = tl.where(row_valid[:, None], tile, 0.0)
    mask = row_owned[:, None]
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


# ---------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------

@triton.jit
def _forward_inner(acc, row_sum, row_max, q, k_base, v_base, mask_row, stride_k_token, stride_v_token,
                   offs_m, offs_d, key_start, key_end, gap_at, gap, first, seqlen, qk_scale_log2,
                   dropout_seed, batch_head, max_seqlen, dropout_p,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                   MASK_KEYS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                   DOT_IN_FP32: tl.constexpr):
    """Online-softmax accumulation over key blocks `[key_start, key_end)`.

    The first block visited must hold a valid key (callers start at the block of the first
    valid key), so the running maximum is finite from then on."""
    for block_start in range(key_start, key_end, BLOCK_N):
        if MASK_KEYS == MASK_FROM_MEMORY:
            block_start += (block_start >= gap_at).to(tl.int32) * gap
        block_start = tl.multiple_of(block_start, BLOCK_N)
        offs_n = block_start + tl.arange(0, BLOCK_N)
        key_valid = _rows_valid(mask_row, offs_n, first, seqlen, MASK_KEYS)
        k = _load_rows(k_base + offs_n[:, None] * stride_k_token + offs_d[None, :], key_valid,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_KEYS != MASK_NONE)
        scores = _dot(q, tl.trans(k), None, DOT_IN_FP32)  # (BLOCK_M, BLOCK_N), unscaled
        if MASK_KEYS != MASK_NONE:
            scores = tl.where(key_valid[None, :], scores, float("-inf"))
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
        v = _load_rows(v_base + offs_n[:, None] * stride_v_token + offs_d[None, :], key_valid,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_KEYS != MASK_NONE)
        acc = acc * correction[:, None]
        acc = _dot(probs.to(v.dtype), v, acc, DOT_IN_FP32)
        row_max = new_max
    return acc, row_sum, row_max


@triton.jit
def _attention_forward_kernel(
        Q, K, V, Out, SequenceBounds, KeyMask, DropoutSeed,
        stride_q_token, stride_q_head, stride_k_token, stride_k_head,
        stride_v_token, stride_v_head, stride_o_token, stride_o_head,
        LseLog2, stride_lse_head, total_tokens, max_seqlen, qk_scale_log2, softmax_scale, dropout_p,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
        HAS_DROPOUT: tl.constexpr, DOT_IN_FP32: tl.constexpr):
    """One program: BLOCK_M query rows of one (sequence, head). Grid (m blocks, heads, batch)."""
    (block_m, head_index, batch_index, batch_head, start, first, seqlen, contiguous, owned_rows,
     dropout_seed) = _program_prologue(SequenceBounds, DropoutSeed, total_tokens, max_seqlen,
                                       IS_VARLEN, HAS_LENGTHS, HAS_KEY_MASK, HAS_DROPOUT)
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_row = _mask_row(KeyMask, start, HAS_KEY_MASK)
    o_ptrs = _head_base(Out, start, head_index, stride_o_token, stride_o_head) \
        + offs_m[:, None] * stride_o_token + offs_d[None, :]
    lse_ptrs = LseLog2 + head_index * stride_lse_head + start + offs_m
    row_owned = offs_m < owned_rows
    if HAS_KEY_MASK:
        query_valid = _rows_valid(mask_row, offs_m, first, seqlen, MASK_FROM_MEMORY)
        no_query = _none_valid(query_valid)
    else:
        query_valid = offs_m < seqlen
        no_query = block_m * BLOCK_M >= seqlen
    if no_query:
        # No valid row here: only padded layouts own these rows. They get zero output and
        # lse = -inf (the log-sum-exp of no keys), so every output is defined.
        if not IS_VARLEN:
            _store_rows(o_ptrs, tl.zeros([BLOCK_M, BLOCK_D], tl.float32), query_valid, row_owned,
                        offs_d, HEAD_DIM, BLOCK_D)
            tl.store(lse_ptrs, tl.full([BLOCK_M], float("-inf"), tl.float32), mask=row_owned)
        return

    q_base = _head_base(Q, start, head_index, stride_q_token, stride_q_head)
    q = _load_rows(q_base + offs_m[:, None] * stride_q_token + offs_d[None, :], query_valid, offs_d,
                   HEAD_DIM, BLOCK_D, True)
    k_base = _head_base(K, start, head_index, stride_k_token, stride_k_head)
    v_base = _head_base(V, start, head_index, stride_v_token, stride_v_head)

    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    if HAS_KEY_MASK:
        whole_start, whole_end, edge_start, edge_end, gap_at, gap = _masked_schedule(
            first, seqlen, contiguous, BLOCK_N)
        acc, row_sum, row_max = _forward_inner(
            acc, row_sum, row_max, q, k_base, v_base, mask_row, stride_k_token, stride_v_token, offs_m, offs_d,
            whole_start, whole_end, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head, max_seqlen,
            dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, MASK_NONE, HAS_DROPOUT, DOT_IN_FP32)
        acc, row_sum, row_max = _forward_inner(
            acc, row_sum, row_max, q, k_base, v_base, mask_row, stride_k_token, stride_v_token, offs_m, offs_d,
            edge_start, edge_end, gap_at, gap, first, seqlen, qk_scale_log2, dropout_seed, batch_head, max_seqlen,
            dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, MASK_FROM_MEMORY, HAS_DROPOUT, DOT_IN_FP32)
    else:
        full_end = (seqlen // BLOCK_N) * BLOCK_N
        acc, row_sum, row_max = _forward_inner(
            acc, row_sum, row_max, q, k_base, v_base, mask_row, stride_k_token, stride_v_token, offs_m, offs_d,
            0, full_end, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head, max_seqlen,
            dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, MASK_NONE, HAS_DROPOUT, DOT_IN_FP32)
        acc, row_sum, row_max = _forward_inner(
            acc, row_sum, row_max, q, k_base, v_base, mask_row, stride_k_token, stride_v_token, offs_m, offs_d,
            full_end, seqlen, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head, max_seqlen,
            dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, MASK_BELOW_END, HAS_DROPOUT, DOT_IN_FP32)

    # row_sum >= 1 on every row: valid rows include their own maximum, and invalid rows
    # loaded q = 0 (finite scores), so nothing here divides by zero.
    if HAS_DROPOUT:
        acc = acc * (1.0 / (1.0 - dropout_p))
    acc = acc / row_sum[:, None]
    _store_rows(o_ptrs, acc, query_valid, row_owned, offs_d, HEAD_DIM, BLOCK_D)
    lse_log2 = tl.where(query_valid, row_max + tl.math.log2(row_sum), float("-inf"))
    tl.store(lse_ptrs, lse_log2, mask=row_owned)


# ---------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------

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
def _backward_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, mask_row,
                         stride_q_token, stride_do_token, offs_n, offs_d,
                         query_start, query_end, gap_at, gap, first, seqlen, qk_scale_log2,
                         dropout_seed, batch_head, max_seqlen, dropout_p,
                         HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                         MASK_QUERIES: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                         DOT_IN_FP32: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks `[query_start, query_end)`.

    Works on transposed tiles (keys x queries) so that the sums over queries are plain
    `tl.dot(..., q)` / `tl.dot(..., dout)` products.
    """
    for block_start in range(query_start, query_end, BLOCK_M):
        if MASK_QUERIES == MASK_FROM_MEMORY:
            block_start += (block_start >= gap_at).to(tl.int32) * gap
        block_start = tl.multiple_of(block_start, BLOCK_M)
        offs_m = block_start + tl.arange(0, BLOCK_M)
        query_valid = _rows_valid(mask_row, offs_m, first, seqlen, MASK_QUERIES)
        q = _load_rows(q_base + offs_m[:, None] * stride_q_token + offs_d[None, :], query_valid,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_QUERIES != MASK_NONE)
        dout = _load_rows(do_base + offs_m[:, None] * stride_do_token + offs_d[None, :], query_valid,
                          offs_d, HEAD_DIM, BLOCK_D, MASK_QUERIES != MASK_NONE)
        if MASK_QUERIES != MASK_NONE:
            lse = tl.load(lse_base + offs_m, mask=query_valid, other=0.0)
            delta = tl.load(delta_base + offs_m, mask=query_valid, other=0.0)
        else:
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        scores_t = _dot(k, tl.trans(q), None, DOT_IN_FP32) * qk_scale_log2  # (BLOCK_N, BLOCK_M)
        probs_t = tl.math.exp2(scores_t - lse[None, :])
        if MASK_QUERIES != MASK_NONE:
            probs_t = tl.where(query_valid[None, :], probs_t, 0.0)
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
        Q, K, V, DOut, DK, DV, SequenceBounds, KeyMask, DropoutSeed,
        stride_q_token, stride_q_head, stride_k_token, stride_k_head, stride_v_token, stride_v_head,
        stride_do_token, stride_do_head, stride_dk_token, stride_dk_head, stride_dv_token, stride_dv_head,
        LseLog2, Delta, stride_lse_head, total_tokens, max_seqlen, qk_scale_log2, softmax_scale, dropout_p,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
        HAS_DROPOUT: tl.constexpr, DOT_IN_FP32: tl.constexpr):
    """One program: dK, dV for BLOCK_N keys of one (sequence, head). Grid (n blocks, heads, batch)."""
    (block_n, head_index, batch_index, batch_head, start, first, seqlen, contiguous, owned_rows,
     dropout_seed) = _program_prologue(SequenceBounds, DropoutSeed, total_tokens, max_seqlen,
                                       IS_VARLEN, HAS_LENGTHS, HAS_KEY_MASK, HAS_DROPOUT)
    offs_n = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_row = _mask_row(KeyMask, start, HAS_KEY_MASK)
    dk_ptrs = _head_base(DK, start, head_index, stride_dk_token, stride_dk_head) \
        + offs_n[:, None] * stride_dk_token + offs_d[None, :]
    dv_ptrs = _head_base(DV, start, head_index, stride_dv_token, stride_dv_head) \
        + offs_n[:, None] * stride_dv_token + offs_d[None, :]
    row_owned = offs_n < owned_rows
    if HAS_KEY_MASK:
        key_valid = _rows_valid(mask_row, offs_n, first, seqlen, MASK_FROM_MEMORY)
        no_key = _none_valid(key_valid)
    else:
        key_valid = offs_n < seqlen
        no_key = block_n * BLOCK_N >= seqlen
    if no_key:
        if not IS_VARLEN:
            zeros = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
            _store_rows(dk_ptrs, zeros, key_valid, row_owned, offs_d, HEAD_DIM, BLOCK_D)
            _store_rows(dv_ptrs, zeros, key_valid, row_owned, offs_d, HEAD_DIM, BLOCK_D)
        return

    k_base = _head_base(K, start, head_index, stride_k_token, stride_k_head)
    v_base = _head_base(V, start, head_index, stride_v_token, stride_v_head)
    k = _load_rows(k_base + offs_n[:, None] * stride_k_token + offs_d[None, :], key_valid, offs_d,
                   HEAD_DIM, BLOCK_D, True)
    v = _load_rows(v_base + offs_n[:, None] * stride_v_token + offs_d[None, :], key_valid, offs_d,
                   HEAD_DIM, BLOCK_D, True)
    q_base = _head_base(Q, start, head_index, stride_q_token, stride_q_head)
    do_base = _head_base(DOut, start, head_index, stride_do_token, stride_do_head)
    lse_base = LseLog2 + head_index * stride_lse_head + start
    delta_base = Delta + head_index * stride_lse_head + start

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    if HAS_KEY_MASK:
        whole_start, whole_end, edge_start, edge_end, gap_at, gap = _masked_schedule(
            first, seqlen, contiguous, BLOCK_M)
        dk, dv = _backward_dkdv_inner(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, mask_row, stride_q_token, stride_do_token,
            offs_n, offs_d, whole_start, whole_end, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head,
            max_seqlen,
            dropout_p, HEAD_DIM, BLOCK_D, BLOCK_M, MASK_NONE, HAS_DROPOUT, DOT_IN_FP32)
        dk, dv = _backward_dkdv_inner(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, mask_row, stride_q_token, stride_do_token,
            offs_n, offs_d, edge_start, edge_end, gap_at, gap, first, seqlen, qk_scale_log2, dropout_seed, batch_head,
            max_seqlen,
            dropout_p, HEAD_DIM, BLOCK_D, BLOCK_M, MASK_FROM_MEMORY, HAS_DROPOUT,
            DOT_IN_FP32)
    else:
        full_end = (seqlen // BLOCK_M) * BLOCK_M
        dk, dv = _backward_dkdv_inner(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, mask_row, stride_q_token, stride_do_token,
            offs_n, offs_d, 0, full_end, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head, max_seqlen,
            dropout_p, HEAD_DIM, BLOCK_D, BLOCK_M, MASK_NONE, HAS_DROPOUT, DOT_IN_FP32)
        dk, dv = _backward_dkdv_inner(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, mask_row, stride_q_token, stride_do_token,
            offs_n, offs_d, full_end, seqlen, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head, max_seqlen,
            dropout_p, HEAD_DIM, BLOCK_D, BLOCK_M, MASK_BELOW_END, HAS_DROPOUT, DOT_IN_FP32)
    # Scores were softmax_scale * q.k, so dK picks up that factor once here.
    _store_rows(dk_ptrs, dk * softmax_scale, key_valid, row_owned, offs_d, HEAD_DIM, BLOCK_D)
    _store_rows(dv_ptrs, dv, key_valid, row_owned, offs_d, HEAD_DIM, BLOCK_D)


@triton.jit
def _backward_dq_inner(dq, q, dout, lse, delta, k_base, v_base, mask_row, stride_k_token, stride_v_token,
                       offs_m, offs_d, key_start, key_end, gap_at, gap, first, seqlen, qk_scale_log2,
                       dropout_seed, batch_head, max_seqlen, dropout_p,
                       HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                       MASK_KEYS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                       DOT_IN_FP32: tl.constexpr):
    """Accumulate dQ of one query block over key blocks `[key_start, key_end)`."""
    for block_start in range(key_start, key_end, BLOCK_N):
        if MASK_KEYS == MASK_FROM_MEMORY:
            block_start += (block_start >= gap_at).to(tl.int32) * gap
        block_start = tl.multiple_of(block_start, BLOCK_N)
        offs_n = block_start + tl.arange(0, BLOCK_N)
        key_valid = _rows_valid(mask_row, offs_n, first, seqlen, MASK_KEYS)
        k = _load_rows(k_base + offs_n[:, None] * stride_k_token + offs_d[None, :], key_valid,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_KEYS != MASK_NONE)
        v = _load_rows(v_base + offs_n[:, None] * stride_v_token + offs_d[None, :], key_valid,
                       offs_d, HEAD_DIM, BLOCK_D, MASK_KEYS != MASK_NONE)
        scores = _dot(q, tl.trans(k), None, DOT_IN_FP32) * qk_scale_log2
        probs = tl.math.exp2(scores - lse[:, None])
        if MASK_KEYS != MASK_NONE:
            probs = tl.where(key_valid[None, :], probs, 0.0)
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
        Q, K, V, DOut, DQ, SequenceBounds, KeyMask, DropoutSeed,
        stride_q_token, stride_q_head, stride_k_token, stride_k_head, stride_v_token, stride_v_head,
        stride_do_token, stride_do_head, stride_dq_token, stride_dq_head,
        LseLog2, Delta, stride_lse_head, total_tokens, max_seqlen, qk_scale_log2, softmax_scale, dropout_p,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
        HAS_DROPOUT: tl.constexpr, DOT_IN_FP32: tl.constexpr):
    """One program: dQ for BLOCK_M queries of one (sequence, head). Grid (m blocks, heads, batch)."""
    (block_m, head_index, batch_index, batch_head, start, first, seqlen, contiguous, owned_rows,
     dropout_seed) = _program_prologue(SequenceBounds, DropoutSeed, total_tokens, max_seqlen,
                                       IS_VARLEN, HAS_LENGTHS, HAS_KEY_MASK, HAS_DROPOUT)
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_row = _mask_row(KeyMask, start, HAS_KEY_MASK)
    dq_ptrs = _head_base(DQ, start, head_index, stride_dq_token, stride_dq_head) \
        + offs_m[:, None] * stride_dq_token + offs_d[None, :]
    row_owned = offs_m < owned_rows
    if HAS_KEY_MASK:
        query_valid = _rows_valid(mask_row, offs_m, first, seqlen, MASK_FROM_MEMORY)
        no_query = _none_valid(query_valid)
    else:
        query_valid = offs_m < seqlen
        no_query = block_m * BLOCK_M >= seqlen
    if no_query:
        if not IS_VARLEN:
            _store_rows(dq_ptrs, tl.zeros([BLOCK_M, BLOCK_D], tl.float32), query_valid, row_owned,
                        offs_d, HEAD_DIM, BLOCK_D)
        return

    q_base = _head_base(Q, start, head_index, stride_q_token, stride_q_head)
    do_base = _head_base(DOut, start, head_index, stride_do_token, stride_do_head)
    q = _load_rows(q_base + offs_m[:, None] * stride_q_token + offs_d[None, :], query_valid, offs_d,
                   HEAD_DIM, BLOCK_D, True)
    dout = _load_rows(do_base + offs_m[:, None] * stride_do_token + offs_d[None, :], query_valid, offs_d,
                      HEAD_DIM, BLOCK_D, True)
    lse = tl.load(LseLog2 + head_index * stride_lse_head + start + offs_m, mask=query_valid, other=0.0)
    delta = tl.load(Delta + head_index * stride_lse_head + start + offs_m, mask=query_valid, other=0.0)
    k_base = _head_base(K, start, head_index, stride_k_token, stride_k_head)
    v_base = _head_base(V, start, head_index, stride_v_token, stride_v_head)

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if HAS_KEY_MASK:
        whole_start, whole_end, edge_start, edge_end, gap_at, gap = _masked_schedule(
            first, seqlen, contiguous, BLOCK_N)
        dq = _backward_dq_inner(
            dq, q, dout, lse, delta, k_base, v_base, mask_row, stride_k_token, stride_v_token, offs_m, offs_d,
            whole_start, whole_end, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head,
            max_seqlen, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, MASK_NONE, HAS_DROPOUT, DOT_IN_FP32)
        dq = _backward_dq_inner(
            dq, q, dout, lse, delta, k_base, v_base, mask_row, stride_k_token, stride_v_token, offs_m, offs_d,
            edge_start, edge_end, gap_at, gap, first, seqlen, qk_scale_log2, dropout_seed, batch_head,
            max_seqlen, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, MASK_FROM_MEMORY, HAS_DROPOUT, DOT_IN_FP32)
    else:
        full_end = (seqlen // BLOCK_N) * BLOCK_N
        dq = _backward_dq_inner(
            dq, q, dout, lse, delta, k_base, v_base, mask_row, stride_k_token, stride_v_token, offs_m, offs_d,
            0, full_end, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head,
            max_seqlen, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, MASK_NONE, HAS_DROPOUT, DOT_IN_FP32)
        dq = _backward_dq_inner(
            dq, q, dout, lse, delta, k_base, v_base, mask_row, stride_k_token, stride_v_token, offs_m, offs_d,
            full_end, seqlen, 0, 0, first, seqlen, qk_scale_log2, dropout_seed, batch_head,
            max_seqlen, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, MASK_BELOW_END, HAS_DROPOUT, DOT_IN_FP32)
    _store_rows(dq_ptrs, dq * softmax_scale, query_valid, row_owned, offs_d, HEAD_DIM, BLOCK_D)


# ---------------------------------------------------------------------------------------
# Launch tables: (BLOCK_M, BLOCK_N, num_warps, num_stages) keyed by (padded head dim 64 or
# 128, has dropout). Fixed tiles keep results deterministic run to run. Tile shapes follow
# the FA2 Triton tutorial (forward 128 x 64; dK/dV 128 keys per program stepping over
# queries; dQ 128 queries stepping over 32 keys); warps and stages were picked from an
# sm_90 ahead-of-time compile sweep (`bench_attention.py --aot-compile-check`): ptxas
# reports no register spills for padded head dims <= 64 (at most 16 bytes for 128) and
# shared memory <= 128 KB of H100's 227 KB. Not yet timed on a GPU:
# `benchmarks/bench_attention.py --sweep-configs` times alternative tables passed to the
# launchers (`launch_table=`). The interpreter uses 16-wide tiles (the smallest `tl.dot`
# accepts) so that short test sequences still cross block boundaries.
# ---------------------------------------------------------------------------------------

class Tile(NamedTuple):
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


@dataclasses.dataclass(frozen=True)
class LaunchTable:
    """Tiles per kernel, keyed by (64 or 128: the head dim rounded up, has dropout).

    forward: BLOCK_M queries per program, BLOCK_N keys per inner step.
    backward_dkdv: BLOCK_N keys per program, BLOCK_M queries per inner step.
    backward_dq: BLOCK_M queries per program, BLOCK_N keys per inner step.
    """

    forward: Mapping[tuple, Tile]
    backward_dkdv: Mapping[tuple, Tile]
    backward_dq: Mapping[tuple, Tile]

    def tile(self, kernel: str, block_d: int, has_dropout: bool) -> Tile:
        return getattr(self, kernel)[(64 if block_d <= 64 else 128, has_dropout)]

    def replace(self, kernel: str, key: tuple, tile) -> "LaunchTable":
        """A copy with one entry changed (for sweeps); this table stays as it is."""
        return dataclasses.replace(self, **{kernel: {**getattr(self, kernel), key: Tile(*tile)}})


def _uniform(forward, backward_dkdv, backward_dq):
    keys = [(64, False), (64, True), (128, False), (128, True)]
    return {key: Tile(*forward) for key in keys}, {key: Tile(*backward_dkdv) for key in keys}, \
        {key: Tile(*backward_dq) for key in keys}


GPU_LAUNCH_TABLE = LaunchTable(
    forward={key: Tile(128, 64, 8, 3) for key in [(64, False), (64, True), (128, False), (128, True)]},
    backward_dkdv={(64, False): Tile(32, 128, 8, 3), (64, True): Tile(32, 128, 8, 3),
                   (128, False): Tile(32, 128, 8, 3), (128, True): Tile(16, 128, 8, 3)},
    backward_dq={key: Tile(128, 32, 8, 3) for key in [(64, False), (64, True), (128, False), (128, True)]},
)
INTERPRETER_LAUNCH_TABLE = LaunchTable(*_uniform((16, 16, 1, 1), (16, 16, 1, 1), (16, 16, 1, 1)))


def default_launch_table() -> LaunchTable:
    return INTERPRETER_LAUNCH_TABLE if KERNELS_INTERPRETED else GPU_LAUNCH_TABLE


# ---------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------

def _launch(kernel, tile, program_rows, tensors, strided, stats, sequence_bounds, key_mask, is_varlen,
            num_sequences, max_seqlen, softmax_scale, dropout_p, dropout_seed):
    """Launch one attention kernel over (row blocks of `program_rows`, heads, sequences).

    `tensors` are its leading pointer arguments, `strided` the (total_tokens, heads, dim)
    tensors whose (token, head) strides follow, `stats` its (heads, total_tokens) float32
    row statistics (lse, and delta in the backward).
    """
    total_tokens, num_heads, head_dim = strided[0].shape
    strides = [stride for x in strided for stride in (x.stride(0), x.stride(1))]
    kernel[(triton.cdiv(max_seqlen, program_rows), num_heads, num_sequences)](
        *tensors, sequence_bounds, key_mask, dropout_seed, *strides, *stats, stats[0].stride(0),
        total_tokens, max_seqlen, softmax_scale * _LOG2_E, softmax_scale, dropout_p,
        HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_M=tile.block_m, BLOCK_N=tile.block_n,
        IS_VARLEN=is_varlen, HAS_LENGTHS=is_varlen or sequence_bounds is not None,
        HAS_KEY_MASK=key_mask is not None, HAS_DROPOUT=dropout_p > 0.0,
        DOT_IN_FP32=KERNELS_INTERPRETED and strided[0].dtype == torch.bfloat16,
        num_warps=tile.num_warps, num_stages=tile.num_stages)


def attention_forward(q, k, v, sequence_bounds, key_mask, is_varlen, num_sequences, max_seqlen,
                      softmax_scale, dropout_p, dropout_seed, launch_table=None):
    """Launch the forward kernel.

    Args:
        q, k, v: (total_tokens, heads, head_dim), last dim contiguous.
        sequence_bounds: int32 `cu_seqlens` (num_sequences + 1,) when `is_varlen`; else
            int32 key lengths (num_sequences,), `ops.key_mask_bounds(mask)` (num_sequences,
            3) with `key_mask`, or None (every sequence full).
        key_mask: uint8 (num_sequences, max_seqlen), non-zero = valid token, or None.
        max_seqlen: padded length (padded layouts) or longest sequence (packed).
        dropout_seed: int64 tensor (1,) on the device, or None when dropout_p == 0.
        launch_table: a `LaunchTable`; None means `default_launch_table()`.
    Returns:
        out (total_tokens, heads, head_dim) in q's dtype and lse_log2 (heads,
        total_tokens) float32 (rows outside every sequence of a packed batch are not written).
    """
    total_tokens, num_heads, head_dim = q.shape
    table = launch_table or default_launch_table()
    tile = table.tile("forward", triton.next_power_of_2(head_dim), dropout_p > 0.0)
    out = torch.empty((total_tokens, num_heads, head_dim), dtype=q.dtype, device=q.device)
    lse_log2 = torch.empty((num_heads, total_tokens), dtype=torch.float32, device=q.device)
    _launch(_attention_forward_kernel, tile, tile.block_m, (q, k, v, out), (q, k, v, out), (lse_log2,),
            sequence_bounds, key_mask, is_varlen, num_sequences, max_seqlen, softmax_scale, dropout_p, dropout_seed)
    return out, lse_log2


def _backward_preprocess(out, dout):
    """delta = rowsum(dout * out): (heads, total_tokens) float32."""
    total_tokens, num_heads, head_dim = out.shape
    delta = torch.empty((num_heads, total_tokens), dtype=torch.float32, device=out.device)
    block_t = 16 if KERNELS_INTERPRETED else 128
    _attention_backward_preprocess_kernel[(triton.cdiv(total_tokens, block_t), num_heads)](
        out, dout, delta, out.stride(0), out.stride(1), dout.stride(0), dout.stride(1), delta.stride(0),
        total_tokens, HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_T=block_t,
        num_warps=1 if KERNELS_INTERPRETED else 4)
    return delta


def attention_backward(dout, q, k, v, out, lse_log2, sequence_bounds, key_mask, is_varlen, num_sequences,
                       max_seqlen, softmax_scale, dropout_p, dropout_seed, launch_table=None):
    """Launch the backward kernels (delta, then dK/dV, then dQ); arguments as in
    `attention_forward`, plus the forward's `out` and `lse_log2` and the upstream `dout`.

    Returns dq, dk, dv shaped like q, k, v (contiguous).
    """
    head_dim = q.shape[-1]
    table = launch_table or default_launch_table()
    block_d, has_dropout = triton.next_power_of_2(head_dim), dropout_p > 0.0
    delta = _backward_preprocess(out, dout)
    dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))
    launch_args = (sequence_bounds, key_mask, is_varlen, num_sequences, max_seqlen, softmax_scale, dropout_p,
                   dropout_seed)
    tile = table.tile("backward_dkdv", block_d, has_dropout)
    _launch(_attention_backward_dkdv_kernel, tile, tile.block_n, (q, k, v, dout, dk, dv),
            (q, k, v, dout, dk, dv), (lse_log2, delta), *launch_args)
    tile = table.tile("backward_dq", block_d, has_dropout)
    _launch(_attention_backward_dq_kernel, tile, tile.block_m, (q, k, v, dout, dq),
            (q, k, v, dout, dq), (lse_log2, delta), *launch_args)
    return dq, dk, dv
