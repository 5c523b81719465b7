"""bge-m3's three outputs and FlagEmbedding's scores for them.

Semantics follow FlagEmbedding's `EncoderOnlyEmbedderM3ModelForInference` and `M3Embedder`
(FlagEmbedding/finetune/embedder/encoder_only/m3/modeling.py and
FlagEmbedding/inference/embedder/encoder_only/m3.py):

* dense: the first token's vector, L2-normalized;
* sparse ("lexical weights"): relu(sparse_linear(h)) per token; per token id the largest
  weight; the `<s>`, `</s>`, `<pad>` and `<unk>` ids and non-positive weights dropped;
  a dict {str(token id): weight} per text;
* ColBERT: colbert_linear(h) for every valid token but the first, each L2-normalized:
  a (length - 1, colbert_dim) array per text.

Scores: dense = dot product; sparse = sum over shared ids of the weight products; ColBERT =
mean over the query's vectors of their best dot product with the passage's vectors;
hybrid = the weighted mean of the three (weights for dense, sparse, colbert).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class BGEM3Heads(nn.Module):
    """bge-m3's sparse (hidden -> 1) and ColBERT (hidden -> colbert_dim) linear heads."""

    def __init__(self, hidden_dim: int, colbert_dim: int):
        super().__init__()
        self.sparse_linear = nn.Linear(hidden_dim, 1)
        self.colbert_linear = nn.Linear(hidden_dim, colbert_dim)

    @classmethod
    def from_state(cls, heads: dict[str, dict[str, torch.Tensor]]) -> "BGEM3Heads":
        colbert = heads["colbert_linear"]["weight"]
        module = cls(hidden_dim=colbert.shape[1], colbert_dim=colbert.shape[0])
        module.sparse_linear.load_state_dict(heads["sparse_linear"])
        module.colbert_linear.load_state_dict(heads["colbert_linear"])
        return module

    def forward(self, hidden: torch.Tensor, token_ids: torch.Tensor, padding_mask: torch.Tensor):
        """(B, T, H) -> per-text lexical weights (list of dicts) and ColBERT vectors (list of arrays)."""
        hidden = hidden.float()
        token_weights = torch.relu(self.sparse_linear(hidden)).squeeze(-1)  # (B, T)
        colbert = nn.functional.normalize(self.colbert_linear(hidden[:, 1:]), dim=-1)  # (B, T-1, D)
        lengths = padding_mask.sum(dim=1).tolist()
        return token_weights, colbert, lengths


def lexical_weights(token_weights: np.ndarray, token_ids: list[int], skip_ids) -> dict[str, float]:
    """One text's {str(id): largest weight} over its tokens, without special ids or weights <= 0."""
    result: dict[str, float] = {}
    for weight, token_id in zip(token_weights.tolist(), token_ids):
        if token_id in skip_ids or weight <= 0:
            continue
        key = str(token_id)
        if weight > result.get(key, 0.0):
            result[key] = weight
    return result


def dense_score(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(n, d) x (m, d) -> (n, m) dot products (the vectors are unit length)."""
    return np.asarray(q, dtype=np.float32) @ np.asarray(p, dtype=np.float32).T


def lexical_matching_score(weights_1, weights_2):
    """dict x dict -> float; list x list -> (n, m) array: sum over shared ids of w1 * w2."""
    def single(a: dict, b: dict) -> float:
        return float(sum(weight * b[token] for token, weight in a.items() if token in b))

    if isinstance(weights_1, dict) and isinstance(weights_2, dict):
        return single(weights_1, weights_2)
    if isinstance(weights_1, list) and isinstance(weights_2, list):
        return np.array([[single(a, b) for b in weights_2] for a in weights_1], dtype=np.float32).reshape(
            len(weights_1), len(weights_2)
        )
    raise TypeError("lexical weights must be two dicts or two lists of dicts (from encode_bge_m3).")


def colbert_score(q_vectors: np.ndarray, p_vectors: np.ndarray) -> float:
    """(nq, d), (np, d) -> mean over query vectors of the best dot product with a passage vector."""
    q, p = np.asarray(q_vectors, dtype=np.float32), np.asarray(p_vectors, dtype=np.float32)
    if len(q) == 0 or len(p) == 0:
        return 0.0
    return float((q @ p.T).max(axis=1).sum() / len(q))


def hybrid_scores(dense: float, sparse: float, colbert: float, weights=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """FlagEmbedding's `compute_score` combinations; `weights` are for (dense, sparse, colbert)."""
    if len(weights) != 3 or sum(weights) == 0:
        raise ValueError(f"`weights` must be three numbers (dense, sparse, colbert) with a non-zero sum; got {weights!r}.")
    w_dense, w_sparse, w_colbert = (float(w) for w in weights)
    return {
        "dense": dense,
        "sparse": sparse,
        "colbert": colbert,
        "sparse+dense": (sparse * w_sparse + dense * w_dense) / (w_sparse + w_dense),
        "colbert+sparse+dense": (colbert * w_colbert + sparse * w_sparse + dense * w_dense)
        / (w_colbert + w_sparse + w_dense),
    }
