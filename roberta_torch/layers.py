"""The encoder's building blocks, in reading order.

Every block accepts either padded activations `(batch, seq, hidden)` or packed ones
`(total_tokens, hidden)`: dense layers do not care, and attention is told which by the
`AttentionMask` (see attention.py). The computation is keras_hub's TransformerEncoder:
post-LayerNorm, exact GELU, LayerNorm epsilon 1e-5, dropout after attention probabilities and
on both residual branches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import dense
from .attention import AttentionMask, self_attention
from .initializers import INITIALIZER_STDDEV, truncated_normal_

LAYER_NORM_EPSILON = 1e-5


def init_kernel_(tensor: torch.Tensor) -> torch.Tensor:
    """Keras's default for kernels and embeddings: TruncatedNormal(stddev=0.02)."""
    return truncated_normal_(tensor, std=INITIALIZER_STDDEV)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm whose statistics and affine transform are computed in at least float32 for
    any input dtype (float64 stays float64), returned in the input dtype (Keras's
    LayerNormalization under low precision).

    torch's CPU and CUDA layer_norm kernels already accumulate bfloat16/float16 inputs in
    float32 ("opmath"), so casting the activations up and back would only add two copies.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if weight.dtype != x.dtype and x.device.type != "cpu":
            # Low-precision input with float32 parameters is a CPU kernel; elsewhere match.
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class Linear(nn.Linear):
    """nn.Linear that runs in its input's dtype: mixed policies keep float32 weights and
    compute in bfloat16/float16, like Keras's autocasting. Under `torch.autocast` it runs in
    the autocast dtype, the residual add included."""

    def reset_parameters(self) -> None:
        init_kernel_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(
        self,
        x: torch.Tensor,
        activation: str | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """activation(x W^T + b) [+ residual], the epilogue fused where possible."""
        x, residual = dense.autocast_operands(x, residual)
        weight, bias = self.weight, self.bias
        if weight.dtype != x.dtype:
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        return dense.linear(x, weight, bias, activation=activation, residual=residual)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.dropout = dropout
        self.qkv = Linear(hidden_dim, 3 * hidden_dim)  # rows: [query; key; value]
        self.output = Linear(hidden_dim, hidden_dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: AttentionMask,
        backend: str | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention output, plus `residual` when given (fused into the output projection)."""
        # x: (B, T, H) padded or (total, H) packed; "..." below is (B, T) or (total,).
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))  # (..., 3, N, D)
        q, k, v = qkv.unbind(dim=-3)  # each (..., N, D)
        dropout_p = self.dropout if self.training else 0.0
        context = self_attention(q, k, v, mask, dropout_p=dropout_p, backend=backend)
        return self.output(context.flatten(-2), residual=residual)  # (..., H)


class FeedForward(nn.Module):
    """W2 gelu(W1 x), exact (erf) GELU as in Keras."""

    def __init__(self, hidden_dim: int, intermediate_dim: int):
        super().__init__()
        self.intermediate = Linear(hidden_dim, intermediate_dim)
        self.output = Linear(intermediate_dim, hidden_dim)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.intermediate(x, activation="gelu"), residual=residual)


class TransformerEncoderLayer(nn.Module):
    """x = LN(x + dropout(attn(x))); x = LN(x + dropout(ffn(x)))."""

    def __init__(self, hidden_dim: int, num_heads: int, intermediate_dim: int, dropout: float):
        super().__init__()
        self.attention = SelfAttention(hidden_dim, num_heads, dropout)
        self.attention_layer_norm = LayerNorm32(hidden_dim, eps=LAYER_NORM_EPSILON)
        self.feedforward = FeedForward(hidden_dim, intermediate_dim)
        self.feedforward_layer_norm = LayerNorm32(hidden_dim, eps=LAYER_NORM_EPSILON)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: AttentionMask, backend: str | None = None
    ) -> torch.Tensor:
        if self.training and self.dropout.p > 0.0:
            x = self.attention_layer_norm(x + self.dropout(self.attention(x, mask, backend)))
            return self.feedforward_layer_norm(x + self.dropout(self.feedforward(x)))
        # No dropout: let the output projections add the residual in their epilogue.
        x = self.attention_layer_norm(self.attention(x, mask, backend, residual=x))
        return self.feedforward_layer_norm(self.feedforward(x, residual=x))
