"""TextEmbedder: texts -> one vector each (and bge-m3's sparse and ColBERT outputs).

    embedder = roberta_torch.TextEmbedder.from_preset("multilingual_e5_base")
    passages = embedder.encode(texts, prompt_name="passage")          # (n, 768) numpy
    query = embedder.encode("how do plants grow?", prompt_name="query")
    embedder.similarity(query, passages)

Equal to sentence-transformers' `SentenceTransformer(directory).encode(texts)` on the same
directory: the same text (prompt prepended), truncation to `max_seq_length` (special tokens
included), pooling, and normalization. Texts run longest first in batches under a row and
token budget, and come back in input order.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import torch
from torch import nn

from .. import text_inputs
from ..backbone import Backbone
from ..presets import registry
from .. import quantization
from ..presets.preset import open_preset
from ..presets.embedding_config import EmbeddingConfig
from ..presets.sentence_transformers_format import save_embedder
from ..tokenizers.base import Tokenizer, canonicalize_texts
from . import batching, prompts as prompt_rules
from .bge_m3 import BGEM3Heads, hybrid_scores, colbert_score, lexical_matching_score, lexical_weights
from .pooling import check_pooling_modes, pool

logger = logging.getLogger(__name__)

CONVERT_TO_CHOICES = ("numpy", "torch")
PRECISION_CHOICES = ("float32", "int8", "uint8", "binary", "ubinary")


class TextEmbedder(nn.Module):
    """A backbone, its tokenizer and a pooling: texts in, embeddings out.

    Args:
        backbone: a roberta_torch `RobertaBackbone` / `XLMRobertaBackbone`.
        tokenizer: its roberta_torch tokenizer.
        config: an `EmbeddingConfig` (pooling, normalize, max_seq_length, prompts, ...);
            default: mean pooling, no normalization.
        heads: bge-m3's `BGEM3Heads` (enables `encode_bge_m3`), or None.
    """

    def __init__(self, backbone: Backbone, tokenizer: Tokenizer, config: EmbeddingConfig | None = None,
                 heads: BGEM3Heads | None = None):
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"`backbone` must be a roberta_torch Backbone; got {type(backbone).__name__}.")
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"`tokenizer` must be a roberta_torch Tokenizer; got {type(tokenizer).__name__}.")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config = config or EmbeddingConfig()
        config.pooling = check_pooling_modes(config.pooling, "pooling")
        limit = backbone.max_sequence_length
        if config.max_seq_length is None or config.max_seq_length > limit:
            # Longer rows cannot run: the backbone has `limit` positions.
            config.max_seq_length = limit
        batching.check_positive_int(config.max_seq_length, "max_seq_length")
        if config.max_seq_length < 2:
            raise ValueError(f"`max_seq_length` must be >= 2 (room for <s> and </s>); got {config.max_seq_length}.")
        self.heads = heads
        self._prompt_lengths: dict[str, int] = {}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, preset, *, pooling=None, normalize: bool | None = None, max_seq_length: int | None = None,
                    prompts: dict | None = None, allow_pickle: bool = False, quantize: str | None = None,
                    **backbone_kwargs) -> "TextEmbedder":
        """Load a builtin embedding preset (`bge_m3`, `multilingual_e5_base`, `multilingual_e5_large`),
        a sentence-transformers directory or `hf://` repository on RoBERTa / XLM-R, or any backbone
        preset (mean pooling by default).

        `pooling`, `normalize`, `max_seq_length` and `prompts` override what the preset says;
        `backbone_kwargs` (dtype, device, attention_backend, ...) go to `Backbone.from_preset`.
        bge-m3's sparse and ColBERT heads, when present, enable `encode_bge_m3`: read from
        `sparse_linear.safetensors` / `colbert_linear.safetensors`, or from FlagEmbedding's
        `.pt` files with `allow_pickle=True` only. `quantize="int8"` calls `quantize("int8")` on
        the loaded embedder (checked before loading).
        """
        quantization.check_preset_quantize(quantize, backbone_kwargs.get("device"))
        loader = open_preset(preset, allow_pickle=allow_pickle).loader
        config = read_embedding_config(loader.preset, builtin_name=preset if isinstance(preset, str) else None)
        if pooling is not None:
            config.pooling = check_pooling_modes(pooling, "pooling")
        if normalize is not None:
            config.normalize = bool(normalize)
        if max_seq_length is not None:
            config.max_seq_length = batching.check_positive_int(max_seq_length, "max_seq_length")
        if prompts is not None:
            config.prompts = prompt_rules.check_prompts(prompts)
        encoder = loader.encoder()  # the preset itself, or a sentence-transformers module's folder
        backbone = Backbone.from_preset(encoder, **backbone_kwargs)
        tokenizer = Tokenizer.from_preset(encoder)
        state = loader.bge_m3_heads(backbone.hidden_dim)
        heads = BGEM3Heads.from_state(state) if state is not None else None
        embedder = cls(backbone, tokenizer, config, heads)
        return quantization.quantize_loaded(embedder.to(next(backbone.parameters()).device).eval(), quantize)

    def save_to_preset(self, directory, format: str = "sentence-transformers", *, overwrite: bool = False):
        """Write a sentence-transformers directory (the encoder as a transformers checkpoint,
        modules.json, Pooling, Normalize, max_seq_length, prompts; bge-m3's heads when present,
        as safetensors and as FlagEmbedding's .pt) that `SentenceTransformer(directory)` loads
        and encodes exactly as this embedder. Staged and renamed into place; `overwrite=True`
        replaces a non-empty directory.
        An int8-quantized embedder refuses (see `quantize`)."""
        quantization.refuse_if_quantized(self, "TextEmbedder.save_to_preset")
        return save_embedder(self, directory, format=format, overwrite=overwrite)

    def quantize(self, mode: str, *, kernel: str = "auto") -> "TextEmbedder":
        """keras' `quantize(mode)`: `mode="int8"` turns the encoder's dense layers (and bge-m3's
        heads) into int8 for CPU inference, in place; `encode` then runs int8. Returns the
        embedder. See `RobertaBackbone.quantize`."""
        return quantization.quantize_(self, mode, kernel=kernel)

    # -- properties ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return len(self.config.pooling) * self.backbone.hidden_dim

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    @property
    def prompts(self) -> dict:
        return dict(self.config.prompts)

    # -- tokenization -------------------------------------------------------------------------

    def _rows(self, texts: list[str]) -> list[list[int]]:
        # <s> ids </s>, at most max_seq_length ids, as sentence-transformers truncates.
        return text_inputs.encode_segments(self.tokenizer, [texts], self.config.max_seq_length)

    def tokenize(self, texts: list[str], prompt: str | None = None) -> tuple[list[list[int]], int]:
        """Texts -> token-id rows (`<s>` prompt+text `</s>`, truncated) and the prompt's length
        in tokens (`<s>` included) for pooling that leaves the prompt out."""
        if prompt:
            texts = [prompt + text for text in texts]
        if self.config.do_lower_case:
            texts = [text.lower() for text in texts]
        rows = self._rows(texts) if texts else []
        prompt_length = 0
        if prompt and not self.config.include_prompt:
            if prompt not in self._prompt_lengths:
                text = prompt.lower() if self.config.do_lower_case else prompt
                self._prompt_lengths[prompt] = len(self._rows([text])[0]) - 1
            prompt_length = self._prompt_lengths[prompt]
        return rows, prompt_length

    # -- the batch loop -----------------------------------------------------------------------

    def _batches(self, rows, batch_size, max_tokens_per_batch, show_progress_bar, max_padding_fraction="auto"):
        """(indices, inputs, hidden) per length-sorted batch (batching.run_batches)."""
        return batching.run_batches(
            rows, self.backbone, pad_token_id=self.tokenizer.pad_token_id, device=self.device, batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch, max_padding_fraction=max_padding_fraction,
            show_progress_bar=show_progress_bar, description="Embedding", unit="text",
        )

    # -- dense embeddings ---------------------------------------------------------------------

    def encode(self, texts, batch_size: int = 32, max_tokens_per_batch: int | None = None,
               normalize: bool | None = None, convert_to: str = "numpy", show_progress_bar: bool | None = None,
               precision: str = "float32", prompt_name: str | None = None, prompt: str | None = None):
        """Texts -> `(n, embedding_dim)` embeddings in input order (a single str -> `(embedding_dim,)`).

        Args:
            batch_size: most texts per forward pass.
            max_tokens_per_batch: most tokens per forward pass (rows x longest row), or None.
            normalize: L2-normalize; None uses the model's setting (a Normalize module).
            convert_to: "numpy" (default) or "torch" (float embeddings stay on the model's device).
            show_progress_bar: a tqdm bar; None shows one from 1,024 texts on.
            precision: "float32", or sentence-transformers' quantizations "int8" / "uint8"
                (per-dimension ranges from these embeddings) and "binary" / "ubinary" (sign bits
                packed 8 per byte; dim / 8 columns).
            prompt_name: a name in the model's prompts (e.g. "query"); `prompt`: the text itself.
        """
        texts, batched = canonicalize_texts(texts, "texts")
        if convert_to not in CONVERT_TO_CHOICES:
            raise ValueError(f"`convert_to` must be one of {CONVERT_TO_CHOICES}; got {convert_to!r}.")
        if precision not in PRECISION_CHOICES:
            raise ValueError(f"`precision` must be one of {PRECISION_CHOICES}; got {precision!r}.")
        if normalize is not None and not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be None or a bool; got {normalize!r}.")
        rows, prompt_length = self.tokenize(texts, self.resolve_prompt(prompt_name, prompt))
        embeddings = self.embed_rows(rows, prompt_length, normalize=normalize, batch_size=batch_size,
                                     max_tokens_per_batch=max_tokens_per_batch, show_progress_bar=show_progress_bar)
        if precision != "float32":
            result = quantize(embeddings.cpu().numpy(), precision)
            result = torch.from_numpy(result) if convert_to == "torch" else result
        else:
            result = embeddings if convert_to == "torch" else embeddings.cpu().numpy()
        return result if batched else result[0]

    def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str | None:
        """The text `encode(prompt_name=..., prompt=...)` prepends (the model's default prompt when
        neither is given), or None; ValueError for an unknown prompt name."""
        return prompt_rules.resolve_prompt(self.config.prompts, self.config.default_prompt_name, prompt_name, prompt)

    def embed_rows(self, rows: list[list[int]], prompt_lengths=0, *, normalize: bool | None = None,
                   batch_size: int = 32, max_tokens_per_batch: int | None = None,
                   show_progress_bar: bool | None = False, max_padding_fraction="auto") -> torch.Tensor:
        """Token-id rows (from `tokenize`) -> `(n, embedding_dim)` float32 embeddings on the model's
        device, in row order: what `encode` computes after tokenizing.

        `prompt_lengths`: the prompt length `tokenize` returned (one int for every row), or one
        per row, so rows tokenized with different prompts run in the same batches (a server
        batching query and passage requests together).
        `max_padding_fraction`: "auto" cuts length-sorted CPU batches where more than 8 % would be
        padding (best for a large corpus, where neighbours have similar lengths); None never cuts,
        so a few dozen mixed-length rows run as one batch, padding-free (best for a server's
        batches: measured 1.2x-1.5x less CPU per row at 8-64 rows); or a fraction in [0, 1)."""
        if normalize is not None and not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be None or a bool; got {normalize!r}.")
        normalize = self.config.normalize if normalize is None else normalize
        per_row = not isinstance(prompt_lengths, numbers.Integral)
        if per_row:
            prompt_lengths = torch.as_tensor(list(prompt_lengths), dtype=torch.long)
            if prompt_lengths.shape != (len(rows),):
                raise ValueError(
                    f"`prompt_lengths` must be one int or one per row; got {tuple(prompt_lengths.shape)} for {len(rows)} rows."
                )
        embeddings = torch.empty((len(rows), self.embedding_dim), dtype=torch.float32, device=self.device)
        batches = self._batches(rows, batch_size, max_tokens_per_batch, show_progress_bar, max_padding_fraction)
        for indices, inputs, hidden in batches:
            lengths = prompt_lengths[indices] if per_row else prompt_lengths
            pooled = pool(hidden, inputs["padding_mask"], self.config.pooling, lengths)
            if normalize:
                pooled = nn.functional.normalize(pooled, dim=-1)
            embeddings[torch.tensor(indices, device=self.device)] = pooled
        return embeddings

    def similarity(self, a, b) -> torch.Tensor:
        """(n, d) x (m, d) -> (n, m) scores with the model's similarity ("cosine" or "dot")."""
        a = torch.as_tensor(a).float()
        b = torch.as_tensor(b, device=a.device).float()
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        if a.shape[-1] != b.shape[-1]:
            raise ValueError(f"`a` and `b` must have the same dimension; got {a.shape[-1]} and {b.shape[-1]}.")
        if self.config.similarity == "cosine":
            a, b = nn.functional.normalize(a, dim=-1), nn.functional.normalize(b, dim=-1)
        return a @ b.T

    # -- bge-m3 -------------------------------------------------------------------------------

    def encode_bge_m3(self, texts, batch_size: int = 32, max_tokens_per_batch: int | None = None,
                      return_dense: bool = True, return_sparse: bool = True, return_colbert_vecs: bool = True,
                      show_progress_bar: bool | None = None) -> dict:
        """bge-m3's outputs, as FlagEmbedding's `BGEM3FlagModel.encode` returns them:
        {"dense_vecs": (n, H) array, "lexical_weights": [{str(id): weight}], "colbert_vecs":
        [(length - 1, colbert_dim) arrays]} (None for an output not asked for)."""
        if self.heads is None and (return_sparse or return_colbert_vecs):
            raise ValueError(
                "This model has no bge-m3 heads (sparse_linear.pt and colbert_linear.pt next to the "
                "weights); load 'hf://BAAI/bge-m3' or a directory holding them, or ask for dense only."
            )
        texts, batched = canonicalize_texts(texts, "texts")
        rows, _ = self.tokenize(texts)
        tokenizer = self.tokenizer
        skip = {tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id,
                getattr(tokenizer, "unk_token_id", None)}
        dense = np.zeros((len(rows), self.backbone.hidden_dim), dtype=np.float32)
        sparse, colbert = [None] * len(rows), [None] * len(rows)
        for indices, inputs, hidden in self._batches(rows, batch_size, max_tokens_per_batch, show_progress_bar):
            if return_dense:
                vectors = nn.functional.normalize(hidden[:, 0].float(), dim=-1)
                dense[indices] = vectors.cpu().numpy()
            if return_sparse or return_colbert_vecs:
                token_weights, colbert_vectors, lengths = self.heads(hidden, inputs["token_ids"], inputs["padding_mask"])
                token_weights, colbert_vectors = token_weights.cpu().numpy(), colbert_vectors.cpu().numpy()
                for b, index in enumerate(indices):
                    if return_sparse:
                        sparse[index] = lexical_weights(token_weights[b, : lengths[b]], rows[index], skip)
                    if return_colbert_vecs:
                        colbert[index] = colbert_vectors[b, : lengths[b] - 1]
        result = {
            "dense_vecs": dense if return_dense else None,
            "lexical_weights": sparse if return_sparse else None,
            "colbert_vecs": colbert if return_colbert_vecs else None,
        }
        if not batched:
            result = {k: (v[0] if v is not None else None) for k, v in result.items()}
        return result

    def compute_score(self, sentence_pairs, weights_for_different_modes=(1.0, 1.0, 1.0), batch_size: int = 32) -> dict:
        """FlagEmbedding's `compute_score`: for (query, passage) pairs, lists of "dense", "sparse",
        "colbert", "sparse+dense" and "colbert+sparse+dense" scores (weights: dense, sparse, colbert)."""
        single = isinstance(sentence_pairs, tuple) and len(sentence_pairs) == 2 and isinstance(sentence_pairs[0], str)
        pairs = [sentence_pairs] if single else list(sentence_pairs)
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            raise TypeError("`sentence_pairs` must be a (query, passage) pair or a list of them.")
        queries = self.encode_bge_m3([q for q, _ in pairs], batch_size=batch_size)
        passages = self.encode_bge_m3([p for _, p in pairs], batch_size=batch_size)
        scores = {key: [] for key in ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")}
        for i in range(len(pairs)):
            row = hybrid_scores(
                float(queries["dense_vecs"][i] @ passages["dense_vecs"][i]),
                lexical_matching_score(queries["lexical_weights"][i], passages["lexical_weights"][i]),
                colbert_score(queries["colbert_vecs"][i], passages["colbert_vecs"][i]),
                weights_for_different_modes,
            )
            for key, value in row.items():
                scores[key].append(value)
        return {k: v[0] for k, v in scores.items()} if single else scores

    def extra_repr(self) -> str:
        c = self.config
        return (f"pooling={c.pooling}, normalize={c.normalize}, max_seq_length={c.max_seq_length}, "
                f"prompts={sorted(c.prompts)}, bge_m3_heads={self.heads is not None}")


def read_embedding_config(preset, builtin_name: str | None = None) -> EmbeddingConfig:
    """The embedding settings of a preset (any form `from_preset` takes, or a `Preset`): what a
    sentence-transformers directory says, a builtin embedding preset's documented settings
    (`builtin_name`), else mean pooling without normalization."""
    loader = open_preset(preset, require_config=False).loader
    if builtin_name is not None and builtin_name not in registry.EMBEDDING_DEFAULTS:
        builtin_name = None
    return loader.embedding_config(builtin_name)


def quantize(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """sentence-transformers' `quantize_embeddings`: int8/uint8 buckets span each dimension's
    range (`ranges`: (2, dim) min and max rows, default: over these embeddings); binary packs
    the signs 8 per byte."""
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision in ("int8", "uint8"):
        if ranges is None and embeddings.shape[0] < 2:
            raise ValueError(
                f"precision={precision!r} needs at least 2 embeddings to compute its ranges; encode more "
                "texts at once, or use 'float32' / 'binary'."
            )
        if ranges is None:
            ranges = np.stack([embeddings.min(axis=0), embeddings.max(axis=0)])
        starts = ranges[0].astype(np.float32)
        steps = (ranges[1].astype(np.float32) - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    packed = np.packbits(embeddings > 0, axis=-1)
    return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
