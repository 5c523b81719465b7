"""Sentence embeddings on the backbone: TextEmbedder, pooling, sentence-transformers files, bge-m3."""

from .bge_m3 import BGEM3Heads, colbert_score, dense_score, hybrid_scores, lexical_matching_score
from .pooling import POOLING_MODES, pool
from ..presets.embedding_config import EmbeddingConfig
from .text_embedder import TextEmbedder, quantize, read_embedding_config

__all__ = [
    "TextEmbedder",
    "EmbeddingConfig",
    "read_embedding_config",
    "POOLING_MODES",
    "pool",
    "quantize",
    "BGEM3Heads",
    "dense_score",
    "lexical_matching_score",
    "colbert_score",
    "hybrid_scores",
]
