"""roberta_torch: keras_hub's RoBERTa / XLM-RoBERTa backbones as plain torch.nn.Modules."""

from .backbone import Backbone, RobertaBackbone, XLMRobertaBackbone
from .dtype_policy import DTypePolicy, get_dtype_policy

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "RobertaBackbone",
    "XLMRobertaBackbone",
    "DTypePolicy",
    "get_dtype_policy",
    "__version__",
]
