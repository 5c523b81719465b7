"""The keras_hub-like surface shared by the tokenizers, and their input checks.

A tokenizer maps text to token ids and back:

    tokenizer("a b")            -> [ids]          (a str gives one list of ids)
    tokenizer(["a", "b c"])     -> [[ids], [ids]] (a list of str gives a list of lists)
    tokenizer.detokenize(ids)   -> str, or a list of str for a batch of id lists

Subclasses implement `_encode_batch` / `_decode_batch` on plain Python lists and the
vocabulary queries; this module owns argument checking, the optional fixed
`sequence_length` (truncate / pad with the pad id, as keras_hub does) and `from_preset`.
"""

from __future__ import annotations

import numbers
import pathlib
from typing import Sequence, Union

from ..presets import files, names, tokenizer_files
from ..presets.preset import open_preset
from . import prefix

TextInput = Union[str, Sequence[str]]


def canonicalize_texts(inputs, argument: str = "inputs") -> tuple[list[str], bool]:
    """str | bytes | sequence of str -> (list of str, batched?); TypeError otherwise."""
    if isinstance(inputs, str):
        return [inputs], False
    if isinstance(inputs, bytes):
        return [inputs.decode("utf-8")], False
    if _is_array(inputs):  # numpy string arrays, as keras_hub accepts
        if inputs.ndim > 1:
            raise ValueError(
                f"`{argument}` must be a str or a 1-D batch of str; got an array of shape "
                f"{tuple(inputs.shape)}. Flatten it or pass a list of str."
            )
        batched = inputs.ndim == 1
        inputs = inputs.tolist() if batched else [inputs.item()]
        texts, _ = canonicalize_texts(inputs, argument)
        return texts, batched
    if isinstance(inputs, (list, tuple)):
        texts = []
        for index, item in enumerate(inputs):
            if isinstance(item, bytes):
                item = item.decode("utf-8")
            if isinstance(item, (list, tuple)) or _is_array(item):
                # ValueError, as keras_hub raises for input of the wrong rank.
                raise ValueError(
                    f"`{argument}` must be a str or a 1-D batch of str; item {index} is a "
                    f"{type(item).__name__}, so the input is 2-D. Flatten it, or pass text pairs as a tuple."
                )
            if not isinstance(item, str):
                raise TypeError(
                    f"`{argument}` must be a str or a list of str; item {index} is a "
                    f"{type(item).__name__} ({item!r}). Convert every item to str."
                )
            texts.append(item)
        return texts, True
    raise TypeError(
        f"`{argument}` must be a str or a list of str; got {type(inputs).__name__} "
        f"({inputs!r}). Pass text, e.g. tokenizer('hello') or tokenizer(['a', 'b'])."
    )


def _is_array(value) -> bool:
    """numpy arrays and torch tensors, without importing either."""
    return hasattr(value, "ndim") and hasattr(value, "tolist") and not isinstance(value, (list, tuple))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def canonicalize_ids(ids, argument: str = "ids") -> tuple[list[list[int]], bool]:
    """int | list of int | list of lists | 0/1/2-D int array or tensor -> (rows, batched?)."""
    if _is_array(ids):
        dtype = str(getattr(ids, "dtype", ""))
        if "int" not in dtype:
            raise TypeError(
                f"`{argument}` must hold integer token ids; got an array of dtype {dtype}. "
                "Cast it to an integer type."
            )
        if ids.ndim > 2:
            raise ValueError(
                f"`{argument}` must be 0-, 1- or 2-D; got shape {tuple(ids.shape)}. Pass one "
                "sequence of ids or a batch (list) of sequences."
            )
        batched = ids.ndim == 2
        ids = ids.tolist()
        if not batched:
            ids = ids if isinstance(ids, list) else [ids]
            return [ids], False
        return ids, True
    if _is_int(ids):
        return [[int(ids)]], False
    if isinstance(ids, (list, tuple)):
        if all(_is_int(i) for i in ids):
            return [[int(i) for i in ids]], False
        rows = []
        for index, row in enumerate(ids):
            if _is_array(row):
                row = row.tolist()
            if not isinstance(row, (list, tuple)) or not all(_is_int(i) for i in row):
                raise TypeError(
                    f"`{argument}` must be a list of int or a list of lists of int; item "
                    f"{index} is {row!r}. Do not mix ids and lists of ids."
                )
            rows.append([int(i) for i in row])
        return rows, True
    raise TypeError(
        f"`{argument}` must be an int, a list of int, a list of lists of int, or an integer "
        f"array/tensor; got {type(ids).__name__} ({ids!r})."
    )


class Tokenizer:
    """Base class: keras_hub's tokenizer API over plain Python lists.

    Special tokens are attributes, as in keras_hub: `start_token` / `start_token_id`
    (`<s>`), `end_token` / `end_token_id` (`</s>`), `pad_token` / `pad_token_id`,
    `mask_token` / `mask_token_id`, and `unk_token` / `unk_token_id` where the
    vocabulary has one.

    `sequence_length`: when set, every output row is truncated or padded (with
    `pad_token_id`) to exactly that many ids, as keras_hub's tokenizers do.

    `Tokenizer.from_preset(preset)` returns the right subclass for the preset.
    """

    keras_class_name: str | None = None
    keras_module: str | None = None
    keras_config_name: str | None = None
    _classes: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("keras_class_name"):  # a class of its own, not a user's subclass
            Tokenizer._classes[cls.keras_class_name] = cls
    # keras_hub attribute names of the special tokens, in RoBERTa id order.
    special_token_attributes: tuple[str, ...] = ("start_token", "pad_token", "end_token", "unk_token", "mask_token")

    def __init__(self, sequence_length: int | None = None):
        if sequence_length is not None and (not _is_int(sequence_length) or sequence_length < 1):
            raise ValueError(
                f"`sequence_length` must be None or a positive int; got {sequence_length!r}."
            )
        self.sequence_length = sequence_length

    # -- the API --------------------------------------------------------------------------

    def __call__(self, inputs: TextInput):
        return self.tokenize(inputs)

    def tokenize(self, inputs: TextInput):
        """str -> list[int]; list of str -> list[list[int]] (ragged unless sequence_length)."""
        texts, batched = canonicalize_texts(inputs, "inputs")
        length = self.sequence_length
        rows = self._encode_prefixes(texts, length) if texts else []
        if length is not None:
            rows = [row + [self.pad_token_id] * (length - len(row)) for row in rows]
        return rows if batched else rows[0]

    def encode_batch(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        """The ids of each text, not padded (what packing starts from).

        `max_length`: keep only each text's first `max_length` ids, and tokenize only as much
        of the text as they need (a prefix cut where the tokenizer provably splits, see
        tokenizers/prefix.py), so a huge text costs what its kept part costs. The ids equal
        the first `max_length` of the whole text's."""
        texts, batched = canonicalize_texts(texts, "texts")
        if not batched:
            raise TypeError("`texts` must be a list of str; wrap a single text in a list.")
        if max_length is not None and (not _is_int(max_length) or max_length < 0):
            raise ValueError(f"`max_length` must be None or an int >= 0; got {max_length!r}.")
        return self._encode_prefixes(texts, max_length) if texts else []

    def _encode_prefixes(self, texts: list[str], max_length: int | None) -> list[list[int]]:
        if max_length is None:
            return self._encode_batch(texts)
        return prefix.encode_prefixes(self._encode_batch, texts, int(max_length), self._next_safe_cut)

    def detokenize(self, ids):
        """ids (list, nested list, array or tensor) -> str, or a list of str for a batch."""
        rows, batched = canonicalize_ids(ids, "ids")
        size = self.vocabulary_size()
        for row in rows:
            for token_id in row:
                if not 0 <= token_id < size:
                    raise ValueError(
                        f"`ids` holds {token_id}, outside the vocabulary [0, {size - 1}]. "
                        "Pass ids produced by this tokenizer."
                    )
        texts = self._decode_batch(rows) if rows else []
        return texts if batched else texts[0]

    def vocabulary_size(self) -> int:
        raise NotImplementedError

    def get_vocabulary(self) -> list[str]:
        """All tokens, in id order."""
        raise NotImplementedError

    def id_to_token(self, id: int) -> str:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int:
        raise NotImplementedError

    @property
    def special_tokens(self) -> list[str]:
        return [getattr(self, name) for name in self.special_token_attributes if getattr(self, name, None)]

    @property
    def special_token_ids(self) -> list[int]:
        return [
            getattr(self, f"{name}_id")
            for name in self.special_token_attributes
            if getattr(self, f"{name}_id", None) is not None
        ]

    @classmethod
    def from_preset(cls, preset, **kwargs) -> "Tokenizer":
        """Load the tokenizer of `preset`: builtin name, `kaggle://`, `hf://` or a local dir.

        Reads a Keras preset (tokenizer.json + assets/tokenizer/...) or a transformers
        repository (vocab.json + merges.txt, sentencepiece.bpe.model, or tokenizer.json).
        Called on `Tokenizer` it returns the class the preset names; called on a subclass
        it checks that the preset is of that kind. `kwargs` (e.g. `sequence_length`) go to
        the constructor.
        """
        preset = open_preset(preset, require_config=False)
        spec = preset.loader.tokenizer_spec()
        target = Tokenizer._classes[spec.class_name]
        if not issubclass(target, cls):
            raise ValueError(
                f"Preset {str(preset.handle)!r} holds a {spec.class_name}, not a {cls.__name__}. Use "
                f"{spec.class_name}.from_preset(...) or Tokenizer.from_preset(...)."
            )
        return target.from_spec(spec, **{**spec.config, **kwargs})

    @classmethod
    def from_spec(cls, spec: "tokenizer_files.TokenizerSpec", **kwargs) -> "Tokenizer":
        """Build from the files a preset holds (see presets.tokenizer_files)."""
        raise NotImplementedError

    def save_to_preset(self, directory, format: str = "keras") -> pathlib.Path:
        """Write the tokenizer's files into `directory`; files already there are replaced
        (never through a link).

        format="keras": exactly what keras_hub writes (tokenizer.json and
        assets/tokenizer/...), so `keras_hub.models.Tokenizer.from_preset(directory)` loads it.
        format="transformers": tokenizer.json, tokenizer_config.json, special_tokens_map.json
        and vocab.json + merges.txt (RoBERTa) or sentencepiece.bpe.model (XLM-R), so
        `transformers.AutoTokenizer.from_pretrained(directory)` gives the same ids (see
        tokenizers/hf_files.py)."""
        if format == "transformers":
            from .hf_files import save_hf_files

            return save_hf_files(self, directory)
        if format != "keras":
            raise ValueError(f"`format`={format!r} is not supported; use 'keras' or 'transformers'.")
        directory = files.check_output_directory(directory)
        assets = files.ensure_subdirectory(directory, names.KERAS_TOKENIZER_ASSETS)
        self._save_assets(assets)
        files.write_json(directory / names.KERAS_TOKENIZER_FILE, tokenizer_files.keras_tokenizer_config(self))
        return directory

    def keras_extra_config(self) -> dict:
        """The constructor arguments keras_hub records in tokenizer.json."""
        raise NotImplementedError

    def _save_assets(self, assets: pathlib.Path) -> None:
        raise NotImplementedError

    # -- subclass hooks ---------------------------------------------------------------------

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def _decode_batch(self, rows: list[list[int]]) -> list[str]:
        raise NotImplementedError

    def _next_safe_cut(self, text: str, start: int) -> int | None:
        """The first position c >= start where `ids(text[:c])` is provably the start of
        `ids(text)` (see tokenizers/prefix.py), or None: then the whole text is tokenized."""
        return None

    def _check_id(self, id) -> int:
        if not _is_int(id):
            raise TypeError(f"`id` must be an int; got {type(id).__name__} ({id!r}).")
        size = self.vocabulary_size()
        if not 0 <= id < size:
            raise ValueError(f"`id` must be in [0, {size - 1}]; got {id}.")
        return int(id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocabulary_size={self.vocabulary_size()}, sequence_length={self.sequence_length})"
