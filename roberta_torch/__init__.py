"""roberta_torch: keras_hub's RoBERTa / XLM-RoBERTa backbones as plain torch.nn.Modules."""

from .backbone import Backbone, BackboneOutput, RobertaBackbone, XLMRobertaBackbone
from .dtype_policy import DTypePolicy, get_dtype_policy
from .inputs import transformers_position_ids
from .kernels import flash_attention, flash_attention_varlen
from .packing import pack_padded_batch, pack_sequences
from .preprocessor import Preprocessor, RobertaPreprocessor, XLMRobertaPreprocessor
from .text_inputs import pad_sequences
from .presets.preset import Preset, open_preset
from .tokenizers import RobertaTokenizer, Tokenizer, XLMRobertaTokenizer
from . import peft  # adapters to and from transformers + PEFT (needs `peft` only when called)
from . import tasks
from .tasks import *  # noqa: F401,F403 (the task classes and preprocessors, see tasks.__all__)
from .embedding import TextEmbedder
from .reranking import CrossEncoder

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "RobertaBackbone",
    "XLMRobertaBackbone",
    "BackboneOutput",
    "transformers_position_ids",
    "DTypePolicy",
    "get_dtype_policy",
    "flash_attention",
    "flash_attention_varlen",
    "pack_sequences",
    "pack_padded_batch",
    "pad_sequences",
    "Tokenizer",
    "RobertaTokenizer",
    "XLMRobertaTokenizer",
    "Preprocessor",
    "RobertaPreprocessor",
    "XLMRobertaPreprocessor",
    "Preset",
    "open_preset",
    "__version__",
    "TextEmbedder",
    "CrossEncoder",
    *tasks.__all__,
]
