"""Text (or text pairs) -> the backbone's `{"token_ids", "padding_mask"}` torch tensors.

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
The ids of every row equal keras_hub's (its rows cut to the batch width).
"""

from __future__ import annotations

import numbers
import pathlib

import torch

from .presets import files, tokenizer_files
from .presets.preset import open_preset
from .tokenizers.base import Tokenizer, canonicalize_texts
from .tokenizers.roberta_tokenizer import RobertaTokenizer
from .tokenizers.xlm_roberta_tokenizer import XLMRobertaTokenizer

TRUNCATE_CHOICES = ("round_robin", "waterfall", "longest_first")
# Strategies keras_hub's MultiSegmentPacker implements (what preprocessor.json may record).
KERAS_TRUNCATE_CHOICES = ("round_robin", "waterfall")
DEFAULT_SEQUENCE_LENGTH = 512  # keras_hub's default
# keras_hub's preprocessor class (and module) for each tokenizer class.
_KERAS_PREPROCESSORS = {
    "RobertaTokenizer": ("RobertaTextClassifierPreprocessor", "keras_hub.src.models.roberta.roberta_text_classifier_preprocessor"),
    "XLMRobertaTokenizer": (
        "XLMRobertaTextClassifierPreprocessor",
        "keras_hub.src.models.xlm_roberta.xlm_roberta_text_classifier_preprocessor",
    ),
}


def truncate_round_robin(lengths: list[int], budget: int) -> list[int]:
    """Kept lengths: take tokens from the segments in turn (first tokens first) until `budget`.

    Equals tensorflow_text's RoundRobinTrimmer (keras_hub's "round_robin").
    """
    kept = [0] * len(lengths)
    budget = max(budget, 0)
    while budget > 0:
        progressed = False
        for index, length in enumerate(lengths):
            if budget > 0 and kept[index] < length:
                kept[index] += 1
                budget -= 1
                progressed = True
        if not progressed:
            break
    return kept


def truncate_waterfall(lengths: list[int], budget: int) -> list[int]:
    """Kept lengths: fill the segments in order; later segments are cut first."""
    kept = []
    budget = max(budget, 0)
    for length in lengths:
        take = min(length, budget)
        kept.append(take)
        budget -= take
    return kept


def truncate_longest_first(lengths: list[int], budget: int) -> list[int]:
    """Kept lengths as transformers' `truncation="longest_first"` (the Rust `tokenizers`
    LongestFirst) keeps them, for one or two segments.

    Two segments over the budget: the shorter keeps min(its length, budget // 2) tokens and
    the longer the rest (on a tie the first counts as the shorter). This is not the same as
    cutting one token at a time from the longer segment: (6, 5) in a budget of 7 keeps (4, 3).
    """
    budget = max(budget, 0)
    if len(lengths) == 1:
        return [min(lengths[0], budget)]
    if len(lengths) != 2:
        raise ValueError(
            f'truncate="longest_first" packs one or two segments, as transformers does; got {len(lengths)}. '
            'Use truncate="round_robin" or "waterfall" for more.'
        )
    first, second = lengths
    if first + second <= budget:
        return [first, second]
    swapped = first > second
    short, long = (second, first) if swapped else (first, second)
    short_kept = min(short, budget // 2)
    long_kept = min(long, budget - short_kept)
    return [long_kept, short_kept] if swapped else [short_kept, long_kept]


_TRUNCATORS = {
    "round_robin": truncate_round_robin,
    "waterfall": truncate_waterfall,
    "longest_first": truncate_longest_first,
}


class Preprocessor:
    """Tokenize, pack with `<s>` / `</s></s>` / `</s>`, truncate, pad, batch to torch.

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
    Returns `{"token_ids": (B, T) int64, "padding_mask": (B, T) bool}` with B = 1 for a
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
        saved = (preset.json(files.KERAS_PREPROCESSOR_FILE) or {}).get("config")
        saved = saved if isinstance(saved, dict) else {}
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
        files.write_json(directory / files.KERAS_PREPROCESSOR_FILE, spec)
        return directory

    # -- call -------------------------------------------------------------------------------

    def __call__(self, x, text_pair=None) -> dict[str, torch.Tensor]:
        rows = self.encode_rows(x, text_pair)
        width = self.sequence_length if self.pad_to_sequence_length else max(len(r) for r in rows)
        token_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        padding_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for b, row in enumerate(rows):
            token_ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            padding_mask[b, : len(row)] = True
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def encode_rows(self, x, text_pair=None) -> list[list[int]]:
        """The packed, truncated ids of every row, unpadded (what length-sorted batching
        starts from); `x` and `text_pair` as in a call."""
        segments = self._segments(x, text_pair)  # [segment][row] -> list of ids
        return [self._pack([segment[b] for segment in segments]) for b in range(len(segments[0]))]

    def _segments(self, x, text_pair) -> list[list[list[int]]]:
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
        return [self.tokenizer.encode_batch(list(segment_texts)) for segment_texts in texts]

    def _pack(self, segments: list[list[int]]) -> list[int]:
        start, end = self.tokenizer.start_token_id, self.tokenizer.end_token_id
        num_special = 2 + 2 * (len(segments) - 1)  # <s>, </s> and </s></s> between segments
        budget = self.sequence_length - num_special
        if budget < 0:
            raise ValueError(
                f"`sequence_length`={self.sequence_length} cannot hold the {num_special} special "
                f"tokens of {len(segments)} segments; use a sequence_length >= {num_special}."
            )
        kept = _TRUNCATORS[self.truncate]([len(s) for s in segments], budget)
        row = [start]
        for index, (segment, length) in enumerate(zip(segments, kept)):
            row.extend(segment[:length])
            row.extend([end] if index == len(segments) - 1 else [end, end])
        return row

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
