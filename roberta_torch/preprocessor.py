"""Text (or text pairs) -> the backbone's `{"token_ids", "padding_mask"}` (torch or numpy).

Packs like keras_hub's `RobertaTextClassifierPreprocessor` / `MultiSegmentPacker`:

    one segment:   <s> a </s>
    two segments:  <s> a </s></s> b </s>
    n segments:    <s> a </s></s> b </s></s> ... z </s>

Segments are truncated together to fit `sequence_length` ("round_robin": one token at
a time from each segment in turn, so the longer one is cut first; "waterfall": the
last segments are cut first; or "longest_first", transformers' strategy for one or two
segments, which cross-encoders were trained with), then rows are right-padded with the pad id. By default a
batch is padded only to its longest row (less compute for short text); with
`pad_to_sequence_length=True` every row has `sequence_length` ids, as in keras_hub.
The ids of every row equal keras_hub's (its rows cut to the batch width). Only the part of
a text that can be kept is tokenized. The steps are text_inputs.py's, shared with the task
preprocessors and the TextEmbedder.
"""

from __future__ import annotations

import numbers
import pathlib

from . import text_inputs
from .presets import files, names, tokenizer_files
from .presets.preset import open_preset
from .tokenizers.base import Tokenizer, canonicalize_texts
from .tokenizers.roberta_tokenizer import RobertaTokenizer
from .tokenizers.xlm_roberta_tokenizer import XLMRobertaTokenizer
# The packing itself lives in text_inputs (shared with the task preprocessors and the embedder).
from .text_inputs import (  # noqa: F401
    KERAS_TRUNCATE_CHOICES,
    TRUNCATE_CHOICES,
    truncate_longest_first,
    truncate_round_robin,
    truncate_waterfall,
)

DEFAULT_SEQUENCE_LENGTH = 512  # keras_hub's default
# keras_hub's preprocessor class (and module) for each tokenizer class.
_KERAS_PREPROCESSORS = {
    "RobertaTokenizer": ("RobertaTextClassifierPreprocessor", "keras_hub.src.models.roberta.roberta_text_classifier_preprocessor"),
    "XLMRobertaTokenizer": (
        "XLMRobertaTextClassifierPreprocessor",
        "keras_hub.src.models.xlm_roberta.xlm_roberta_text_classifier_preprocessor",
    ),
}


class Preprocessor:
    """Tokenize, pack with `<s>` / `</s></s>` / `</s>`, truncate, pad, batch to torch (or numpy).

    Args:
        tokenizer: a `RobertaTokenizer` or `XLMRobertaTokenizer` (its own
            `sequence_length`, if any, is not used: packing truncates).
        sequence_length: the most ids in a row, special tokens included.
        truncate: "round_robin" (default, as keras_hub), "waterfall", or "longest_first"
            (transformers' pair truncation; one or two segments; keras_hub cannot load a
            preprocessor saved with it).
        pad_to_sequence_length: pad every row to `sequence_length` instead of to the
            batch's longest row.

    Call with
        `pre("text")` or `pre(["a", "b"])`                  single segments;
        `pre(("first", "second"))`, `pre(firsts, seconds)`  pairs (a tuple = segments, as
                                                            in keras_hub; a list = a batch);
        `pre([("a1", "b1"), ("a2", "b2")])`                 a batch of pairs.
    Returns `{"token_ids": (B, T) int64, "padding_mask": (B, T) bool}` torch tensors (numpy
    arrays with `return_tensors="np"`, e.g. inside `datasets.Dataset.map`) with B = 1 for a
    single text. `padding_mask` is True on the packed tokens (keras_hub computes it as
    `token_ids != pad_id`; the two differ only for text that spells out "<pad>").
    """

    tokenizer_cls: type[Tokenizer] = Tokenizer

    def __init__(
        self,
        tokenizer: Tokenizer,
        sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
        truncate: str = "round_robin",
        pad_to_sequence_length: bool = False,
    ):
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(
                "`tokenizer` must be a roberta_torch RobertaTokenizer or XLMRobertaTokenizer; got "
                f"{type(tokenizer).__name__}. Build one with Tokenizer.from_preset(preset)."
            )
        if not isinstance(sequence_length, numbers.Integral) or isinstance(sequence_length, bool) or sequence_length < 2:
            raise ValueError(
                f"`sequence_length` must be an int >= 2 (room for <s> and </s>); got {sequence_length!r}."
            )
        if truncate not in TRUNCATE_CHOICES:
            raise ValueError(f"`truncate` must be one of {TRUNCATE_CHOICES}; got {truncate!r}.")
        if not isinstance(pad_to_sequence_length, bool):
            raise TypeError(f"`pad_to_sequence_length` must be a bool; got {pad_to_sequence_length!r}.")
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.truncate = truncate
        self.pad_to_sequence_length = pad_to_sequence_length

    @classmethod
    def from_preset(cls, preset, sequence_length: int | None = None, **kwargs) -> "Preprocessor":
        """Tokenizer of `preset` + packing; `sequence_length` defaults to the preset's.

        The default is the `sequence_length` in the preset's preprocessor.json when there
        is one, else min(512, the backbone's max_sequence_length), so that packed rows
        always fit the backbone. The preset is resolved once for both.
        """
        preset = open_preset(preset, require_config=False)
        tokenizer = cls.tokenizer_cls.from_preset(preset)
        saved = preset.loader.preprocessor_config() or {}
        if sequence_length is None:
            sequence_length = saved.get("sequence_length")
        if "truncate" not in kwargs and saved.get("truncate") in TRUNCATE_CHOICES:
            kwargs["truncate"] = saved["truncate"]
        if sequence_length is None:
            max_length = preset.max_sequence_length
            sequence_length = min(DEFAULT_SEQUENCE_LENGTH, max_length or DEFAULT_SEQUENCE_LENGTH)
        return cls(tokenizer, sequence_length=sequence_length, **kwargs)

    def get_config(self) -> dict:
        return {"sequence_length": self.sequence_length, "truncate": self.truncate}

    def save_to_preset(self, directory) -> pathlib.Path:
        """Write what keras_hub writes for its TextClassifierPreprocessor: preprocessor.json
        plus the tokenizer's files, so `keras_hub.models.TextClassifierPreprocessor.from_preset`
        (and this class) load it back."""
        if self.truncate not in KERAS_TRUNCATE_CHOICES:
            raise ValueError(
                f"keras_hub's preprocessors cannot load truncate={self.truncate!r} (they implement "
                f"{KERAS_TRUNCATE_CHOICES}); set `truncate` to one of those before saving."
            )
        directory = self.tokenizer.save_to_preset(directory)
        class_name, module = _KERAS_PREPROCESSORS[self.tokenizer.keras_class_name]
        name = self.tokenizer.keras_config_name.replace("_tokenizer", "_text_classifier_preprocessor")
        spec = tokenizer_files.keras_preprocessor_config(self.tokenizer, module, class_name, name, self.get_config())
        files.write_json(directory / names.KERAS_PREPROCESSOR_FILE, spec)
        return directory

    # -- call -------------------------------------------------------------------------------

    def __call__(self, x, text_pair=None, *, return_tensors: str = "pt") -> dict:
        text_inputs.check_return_tensors(return_tensors)
        segments = self._segments(x, text_pair)  # [segment][row] -> text
        rows = text_inputs.encode_segments(self.tokenizer, segments, self.sequence_length, self.truncate)
        width = self.sequence_length if self.pad_to_sequence_length else None
        return text_inputs.pad_rows(rows, self.tokenizer.pad_token_id, width=width, return_tensors=return_tensors)

    def encode_rows(self, x, text_pair=None) -> list[list[int]]:
        """The packed, truncated ids of every row, unpadded (what length-sorted batching
        starts from); `x` and `text_pair` as in a call."""
        segments = self._segments(x, text_pair)  # [segment][row] -> text
        return text_inputs.encode_segments(self.tokenizer, segments, self.sequence_length, self.truncate)

    def _segments(self, x, text_pair) -> list[list[str]]:
        if text_pair is not None:
            if isinstance(x, tuple):
                raise TypeError("Pass segments either as a tuple `x` or as `x, text_pair`, not both.")
            raw_segments, names = (x, text_pair), ("x", "text_pair")
        else:
            if isinstance(x, list) and x and all(isinstance(item, tuple) for item in x):
                # A batch of pairs [(a, b), ...] -> segments ([a, ...], [b, ...]).
                widths = {len(item) for item in x}
                if len(widths) != 1:
                    raise ValueError(
                        f"Every tuple in `x` must hold the same number of segments; got {sorted(widths)}."
                    )
                x = tuple(list(column) for column in zip(*x))
            raw_segments = x if isinstance(x, tuple) else (x,)
            names = ("x",) if len(raw_segments) == 1 else tuple(f"x[{i}]" for i in range(len(raw_segments)))
        if not raw_segments:
            raise ValueError("`x` is an empty tuple; pass at least one segment of text.")
        texts, batched = zip(*(canonicalize_texts(s, name) for s, name in zip(raw_segments, names)))
        if len(set(batched)) != 1 or len({len(t) for t in texts}) != 1:
            shapes = ", ".join(
                f"{name}: {len(t)} texts" if b else f"{name}: one str" for name, t, b in zip(names, texts, batched)
            )
            raise ValueError(
                f"All segments must be single str, or lists of the same length; got {shapes}. "
                "Pair each text with exactly one other text."
            )
        if not texts[0]:
            raise ValueError("`x` is an empty batch; pass at least one text.")
        return [list(segment_texts) for segment_texts in texts]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tokenizer={self.tokenizer!r}, sequence_length={self.sequence_length}, "
            f"truncate={self.truncate!r}, pad_to_sequence_length={self.pad_to_sequence_length})"
        )


class RobertaPreprocessor(Preprocessor):
    """`Preprocessor` whose `from_preset` requires a RoBERTa (byte-level BPE) preset."""

    tokenizer_cls = RobertaTokenizer


class XLMRobertaPreprocessor(Preprocessor):
    """`Preprocessor` whose `from_preset` requires an XLM-RoBERTa (sentencepiece) preset."""

    tokenizer_cls = XLMRobertaTokenizer
