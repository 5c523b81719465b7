"""roberta_torch: keras_hub's RoBERTa / XLM-RoBERTa backbones as plain torch.nn.Modules."""

from .backbone import Backbone, RobertaBackbone, XLMRobertaBackbone
from .dtype_policy import DTypePolicy, get_dtype_policy
from .kernels import flash_attention, flash_attention_varlen
from .packing import pack_padded_batch, pack_sequences
from .preprocessor import Preprocessor, RobertaPreprocessor, XLMRobertaPreprocessor
from .tokenizers import RobertaTokenizer, Tokenizer, XLMRobertaTokenizer

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "RobertaBackbone",
    "XLMRobertaBackbone",
    "DTypePolicy",
    "get_dtype_policy",
    "flash_attention",
    "flash_attention_varlen",
    "pack_sequences",
    "pack_padded_batch",
    "Tokenizer",
    "RobertaTokenizer",
    "XLMRobertaTokenizer",
    "Preprocessor",
    "RobertaPreprocessor",
    "XLMRobertaPreprocessor",
    "__version__",
]
