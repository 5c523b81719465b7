"""The models a server runs, behind the two things the server needs of each: tokenize (on a
thread pool, from the event loop) and run rows (on the model worker thread only).

Both run through the same public functions as the library (`TextEmbedder.tokenize` /
`embed_rows`, `CrossEncoder.tokenize` / `score_rows`), so a server's numbers are
`TextEmbedder.encode`'s and `CrossEncoder.rank`'s.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)


class EmbeddingService:
    """A TextEmbedder served under `name`."""

    lane = "embeddings"

    def __init__(self, embedder, name: str, max_batch_rows: int, max_batch_tokens: int):
        self.embedder = embedder
        self.name = name
        self.max_batch_rows = max_batch_rows
        self.max_batch_tokens = max_batch_tokens

    @property
    def dimensions(self) -> int:
        return self.embedder.embedding_dim

    @property
    def normalized(self) -> bool:
        return bool(self.embedder.config.normalize)

    @property
    def prompts(self) -> dict:
        return self.embedder.prompts

    @property
    def max_length(self) -> int:
        return self.embedder.max_seq_length

    def tokenize(self, texts: list[str], prompt_name: str | None) -> tuple[list[list[int]], int]:
        """(rows, the prompt's length): `<s>` prompt + text `</s>`, truncated as `encode` does."""
        return self.embedder.tokenize(texts, self.embedder.resolve_prompt(prompt_name))

    def run(self, rows: list[list[int]], prompt_lengths: list[int] | None) -> np.ndarray:
        """(n, dimensions) float32 embeddings, in row order (rows may carry different prompts)."""
        lengths = prompt_lengths if prompt_lengths is not None else 0
        # A server's batch is a few dozen rows of mixed lengths: one padding-free batch beats
        # cutting it into low-padding pieces (embed_rows' max_padding_fraction).
        vectors = self.embedder.embed_rows(rows, lengths, batch_size=self.max_batch_rows,
                                           max_tokens_per_batch=self.max_batch_tokens, max_padding_fraction=None)
        return vectors.cpu().numpy()


class RerankService:
    """A one-label CrossEncoder served under `name`; the worker computes raw logits, the
    activation is applied per request (TEI's `raw_scores`)."""

    lane = "rerank"

    def __init__(self, cross_encoder, name: str, max_batch_rows: int, max_batch_tokens: int):
        if cross_encoder.num_labels != 1:
            raise ValueError(
                f"A reranker needs a model with one label (a relevance score); {name!r} has "
                f"{cross_encoder.num_labels}."
            )
        self.cross_encoder = cross_encoder
        self.name = name
        self.max_batch_rows = max_batch_rows
        self.max_batch_tokens = max_batch_tokens

    @property
    def max_length(self) -> int:
        return self.cross_encoder.max_length

    def tokenize(self, query: str, texts: list[str]) -> list[list[int]]:
        return self.cross_encoder.tokenize([(query, text) for text in texts], self.cross_encoder.resolve_prompt())

    def untruncated_lengths(self, query: str, texts: list[str]) -> list[int]:
        """Each pair's length before truncation (special tokens included)."""
        tokenizer = self.cross_encoder.tokenizer
        query_length = len(tokenizer.encode_batch([query])[0])
        return [query_length + len(ids) + 4 for ids in tokenizer.encode_batch(texts)] if texts else []

    def run(self, rows: list[list[int]], extras=None) -> np.ndarray:
        """(n,) float32 raw logits, in row order."""
        logits = self.cross_encoder.score_rows(rows, activation_fn="identity", batch_size=self.max_batch_rows,
                                               max_tokens_per_batch=self.max_batch_tokens, max_padding_fraction=None)
        return logits.cpu().numpy()

    def activate(self, logits: np.ndarray) -> np.ndarray:
        """The model's activation on raw logits (what `CrossEncoder.rank` reports)."""
        scores = self.cross_encoder.activation_fn(torch.from_numpy(np.asarray(logits, dtype=np.float32))[:, None])
        return scores[:, 0].numpy()


def load_services(settings) -> tuple[EmbeddingService | None, RerankService | None]:
    """Load the models `settings` name (once per process)."""
    from ..embedding import TextEmbedder
    from ..reranking import CrossEncoder

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    kwargs = settings.backbone_kwargs()
    embedding = rerank = None
    if settings.model is not None:
        embedder = TextEmbedder.from_preset(settings.model, allow_pickle=settings.allow_pickle, **kwargs)
        embedding = EmbeddingService(embedder, settings.served_model_name, settings.max_batch_rows,
                                     settings.max_batch_tokens)
        logger.info("Serving embeddings of %s as %r (%d dimensions).", settings.model, embedding.name,
                    embedding.dimensions)
    if settings.reranker is not None:
        cross_encoder = CrossEncoder.from_preset(settings.reranker, allow_pickle=settings.allow_pickle, **kwargs)
        rerank = RerankService(cross_encoder, settings.served_reranker_name, settings.max_batch_rows,
                               settings.max_batch_tokens)
        logger.info("Serving reranking with %s as %r.", settings.reranker, rerank.name)
    return embedding, rerank
