"""CrossEncoder: (query, document) pairs -> relevance scores, for reranking.

    reranker = roberta_torch.CrossEncoder.from_preset("hf://BAAI/bge-reranker-v2-m3")
    reranker.predict([("how do plants grow?", "Plants grow from seeds."), ...])   # (n,) numpy
    reranker.rank("how do plants grow?", documents, top_k=3)   # [{"corpus_id", "score"}, ...]

Equal to sentence-transformers' `CrossEncoder(directory).predict / rank` on the same
directory: pairs packed as the model's tokenizer packs them (`<s> A </s></s> B </s>`),
truncated with transformers' "longest_first" to the model's max length, the classifier's
logits, then the model's activation (Sigmoid for one label unless the files say otherwise).
Pairs run longest first in batches under a row and token budget (the backbone skips the
padding), and scores come back in input order.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import torch
from torch import nn

from .. import quantization
from ..embedding import batching, prompts as prompt_rules
from ..preprocessor import Preprocessor
from ..presets.cross_encoder_config import CrossEncoderConfig
from ..presets.preset import open_preset
from ..tasks.base import Task
from ..tasks.text_classifier import RobertaTextClassifier
from ..tokenizers.base import Tokenizer
from .activations import ACTIVATIONS
from .saving import save_cross_encoder

logger = logging.getLogger(__name__)

CONVERT_TO_CHOICES = ("numpy", "torch")
# Special tokens around a pair: <s> A </s></s> B </s>.
PAIR_SPECIAL_TOKENS = 4


def _check_text(value, argument: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(f"`{argument}` must be a str; got {type(value).__name__} ({value!r}).")
    return value


def canonicalize_pairs(pairs, argument: str = "pairs") -> tuple[list[tuple[str, str]], bool]:
    """A (a, b) pair or a list of pairs -> (list of (str, str), batched?); typed errors.

    As sentence-transformers: a list/tuple whose first item is a str is ONE pair."""
    if isinstance(pairs, (list, tuple)) and pairs and isinstance(pairs[0], (str, bytes)):
        pairs, batched = [pairs], False
    elif isinstance(pairs, (list, tuple)):
        batched = True
    else:
        raise TypeError(
            f"`{argument}` must be a (text, text) pair or a list of them; got {type(pairs).__name__}."
        )
    out = []
    for index, pair in enumerate(pairs):
        where = f"{argument}[{index}]" if batched else argument
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(
                f"`{where}` must be a (text, text) pair; got {type(pair).__name__} ({pair!r:.80})."
            )
        out.append((_check_text(pair[0], f"{where}[0]"), _check_text(pair[1], f"{where}[1]")))
    return out, batched


def resolve_activation(activation, num_labels: int):
    """A name, a callable, or None (the default: sigmoid for one label, identity otherwise)
    -> (name for messages, callable on (batch, labels) float32 logits)."""
    if activation is None:
        activation = "sigmoid" if num_labels == 1 else "identity"
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"`activation_fn` must be one of {sorted(ACTIVATIONS)} or a callable; got {activation!r}.")
        return activation, ACTIVATIONS[activation]
    if callable(activation):
        return getattr(activation, "__name__", type(activation).__name__), activation
    raise TypeError(f"`activation_fn` must be None, a name in {sorted(ACTIVATIONS)} or a callable; got {activation!r}.")


class CrossEncoder(nn.Module):
    """A text classifier, its tokenizer and a pair packing: (query, document) pairs in, scores out.

    Args:
        classifier: a roberta_torch `RobertaTextClassifier` / `XLMRobertaTextClassifier` (its
            logits are the raw scores).
        tokenizer: its roberta_torch tokenizer.
        config: a `CrossEncoderConfig` (activation, max_length, prompts); default: the
            activation for the number of labels, the backbone's max length.
    """

    def __init__(self, classifier: RobertaTextClassifier, tokenizer: Tokenizer, config: CrossEncoderConfig | None = None):
        super().__init__()
        if not isinstance(classifier, RobertaTextClassifier):
            raise TypeError(
                "`classifier` must be a roberta_torch RobertaTextClassifier / XLMRobertaTextClassifier; got "
                f"{type(classifier).__name__}."
            )
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"`tokenizer` must be a roberta_torch Tokenizer; got {type(tokenizer).__name__}.")
        self.classifier = classifier
        self.tokenizer = tokenizer
        self.config = config = config or CrossEncoderConfig()
        if config.activation is None and classifier.activation != "linear":
            config.activation = "identity"  # the classifier already applies its own
        self.activation_name, self.activation_fn = resolve_activation(config.activation, classifier.num_classes)
        limit = classifier.backbone.max_sequence_length
        if config.max_length is None or config.max_length > limit:
            config.max_length = limit  # longer rows cannot run: the backbone has `limit` positions
        batching.check_positive_int(config.max_length, "max_length")
        if config.max_length < PAIR_SPECIAL_TOKENS:
            raise ValueError(f"`max_length` must be >= {PAIR_SPECIAL_TOKENS} (<s> A </s></s> B </s>); got {config.max_length}.")
        self._packer = Preprocessor(tokenizer, sequence_length=config.max_length, truncate="longest_first")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, preset, *, activation_fn=None, max_length: int | None = None, prompts: dict | None = None,
                    allow_pickle: bool = False, **backbone_kwargs) -> "CrossEncoder":
        """Load a reranker: a sentence-transformers CrossEncoder directory or `hf://` repository,
        a transformers `RobertaForSequenceClassification` / `XLMRobertaForSequenceClassification`
        checkpoint (e.g. BAAI/bge-reranker-v2-m3's layout), or a roberta_torch / keras_hub
        text-classifier task preset.

        `activation_fn` (a name: "sigmoid", "identity", "tanh", "softmax", or a callable),
        `max_length` and `prompts` override what the preset says; `backbone_kwargs` (dtype,
        device, attention_backend, ...) go to the model loader.
        """
        loader = open_preset(preset, allow_pickle=allow_pickle).loader  # resolved once, for every file below
        config = loader.cross_encoder_config()
        preset = loader.encoder()  # the preset itself, or a sentence-transformers module's folder
        if activation_fn is not None:
            config.activation = activation_fn
        if max_length is not None:
            config.max_length = batching.check_positive_int(max_length, "max_length")
        if prompts is not None:
            config.prompts = prompt_rules.check_prompts(prompts)
        try:
            classifier = Task.from_preset(preset, allow_pickle=allow_pickle, **backbone_kwargs)
        except ValueError as error:
            if "no task head" not in str(error):
                raise
            raise ValueError(
                f"`preset`={str(preset.handle)!r} has no sequence-classification head, so it cannot score "
                "pairs. Load a reranker (a *ForSequenceClassification checkpoint or a CrossEncoder directory); "
                "for embeddings use TextEmbedder.from_preset."
            ) from error
        if not isinstance(classifier, RobertaTextClassifier):
            raise ValueError(
                f"`preset`={str(preset.handle)!r} holds a {type(classifier).__name__}; a CrossEncoder needs a "
                "sequence classifier (RobertaForSequenceClassification / XLMRobertaForSequenceClassification)."
            )
        tokenizer = Tokenizer.from_preset(preset)
        model = cls(classifier, tokenizer, config)
        return model.eval()

    def save_to_preset(self, directory, format: str = "sentence-transformers", *, overwrite: bool = False):
        """Write what sentence-transformers' `CrossEncoder.save` writes (the classifier as a
        transformers checkpoint, its tokenizer with the max length, the activation and prompts;
        reranking/saving.py): `sentence_transformers.CrossEncoder(directory)` and
        `CrossEncoder.from_preset(directory)` load it and give the same scores. Staged and
        renamed into place; `overwrite=True` replaces a non-empty directory. A callable
        activation, a classifier head transformers cannot hold, and an int8-quantized model
        are refused (ValueError) before anything is written."""
        quantization.refuse_if_quantized(self, "CrossEncoder.save_to_preset")
        return save_cross_encoder(self, directory, format=format, overwrite=overwrite)

    # -- properties ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.classifier.parameters()).device

    @property
    def num_labels(self) -> int:
        return self.classifier.num_classes

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @property
    def prompts(self) -> dict:
        return dict(self.config.prompts)

    # -- tokenization -------------------------------------------------------------------------

    def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str | None:
        """The text prepended to the first text of every pair (sentence-transformers' rule:
        `prompt`, else the named prompt, else the model's default prompt), or None."""
        return prompt_rules.resolve_prompt(self.config.prompts, self.config.default_prompt_name, prompt_name, prompt)

    def tokenize(self, pairs: list[tuple[str, str]], prompt: str | None = None) -> list[list[int]]:
        """(a, b) pairs -> packed token-id rows `<s> a </s></s> b </s>`, truncated longest first."""
        if not pairs:
            return []
        if prompt:
            pairs = [(prompt + a, b) for a, b in pairs]
        return self._packer.encode_rows(list(pairs))

    # -- scoring ------------------------------------------------------------------------------

    def score_rows(self, rows: list[list[int]], *, activation_fn=None, apply_softmax: bool = False,
                   batch_size: int = 32, max_tokens_per_batch: int | None = None,
                   show_progress_bar: bool | None = False, max_padding_fraction="auto") -> torch.Tensor:
        """Token-id rows (from `tokenize`) -> float32 scores on the model's device, in row order:
        `(n,)` for one label, `(n, num_labels)` otherwise (what `predict` computes after tokenizing).
        `max_padding_fraction` as in `TextEmbedder.embed_rows` (None: mixed lengths padding-free)."""
        if activation_fn is None:
            activation = self.activation_fn
        else:
            _, activation = resolve_activation(activation_fn, self.num_labels)
        if not isinstance(apply_softmax, bool):
            raise TypeError(f"`apply_softmax` must be a bool; got {apply_softmax!r}.")
        device = self.device
        batches = batching.run_batches(
            rows, self.classifier, pad_token_id=self.tokenizer.pad_token_id, device=device, batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch, max_padding_fraction=max_padding_fraction,
            show_progress_bar=show_progress_bar, description="Scoring", unit="pair",
        )
        scores = torch.empty((len(rows), self.num_labels), dtype=torch.float32, device=device)
        for indices, _, logits in batches:
            logits = activation(logits.float())  # (B, num_labels)
            if apply_softmax and self.num_labels > 1:
                logits = torch.softmax(logits, dim=-1)
            scores[torch.tensor(indices, device=device)] = logits
        return scores[:, 0] if self.num_labels == 1 else scores

    def predict(self, pairs, batch_size: int = 32, max_tokens_per_batch: int | None = None, activation_fn=None,
                apply_softmax: bool = False, convert_to: str = "numpy", show_progress_bar: bool | None = None,
                prompt_name: str | None = None, prompt: str | None = None):
        """Scores of (a, b) pairs, in input order: `(n,)` for one label, `(n, num_labels)`
        otherwise (a single pair gives a scalar / a `(num_labels,)` row).

        Args:
            batch_size: most pairs per forward pass.
            max_tokens_per_batch: most tokens per forward pass (rows x longest row), or None.
            activation_fn: a name ("sigmoid", "identity", "tanh", "softmax") or a callable on the
                `(batch, num_labels)` logits; None uses the model's.
            apply_softmax: softmax over the labels after the activation (more than one label).
            convert_to: "numpy" (default) or "torch" (scores stay on the model's device).
            prompt_name / prompt: a prompt prepended to the first text of every pair.
        """
        pairs, batched = canonicalize_pairs(pairs)
        if convert_to not in CONVERT_TO_CHOICES:
            raise ValueError(f"`convert_to` must be one of {CONVERT_TO_CHOICES}; got {convert_to!r}.")
        rows = self.tokenize(pairs, self.resolve_prompt(prompt_name, prompt))
        scores = self.score_rows(rows, activation_fn=activation_fn, apply_softmax=apply_softmax, batch_size=batch_size,
                                 max_tokens_per_batch=max_tokens_per_batch, show_progress_bar=show_progress_bar)
        result = scores if convert_to == "torch" else scores.cpu().numpy()
        return result if batched else result[0]

    def rank(self, query: str, documents, top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32, max_tokens_per_batch: int | None = None, activation_fn=None,
             show_progress_bar: bool | None = None, prompt_name: str | None = None, prompt: str | None = None) -> list[dict]:
        """Documents sorted by their score against `query`, best first (ties keep input order):
        `[{"corpus_id": index, "score": float[, "text": document]}, ...]`, the `top_k` best
        (all when None). Needs a one-label model, as sentence-transformers does."""
        if self.num_labels != 1:
            raise ValueError(
                f"rank() needs a model with one label; this one has {self.num_labels}. Use predict() on "
                "(query, document) pairs instead."
            )
        query = _check_text(query, "query")
        if isinstance(documents, (str, bytes)) or not isinstance(documents, (list, tuple)):
            raise TypeError(f"`documents` must be a list of str; got {type(documents).__name__}.")
        documents = [_check_text(d, f"documents[{i}]") for i, d in enumerate(documents)]
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
                raise ValueError(f"`top_k` must be None or an int >= 1; got {top_k!r}.")
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size,
                              max_tokens_per_batch=max_tokens_per_batch, activation_fn=activation_fn,
                              show_progress_bar=show_progress_bar, prompt_name=prompt_name, prompt=prompt)
        return ranking(np.asarray(scores).tolist(), documents if return_documents else None, top_k)

    def extra_repr(self) -> str:
        c = self.config
        return (f"num_labels={self.num_labels}, activation={self.activation_name!r}, max_length={c.max_length}, "
                f"prompts={sorted(c.prompts)}")


def ranking(scores: list[float], documents: list[str] | None = None, top_k: int | None = None) -> list[dict]:
    """sentence-transformers' rank() result from scores in document order: best first, ties in
    input order (a stable sort), cut to `top_k`."""
    results = [{"corpus_id": i, "score": float(score)} for i, score in enumerate(scores)]
    if documents is not None:
        for result in results:
            result["text"] = documents[result["corpus_id"]]
    results.sort(key=lambda r: r["score"], reverse=True)
    return results[:top_k]
