"""Task preprocessors, built on `roberta_torch.Preprocessor` by composition.

`TextClassifierPreprocessor`: text or text pairs -> `{"token_ids", "padding_mask"}`, labels
(and sample weights) passed through as tensors: keras_hub's `(x, y, sample_weight)` packing.

`MaskedLMPreprocessor`: keras_hub's dynamic masking (MaskedLMMaskGenerator): every token
that is not `<s>`, `</s>` or `<pad>` is selected with probability `mask_selection_rate`
(0.15); a row keeps at most `mask_selection_length` (96) selections, a random subset when it
has more, in position order; each selected token becomes `<mask>` with probability
`mask_token_rate` (0.8), a uniformly random id with `random_token_rate` (0.1), and stays
itself otherwise. Returns `(x, y, sample_weight)` = (`{"token_ids", "padding_mask",
"mask_positions"}`, `mask_ids`, `mask_weights`), the selection columns padded to
`mask_selection_length` with zeros (weight 0), exactly keras_hub's shapes.
"""

from __future__ import annotations

import numbers

import torch

from .. import text_inputs
from ..preprocessor import (
    DEFAULT_SEQUENCE_LENGTH,
    Preprocessor,
    RobertaPreprocessor,
    XLMRobertaPreprocessor,
)


def _as_label_tensor(value, argument: str):
    if value is None or isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"`{argument}` must be array-like (numbers); got {type(value).__name__}.") from error


def _pack_x_y_sample_weight(x, y=None, sample_weight=None):
    """keras's convention: x alone, (x, y), or (x, y, sample_weight)."""
    if y is None and sample_weight is None:
        return x
    if sample_weight is None:
        return x, y
    return x, y, sample_weight


def _converted(values, return_tensors: str):
    """Tensors (also inside dicts) -> numpy arrays for return_tensors="np"."""
    if return_tensors == "pt":
        return values
    if isinstance(values, dict):
        return {k: _converted(v, return_tensors) for k, v in values.items()}
    if isinstance(values, (tuple, list)):
        return type(values)(_converted(v, return_tensors) for v in values)
    return values.numpy() if isinstance(values, torch.Tensor) else values


class TextClassifierPreprocessor:
    """Text (or pairs) -> backbone inputs, with labels passed through (keras_hub's
    `RobertaTextClassifierPreprocessor`). Arguments as `Preprocessor`'s."""

    preprocessor_cls: type = Preprocessor

    def __init__(self, tokenizer, sequence_length: int = DEFAULT_SEQUENCE_LENGTH, truncate: str = "round_robin",
                 pad_to_sequence_length: bool = False):
        self.packer = self.preprocessor_cls(
            tokenizer,
            sequence_length=sequence_length,
            truncate=truncate,
            pad_to_sequence_length=pad_to_sequence_length,
        )
        self.tokenizer = tokenizer

    @classmethod
    def from_preset(cls, preset, **kwargs):
        instance = cls.__new__(cls)
        instance.packer = cls.preprocessor_cls.from_preset(preset, **kwargs)
        instance.tokenizer = instance.packer.tokenizer
        return instance

    @property
    def sequence_length(self) -> int:
        return self.packer.sequence_length

    def __call__(self, x, y=None, sample_weight=None, *, return_tensors: str = "pt"):
        """`x` as `Preprocessor` takes it; `y` / `sample_weight` (one entry per text) come back
        as tensors (numpy arrays with `return_tensors="np"`)."""
        text_inputs.check_return_tensors(return_tensors)
        y, sample_weight = _as_label_tensor(y, "y"), _as_label_tensor(sample_weight, "sample_weight")
        inputs = self.packer(x)
        batch = inputs["token_ids"].shape[0]
        for value, argument in ((y, "y"), (sample_weight, "sample_weight")):
            if value is not None and (value.dim() == 0 or value.shape[0] != batch):
                raise ValueError(
                    f"`{argument}` must have one entry per text ({batch}); got shape {tuple(value.shape)}."
                )
        return _pack_x_y_sample_weight(*_converted((inputs, y, sample_weight), return_tensors))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.packer!r})"


class RobertaTextClassifierPreprocessor(TextClassifierPreprocessor):
    preprocessor_cls = RobertaPreprocessor


class XLMRobertaTextClassifierPreprocessor(TextClassifierPreprocessor):
    preprocessor_cls = XLMRobertaPreprocessor


DEFAULT_MASK_SELECTION_LENGTH = 96  # keras_hub's


def _check_rate(value, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{argument}` must be a float in [0, 1]; got {value!r}.")
    return float(value)


class MaskedLMPreprocessor(TextClassifierPreprocessor):
    """Text -> masked-LM training batches with keras_hub's dynamic masking (module docstring).

    Args: tokenizer, sequence_length, truncate, pad_to_sequence_length (as `Preprocessor`),
    mask_selection_rate=0.15, mask_selection_length=96, mask_token_rate=0.8,
    random_token_rate=0.1, seed (an int for reproducible masks; default: torch's global RNG).
    """

    def __init__(self, tokenizer, sequence_length: int = DEFAULT_SEQUENCE_LENGTH, truncate: str = "round_robin",
                 pad_to_sequence_length: bool = False, mask_selection_rate: float = 0.15,
                 mask_selection_length: int = DEFAULT_MASK_SELECTION_LENGTH, mask_token_rate: float = 0.8,
                 random_token_rate: float = 0.1,
                 seed: int | None = None):
        super().__init__(tokenizer, sequence_length, truncate, pad_to_sequence_length)
        self._set_masking(mask_selection_rate, mask_selection_length, mask_token_rate, random_token_rate, seed)

    @classmethod
    def from_preset(cls, preset, mask_selection_rate: float = 0.15,
                    mask_selection_length: int = DEFAULT_MASK_SELECTION_LENGTH,
                    mask_token_rate: float = 0.8, random_token_rate: float = 0.1, seed: int | None = None, **kwargs):
        instance = super().from_preset(preset, **kwargs)
        instance._set_masking(mask_selection_rate, mask_selection_length, mask_token_rate, random_token_rate, seed)
        return instance

    def _set_masking(self, selection_rate, selection_length, mask_token_rate, random_token_rate, seed) -> None:
        self.mask_selection_rate = _check_rate(selection_rate, "mask_selection_rate")
        is_int = isinstance(selection_length, numbers.Integral) and not isinstance(selection_length, bool)
        if not is_int or selection_length < 1:
            raise ValueError(f"`mask_selection_length` must be an int >= 1; got {selection_length!r}.")
        # A row holds at most sequence_length - 2 maskable tokens: wider columns are only padding
        # (B x mask_selection_length of it). keras_hub's default (96) stays valid for short rows.
        limit = max(self.sequence_length, DEFAULT_MASK_SELECTION_LENGTH)
        if selection_length > limit:
            raise ValueError(
                f"`mask_selection_length`={selection_length} is more than sequence_length={self.sequence_length} "
                f"can use (at most {self.sequence_length - 2} maskable tokens per row); pass a "
                f"mask_selection_length <= {limit}."
            )
        self.mask_selection_length = int(selection_length)
        self.mask_token_rate = _check_rate(mask_token_rate, "mask_token_rate")
        self.random_token_rate = _check_rate(random_token_rate, "random_token_rate")
        if self.mask_token_rate + self.random_token_rate > 1.0:
            raise ValueError(
                f"`mask_token_rate` + `random_token_rate` must be <= 1; got {mask_token_rate} + {random_token_rate}."
            )
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        tokenizer = self.tokenizer
        self.unselectable_token_ids = [tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id]

    def __call__(self, x, y=None, sample_weight=None, *, return_tensors: str = "pt"):
        text_inputs.check_return_tensors(return_tensors)
        if y is not None or sample_weight is not None:
            raise ValueError(
                "MaskedLMPreprocessor makes its own labels (mask_ids); pass text only "
                "(`y` and `sample_weight` must be None)."
            )
        inputs = self.packer(x)
        token_ids, mask_positions, mask_ids, mask_weights = self.mask(inputs["token_ids"], inputs["padding_mask"])
        x = {"token_ids": token_ids, "padding_mask": inputs["padding_mask"], "mask_positions": mask_positions}
        return _converted((x, mask_ids, mask_weights), return_tensors)

    def mask(self, token_ids: torch.Tensor, padding_mask: torch.Tensor):
        """(masked token_ids, mask_positions, mask_ids, mask_weights) for packed rows (B, T)."""
        generator, width = self.generator, self.mask_selection_length
        batch, seq = token_ids.shape
        selectable = padding_mask.bool() & ~torch.isin(token_ids, torch.tensor(self.unselectable_token_ids))
        selected = selectable & (torch.rand(batch, seq, generator=generator) < self.mask_selection_rate)
        # At most `width` per row: a random subset (random scores, the top `width`), in position order.
        scores = torch.where(selected, torch.rand(batch, seq, generator=generator), torch.full((batch, seq), -1.0))
        keep = min(width, seq)
        top = scores.topk(keep, dim=1)
        chosen = top.values >= 0  # (B, keep): real selections
        positions = torch.where(chosen, top.indices, torch.full_like(top.indices, seq))  # unchosen sort last
        positions, _ = positions.sort(dim=1)
        chosen = positions < seq
        positions = torch.where(chosen, positions, torch.zeros_like(positions))
        mask_positions = torch.zeros(batch, width, dtype=torch.long)
        mask_positions[:, :keep] = positions
        weights = torch.zeros(batch, width)
        weights[:, :keep] = chosen.float()
        mask_ids = torch.where(weights.bool(), token_ids.gather(1, mask_positions), torch.zeros_like(mask_positions))

        r = torch.rand(batch, width, generator=generator)
        random_ids = torch.randint(0, self.tokenizer.vocabulary_size(), (batch, width), generator=generator)
        kept_or_random = torch.where(r < self.mask_token_rate + self.random_token_rate, random_ids, mask_ids)
        replacement = torch.where(r < self.mask_token_rate, self.tokenizer.mask_token_id, kept_or_random)
        masked = token_ids.clone()
        rows = torch.arange(batch)[:, None].expand(batch, width)
        real = weights.bool()
        masked[rows[real], mask_positions[real]] = replacement[real]
        return masked, mask_positions, mask_ids, weights

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.packer!r}, mask_selection_rate={self.mask_selection_rate}, "
            f"mask_selection_length={self.mask_selection_length}, mask_token_rate={self.mask_token_rate}, "
            f"random_token_rate={self.random_token_rate})"
        )


class RobertaMaskedLMPreprocessor(MaskedLMPreprocessor):
    preprocessor_cls = RobertaPreprocessor


class XLMRobertaMaskedLMPreprocessor(MaskedLMPreprocessor):
    preprocessor_cls = XLMRobertaPreprocessor
