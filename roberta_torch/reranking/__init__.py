"""Cross-encoder rerankers on the text classifier: CrossEncoder, its preset files."""

from .cross_encoder import CrossEncoder, canonicalize_pairs, ranking
from .cross_encoder_files import CrossEncoderConfig, read_cross_encoder_config

__all__ = ["CrossEncoder", "CrossEncoderConfig", "read_cross_encoder_config", "canonicalize_pairs", "ranking"]
