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
from torch.nn.modules import module as module_hooks
from torch.nn.utils import parametrize

from . import dense, quantization
from .attention import AttentionMask, self_attention
from .initializers import INITIALIZER_STDDEV, truncated_normal_
from .tracing import is_compiling

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
    """nn.Linear (x W^T + b, nothing else) that runs in its input's dtype: mixed policies keep
    float32 weights and compute in bfloat16/float16, like Keras's autocasting. Under
    `torch.autocast` it runs in the autocast dtype."""

    def reset_parameters(self) -> None:
        init_kernel_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not has_plain_parameters(self):
            # torchao's quantized weights and other tensor subclasses: only F.linear dispatches
            # to their kernels (oneDNN's op does not know them).
            return F.linear(x, self.weight, self.bias)
        return self.forward_with_epilogue(x)

    def forward_with_epilogue(
        self,
        x: torch.Tensor,
        activation: str | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """activation(x W^T + b) [+ residual], the epilogue fused where dense.linear can (the
        residual add too runs in the autocast dtype). Called by `linear_then` only where
        nothing can tell the module's output from the epilogue's."""
        x, residual = dense.autocast_operands(x, residual)
        weight, bias = self.weight, self.bias
        if weight.dtype != x.dtype:
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        return dense.linear(x, weight, bias, activation=activation, residual=residual)


def has_plain_parameters(module: nn.Module) -> bool:
    """True when the module's own parameters are plain tensors (no tensor subclass such as
    torchao's quantized weights, which only F.linear dispatches)."""
    return all(type(p) in _PLAIN_TENSOR_TYPES for p in module._parameters.values() if p is not None)


_PLAIN_TENSOR_TYPES = (torch.Tensor, nn.Parameter)

# The module types whose epilogue form may replace `module(x)` + epilogue, and that form. Exact
# types only: a subclass may override forward.
_EPILOGUE_FORWARDS = {
    Linear: Linear.forward_with_epilogue,
    quantization.Int8Linear: quantization.Int8Linear.forward,  # takes activation/residual
}


def epilogue_is_unobservable(module: nn.Module) -> bool:
    """True when nothing outside can tell `module(x)` followed by the activation / residual
    add from one fused kernel computing both, so the fused form may run.

    That holds only for our own linear types exactly (PEFT and parametrizations replace the
    type; a user subclass may override forward) with plain parameters (torchao swaps the
    weight for a tensor subclass) and no hook of any kind on the module or globally (hooks
    see or change the module's output, or its gradients), and not under torch.compile
    (Inductor fuses the plain form itself, and it guards on none of this).
    """
    if type(module) not in _EPILOGUE_FORWARDS or is_compiling():
        return False
    if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks:
        return False
    if (
        module_hooks._global_forward_hooks
        or module_hooks._global_forward_pre_hooks
        or module_hooks._global_backward_hooks
        or module_hooks._global_backward_pre_hooks
    ):
        return False
    return not parametrize.is_parametrized(module) and has_plain_parameters(module)


def linear_then(
    module: nn.Module,
    x: torch.Tensor,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """activation(module(x)) [+ residual]; activation None or "gelu" (exact).

    `module` is any linear module (ours, or whatever PEFT, torchao or the user put in its
    place): its output is what its forward returns, and the epilogue runs after it. Where
    nothing can tell (epilogue_is_unobservable), the module's fused form runs instead.
    """
    if epilogue_is_unobservable(module):
        return _EPILOGUE_FORWARDS[type(module)](module, x, activation=activation, residual=residual)
    return dense.apply_epilogue(module(x), activation, residual)


class SelfAttention(nn.Module):
    """Multi-head self-attention: query, key, value and output projections (transformers'
    and PEFT's names for RoBERTa's attention: "query", "key", "value")."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.dropout = dropout
        self.query = Linear(hidden_dim, hidden_dim)
        self.key = Linear(hidden_dim, hidden_dim)
        self.value = Linear(hidden_dim, hidden_dim)
        self.output = Linear(hidden_dim, hidden_dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: AttentionMask,
        backend: str | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention output, plus `residual` when given (fused into the output projection
        where nothing can tell)."""
        # x: (B, T, H) padded or (total, H) packed; "..." below is (B, T) or (total,).
        # Three products, not one fused (3H, H) product: measured as fast on CPU at
        # roberta-base size, and each projection stays a module of its own.
        heads = (self.num_heads, self.head_dim)
        q = self.query(x).unflatten(-1, heads)  # (..., N, D)
        k = self.key(x).unflatten(-1, heads)
        v = self.value(x).unflatten(-1, heads)
        dropout_p = self.dropout if self.training else 0.0
        context = self_attention(q, k, v, mask, dropout_p=dropout_p, backend=backend)
        return linear_then(self.output, context.flatten(-2), residual=residual)  # (..., H)


class FeedForward(nn.Module):
    """W2 gelu(W1 x), exact (erf) GELU as in Keras."""

    def __init__(self, hidden_dim: int, intermediate_dim: int):
        super().__init__()
        self.intermediate = Linear(hidden_dim, intermediate_dim)
        self.output = Linear(intermediate_dim, hidden_dim)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        hidden = linear_then(self.intermediate, x, activation="gelu")
        return linear_then(self.output, hidden, residual=residual)


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
        # No dropout: the output projections may add the residual in their epilogue.
        x = self.attention_layer_norm(self.attention(x, mask, backend, residual=x))
        return self.feedforward_layer_norm(self.feedforward(x, residual=x))
