"""Cross-encoder rerankers on the text classifier: CrossEncoder (its settings are read by the
preset loaders: `PresetLoader.cross_encoder_config()`)."""

from ..presets.cross_encoder_config import CrossEncoderConfig
from .cross_encoder import CrossEncoder, canonicalize_pairs, ranking

__all__ = ["CrossEncoder", "CrossEncoderConfig", "canonicalize_pairs", "ranking"]
