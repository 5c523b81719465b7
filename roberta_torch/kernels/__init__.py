"""Optional fused kernels. Importing this package never imports Triton: the Triton
module (`flash_attn_triton`) is loaded on the first kernel launch.

The pure-torch reference and the dropout-mask rebuild (`reference`) are for tests and
debugging and are not part of this API."""

from .flash_attn import flash_attention, flash_attention_varlen
from .validation import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, triton_is_usable

__all__ = [
    "SUPPORTED_DTYPES",
    "SUPPORTED_HEAD_DIMS",
    "flash_attention",
    "flash_attention_varlen",
    "triton_is_usable",
]
