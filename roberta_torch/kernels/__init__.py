"""Optional fused kernels. Importing this package never imports Triton: the Triton
module (`flash_attn_triton`) is loaded on the first kernel launch."""

from .flash_attn import (
    SUPPORTED_DTYPES,
    SUPPORTED_HEAD_DIMS,
    SUPPORTS_DROPOUT,
    attention_reference,
    attention_reference_varlen,
    dropout_keep_mask,
    flash_attention,
    flash_attention_varlen,
    triton_is_usable,
)

__all__ = [
    "SUPPORTED_DTYPES",
    "SUPPORTED_HEAD_DIMS",
    "SUPPORTS_DROPOUT",
    "attention_reference",
    "attention_reference_varlen",
    "dropout_keep_mask",
    "flash_attention",
    "flash_attention_varlen",
    "triton_is_usable",
]
