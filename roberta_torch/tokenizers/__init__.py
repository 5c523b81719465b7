"""Tokenizers matching keras_hub's RoBERTa / XLM-RoBERTa tokenizers id for id.

`RobertaTokenizer` (byte-level BPE, via the `tokenizers` library) and
`XLMRobertaTokenizer` (sentencepiece with fairseq's ids, via `sentencepiece`).
`Tokenizer.from_preset(preset)` returns whichever one the preset holds. The
third-party libraries are imported only when a tokenizer is built.
"""

from .base import Tokenizer
from .roberta_tokenizer import RobertaTokenizer
from .xlm_roberta_tokenizer import XLMRobertaTokenizer

__all__ = ["Tokenizer", "RobertaTokenizer", "XLMRobertaTokenizer"]
