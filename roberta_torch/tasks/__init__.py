"""Task models: a backbone plus keras_hub's / transformers' heads, with presets."""

from .base import Task
from .masked_lm import RobertaMaskedLM, XLMRobertaMaskedLM
from .outputs import TaskOutput
from .preprocessors import (
    MaskedLMPreprocessor,
    RobertaMaskedLMPreprocessor,
    RobertaTextClassifierPreprocessor,
    TextClassifierPreprocessor,
    XLMRobertaMaskedLMPreprocessor,
    XLMRobertaTextClassifierPreprocessor,
)
from .question_answerer import RobertaQuestionAnswerer, XLMRobertaQuestionAnswerer
from .text_classifier import RobertaTextClassifier, XLMRobertaTextClassifier
from .token_classifier import RobertaTokenClassifier, XLMRobertaTokenClassifier

__all__ = [
    "Task",
    "TaskOutput",
    "RobertaTextClassifier",
    "XLMRobertaTextClassifier",
    "RobertaMaskedLM",
    "XLMRobertaMaskedLM",
    "RobertaTokenClassifier",
    "XLMRobertaTokenClassifier",
    "RobertaQuestionAnswerer",
    "XLMRobertaQuestionAnswerer",
    "TextClassifierPreprocessor",
    "RobertaTextClassifierPreprocessor",
    "XLMRobertaTextClassifierPreprocessor",
    "MaskedLMPreprocessor",
    "RobertaMaskedLMPreprocessor",
    "XLMRobertaMaskedLMPreprocessor",
]
