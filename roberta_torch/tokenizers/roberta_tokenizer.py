"""RoBERTa's byte-level BPE tokenizer, built on the Hugging Face `tokenizers` library.

The pipeline is RoBERTa's (GPT-2's): split the text with GPT-2's regex, map every
byte to a printable symbol (a space becomes `Ġ`), apply the BPE merges within each
piece, look the pieces up in the vocabulary. `<s>`, `</s>`, `<pad>` and `<mask>`
written in the text are kept whole, as keras_hub does. No prefix space is added.

Ids equal keras_hub's `RobertaTokenizer` and transformers' `RobertaTokenizer` on the
same vocabulary and merges. (keras_hub 0.32's two code paths disagree with each other on
some whitespace runs and on quote-letter sequences; the ids here follow the original GPT-2
splitting, which transformers and keras_hub's tf.data path use: see
tests/fixtures/tokenizers/README.md.)
"""

from __future__ import annotations

import json
import os
from typing import Iterable

from .. import optional
from . import prefix
from .base import Tokenizer, canonicalize_texts

# keras_hub's RobertaTokenizer keeps exactly these whole when they appear in text.
DEFAULT_UNSPLITTABLE_TOKENS = ("<s>", "<pad>", "</s>", "<mask>")


def import_tokenizers():
    return optional.require("tokenizers", "RobertaTokenizer (Hugging Face tokenizers)")


def read_vocabulary(vocabulary) -> dict[str, int]:
    """A token -> id dict, or the path of a JSON file holding one (vocab.json)."""
    if isinstance(vocabulary, (str, os.PathLike)):
        with open(vocabulary, encoding="utf-8") as file:
            vocabulary = json.load(file)
    if not isinstance(vocabulary, dict):
        # ValueError, as keras_hub raises for a vocabulary of the wrong kind.
        raise ValueError(
            "`vocabulary` must be a dict mapping token -> id or the path of a JSON file "
            f"holding one (vocabulary.json / vocab.json); got {type(vocabulary).__name__}."
        )
    for token, token_id in vocabulary.items():
        if not isinstance(token, str) or not isinstance(token_id, int) or isinstance(token_id, bool):
            raise TypeError(
                f"`vocabulary` must map str tokens to int ids; got {token!r} -> {token_id!r}."
            )
    return dict(vocabulary)


def read_merges(merges) -> list[str]:
    """Merge rules "a b", or the path of merges.txt; '#version' headers and blank lines skipped."""
    if isinstance(merges, (str, os.PathLike)):
        with open(merges, encoding="utf-8") as file:
            merges = [line.rstrip("\r\n") for line in file]
    elif isinstance(merges, Iterable) and not isinstance(merges, (bytes, dict)):
        merges = [" ".join(m) if isinstance(m, (list, tuple)) else m for m in merges]
    else:
        raise TypeError(
            "`merges` must be a list of merge rules ('a b' or (a, b)) or the path of a "
            f"merges.txt file; got {type(merges).__name__}."
        )
    rules = []
    for rule in merges:
        if not isinstance(rule, str):
            raise TypeError(f"`merges` must hold str rules like 'Ġ t'; got {rule!r}.")
        if not rule.strip() or rule.lstrip().startswith("#version"):
            continue
        rules.append(rule)
    return rules


class RobertaTokenizer(Tokenizer):
    """RoBERTa byte-level BPE: text -> ids like keras_hub's `RobertaTokenizer`.

    Args:
        vocabulary: dict token -> id, or the path of vocabulary.json / vocab.json.
        merges: list of merge rules "a b", or the path of merges.txt.
        sequence_length: if set, outputs are truncated / padded to this length.
        add_prefix_space: add a space before the text (keras_hub's default: False).
        unsplittable_tokens: tokens kept whole in text; default `<s> <pad> </s> <mask>`.

    Special token attributes: `start_token_id` (`<s>`), `pad_token_id`, `end_token_id`
    (`</s>`), `mask_token_id`, and `unk_token_id` when the vocabulary has `<unk>`.
    """

    keras_class_name = "RobertaTokenizer"
    keras_module = "keras_hub.src.models.roberta.roberta_tokenizer"
    keras_config_name = "roberta_tokenizer"

    def __init__(
        self,
        vocabulary,
        merges,
        sequence_length: int | None = None,
        add_prefix_space: bool = False,
        unsplittable_tokens: Iterable[str] | None = None,
    ):
        super().__init__(sequence_length=sequence_length)
        self.vocabulary = read_vocabulary(vocabulary)
        self.merges = read_merges(merges)
        if not isinstance(add_prefix_space, bool):
            raise TypeError(f"`add_prefix_space` must be a bool; got {add_prefix_space!r}.")
        self.add_prefix_space = add_prefix_space
        if unsplittable_tokens is None:
            unsplittable_tokens = DEFAULT_UNSPLITTABLE_TOKENS
        if isinstance(unsplittable_tokens, (str, bytes)) or not isinstance(unsplittable_tokens, Iterable):
            # A str would be split into characters, silently changing ids.
            raise TypeError(
                f"`unsplittable_tokens` must be a list of str; got {type(unsplittable_tokens).__name__} "
                f"({unsplittable_tokens!r}). Wrap a single token in a list: [{unsplittable_tokens!r}]."
            )
        self.unsplittable_tokens = list(unsplittable_tokens)
        for token in self.unsplittable_tokens:
            if not isinstance(token, str):
                raise TypeError(f"`unsplittable_tokens` must hold str tokens; got {token!r}.")

        self._set_special_tokens()
        pairs = self._split_merges()
        self._tokenizer = self._build(pairs)
        self._id_to_token = {token_id: token for token, token_id in self.vocabulary.items()}

    def _set_special_tokens(self) -> None:
        specials = {"start_token": "<s>", "pad_token": "<pad>", "end_token": "</s>", "mask_token": "<mask>"}
        for attribute, token in specials.items():
            if token not in self.vocabulary:
                raise ValueError(
                    f"`vocabulary` has no special token {token!r}, which RoBERTa needs "
                    f"(<s>, <pad>, </s>, <mask>). Add it to the vocabulary."
                )
            setattr(self, attribute, token)
            setattr(self, f"{attribute}_id", self.vocabulary[token])
        has_unk = "<unk>" in self.vocabulary
        self.unk_token = "<unk>" if has_unk else None
        self.unk_token_id = self.vocabulary["<unk>"] if has_unk else None
        for token in self.unsplittable_tokens:
            if token not in self.vocabulary:
                raise ValueError(
                    f"`unsplittable_tokens` holds {token!r}, which is not in the vocabulary."
                )

    def _split_merges(self) -> list[tuple[str, str]]:
        pairs = []
        for rule in self.merges:
            parts = rule.split(" ")
            if len(parts) != 2 or parts[0] not in self.vocabulary or parts[1] not in self.vocabulary:
                raise ValueError(
                    f"`merges` rule {rule!r} must be two vocabulary tokens separated by one space. "
                    "Check that merges.txt belongs to this vocabulary."
                )
            pairs.append((parts[0], parts[1]))
        return pairs

    def _build(self, pairs):
        tokenizers = import_tokenizers()
        from tokenizers import decoders, models, pre_tokenizers

        tokenizer = tokenizers.Tokenizer(models.BPE(vocab=self.vocabulary, merges=pairs))
        # use_regex=True: GPT-2's split, with its lookahead for runs of whitespace.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        if self.unsplittable_tokens:
            tokenizer.add_special_tokens(self.unsplittable_tokens)
        return tokenizer

    @classmethod
    def from_hf_tokenizer_file(cls, path, **kwargs) -> "RobertaTokenizer":
        """Build from a transformers `tokenizer.json` (its BPE vocabulary and merges)."""
        with open(path, encoding="utf-8") as file:
            spec = json.load(file)
        model = spec.get("model") if isinstance(spec, dict) else None
        if not isinstance(model, dict) or model.get("type") != "BPE":
            kind = model.get("type") if isinstance(model, dict) else None
            raise ValueError(
                f"{os.fspath(path)!r} is not a byte-level BPE tokenizer.json (model type {kind!r}); "
                "RobertaTokenizer needs a RoBERTa/GPT-2 style tokenizer.json, or vocab.json + merges.txt."
            )
        vocabulary = dict(model["vocab"])
        for added in spec.get("added_tokens", []):
            vocabulary.setdefault(added["content"], added["id"])
        kwargs.setdefault("add_prefix_space", _byte_level_prefix_space(spec.get("pre_tokenizer")))
        return cls(vocabulary, model["merges"], **kwargs)

    # -- vocabulary -----------------------------------------------------------------------

    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def get_vocabulary(self) -> list[str]:
        return [token for token, _ in sorted(self.vocabulary.items(), key=lambda item: item[1])]

    def id_to_token(self, id: int) -> str:
        token = self._id_to_token.get(self._check_id(id))
        if token is None:
            raise ValueError(f"`id` {id} is not assigned to any token in this vocabulary.")
        return token

    def token_to_id(self, token: str) -> int:
        if not isinstance(token, str):
            raise TypeError(f"`token` must be a str; got {type(token).__name__} ({token!r}).")
        if token not in self.vocabulary:
            raise ValueError(f"`token` {token!r} is not in the vocabulary.")
        return self.vocabulary[token]

    # -- encode / decode ------------------------------------------------------------------

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _decode_batch(self, rows: list[list[int]]) -> list[str]:
        # Special tokens stay in the text, as in keras_hub ("<s>hello</s>").
        return self._tokenizer.decode_batch(rows, skip_special_tokens=False)

    def _next_safe_cut(self, text: str, start: int) -> int | None:
        # GPT-2's pre-tokenizer splits there (tokenizers/prefix.py); never inside "<mask>" etc.
        return prefix.next_cut(prefix.BYTE_LEVEL_BPE_CUTS, text, start, self.unsplittable_tokens)

    @classmethod
    def from_spec(cls, spec, **kwargs) -> "RobertaTokenizer":
        if spec.vocabulary is not None:
            return cls(spec.vocabulary, spec.merges, **kwargs)
        return cls.from_hf_tokenizer_file(spec.hf_tokenizer_json, **kwargs)

    def keras_extra_config(self) -> dict:
        return self.get_config()

    def _save_assets(self, assets) -> None:
        from ..presets import files

        # As keras_hub: json.dump of the vocabulary, merges one per line.
        files.write_text(assets / "vocabulary.json", json.dumps(self.vocabulary))
        files.write_text(assets / "merges.txt", "\n".join(self.merges) + "\n")

    def encode_with_offsets(self, inputs):
        """Ids and each token's character offsets `(start, end)` in the text, equal to
        transformers' `offset_mapping` (no special tokens added). A str gives
        `(ids, offsets)`; a list of str gives `(list of ids, list of offsets)`."""
        texts, batched = canonicalize_texts(inputs, "inputs")
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
        ids = [encoding.ids for encoding in encodings]
        offsets = [
            [_trim_leading_space(text, span) for span in encoding.offsets] for text, encoding in zip(texts, encodings)
        ]
        return (ids, offsets) if batched else (ids[0], offsets[0])

    def get_config(self) -> dict:
        """keras_hub's config keys for this tokenizer (vocabulary and merges are assets)."""
        return {
            "sequence_length": self.sequence_length,
            "add_prefix_space": self.add_prefix_space,
            "unsplittable_tokens": list(self.unsplittable_tokens),
        }


def _trim_leading_space(text: str, span) -> tuple[int, int]:
    """transformers' RobertaProcessing(trim_offsets=True): a token's leading spaces (byte-level
    "Ġ", not tabs or newlines) are not part of its span (an all-space token becomes the empty
    span at its end)."""
    start, end = span
    while start < end and text[start] == " ":
        start += 1
    return start, end


def _byte_level_prefix_space(pre_tokenizer) -> bool:
    """The add_prefix_space of a ByteLevel pre-tokenizer in a tokenizer.json (default False)."""
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "ByteLevel":
        return bool(pre_tokenizer.get("add_prefix_space", False))
    for child in pre_tokenizer.get("pretokenizers", []) or []:
        if isinstance(child, dict) and child.get("type") == "ByteLevel":
            return bool(child.get("add_prefix_space", False))
    return False
