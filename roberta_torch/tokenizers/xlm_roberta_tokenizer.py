"""XLM-RoBERTa's sentencepiece tokenizer with fairseq's id layout.

A sentencepiece model numbers its pieces `<unk>`=0, `<s>`=1, `</s>`=2, then the rest.
fairseq (and so every XLM-R checkpoint, keras_hub and transformers) uses instead

    <s>=0, <pad>=1, </s>=2, <unk>=3, piece k (k >= 3) = k + 1, <mask> = last id,

so the vocabulary has `sentencepiece size + 2` ids. This module applies that mapping
exactly as keras_hub's `XLMRobertaTokenizer` does, including its detokenization
(`<mask>` dropped, `<s>`/`</s>` decode to nothing, `<pad>`/`<unk>` decode to
sentencepiece's unknown mark " ⁇ ").

Two backends: the `sentencepiece` library on a model file (vocabulary.spm,
sentencepiece.bpe.model: the reference, equal to keras_hub on every fixture string), or,
for a transformers repository that ships only `tokenizer.json`, the `tokenizers` library
on that file (equal to transformers; to keras_hub except on text spelling "<s>", "<mask>"...).
"""

from __future__ import annotations

import functools
import os

from .. import optional
from . import prefix
from .base import Tokenizer, canonicalize_texts

FAIRSEQ_PREFIX = ("<s>", "<pad>", "</s>", "<unk>")
MASK_TOKEN = "<mask>"
# What sentencepiece's Decode writes for an unknown piece.
UNKNOWN_SURFACE = " \u2047 "


def import_sentencepiece():
    return optional.require("sentencepiece", "XLMRobertaTokenizer")


def read_proto(proto) -> bytes:
    """A serialized sentencepiece model: bytes, or the path of a .spm / .model file."""
    if isinstance(proto, (bytes, bytearray)):
        return bytes(proto)
    if isinstance(proto, (str, os.PathLike)):
        with open(proto, "rb") as file:
            return file.read()
    raise TypeError(
        "`proto` must be the bytes of a sentencepiece model or the path of one "
        f"(vocabulary.spm / sentencepiece.bpe.model); got {type(proto).__name__}."
    )


def _fairseq_id(spm_id: int) -> int:
    """keras_hub's fixed rule, for any sentencepiece model: sentencepiece id 0 becomes
    `<unk>` (3), every other id k becomes k + 1 (XLM-R's models have unk=0, bos=1, eos=2,
    so this is fairseq's layout there)."""
    return FAIRSEQ_PREFIX.index("<unk>") if spm_id == 0 else spm_id + 1


class _SentencePieceBackend:
    """fairseq ids over a sentencepiece model (what keras_hub does)."""

    def __init__(self, proto: bytes):
        sentencepiece = import_sentencepiece()
        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
            self.proto = proto
        except Exception as error:  # sentencepiece raises RuntimeError / OSError variants
            raise ValueError(f"`proto` is not a valid sentencepiece model: {error}") from error
        self.piece_count = int(self.processor.vocab_size())
        self.spm_unk_id = int(self.processor.unk_id())
        self.vocabulary_size = self.piece_count + 2
        self.mask_token_id = self.vocabulary_size - 1

    def encode(self, texts: list[str]) -> list[list[int]]:
        rows = self.processor.Encode(texts, add_bos=False, add_eos=False)
        return [[_fairseq_id(i) for i in row] for row in rows]

    def encode_with_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Ids and transformers-style character offsets from sentencepiece's piece spans."""
        try:
            protos = self.processor.Encode(texts, return_type="proto")
        except (TypeError, ValueError):  # sentencepiece < 0.2.1
            protos = self.processor.Encode(texts, out_type="immutable_proto")
        unk = FAIRSEQ_PREFIX.index("<unk>")
        all_ids, all_offsets = [], []
        for text, proto in zip(texts, protos):
            char_at_byte = _char_index_of_bytes(text)
            ids, offsets = [], []
            for piece in proto.pieces:
                ids.append(unk if piece.id == self.spm_unk_id else piece.id + 1)
                offsets.append((char_at_byte[piece.begin], char_at_byte[piece.end]))
            all_ids.append(ids)
            all_offsets.append(_transformers_offsets(text, offsets))
        return all_ids, all_offsets

    def decode(self, rows: list[list[int]]) -> list[str]:
        return self.processor.Decode([[self._to_spm(i) for i in row if i != self.mask_token_id] for row in rows])

    @staticmethod
    def _to_spm(token_id: int) -> int:
        # keras_hub's inverse mapping: <unk>(3) -> 0, </s>(2) -> 2, <s>(0) -> 1, <pad>(1) -> 0,
        # piece k+1 -> k.
        return {3: 0, 2: 2, 0: 1}.get(token_id, token_id - 1)

    def piece(self, token_id: int) -> str:
        return self.processor.IdToPiece(token_id - 1)

    def piece_id(self, token: str) -> int:
        # keras_hub's token_to_id maps by meaning (the "<unk>" piece's id -> 3), unlike its
        # tokenize (the fixed rule above); both are followed exactly.
        spm_id = self.processor.PieceToId(token)
        if spm_id == self.processor.PieceToId("<unk>"):
            return FAIRSEQ_PREFIX.index("<unk>")
        return spm_id + 1

    def vocabulary(self) -> list[str]:
        pieces = [self.processor.IdToPiece(i) for i in range(self.piece_count)]
        return list(FAIRSEQ_PREFIX) + pieces[3:] + [MASK_TOKEN]

    @functools.cached_property
    def cut_pattern(self):
        """Where a piece boundary is forced (tokenizers/prefix.py), from the model's pieces."""
        return prefix.sentencepiece_cuts(self.processor.IdToPiece(i) for i in range(self.piece_count))

    whole_tokens = ()  # sentencepiece matches its user-defined pieces like any other piece


def _char_index_of_bytes(text: str) -> list[int]:
    """For each UTF-8 byte offset of `text` (and its end), the index of its character."""
    index = []
    for position, char in enumerate(text):
        index.extend([position] * len(char.encode("utf-8")))
    index.append(len(text))
    return index


def _transformers_offsets(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """sentencepiece spans -> transformers' XLM-R offset convention: a piece's leading
    whitespace is not part of its span, and a piece that is only "▁" spans the first
    character of the next piece."""
    trimmed = []
    for start, end in spans:
        while start < end and text[start].isspace():
            start += 1
        trimmed.append((start, end))
    out = list(trimmed)
    following = len(text)
    for index in range(len(trimmed) - 1, -1, -1):
        start, end = trimmed[index]
        if start == end:
            out[index] = (following, min(following + 1, len(text)))
        else:
            following = start
    return out


class _TokenizerJsonBackend:
    """fairseq ids straight from a transformers XLM-R `tokenizer.json` (Unigram model)."""

    def __init__(self, path):
        from .roberta_tokenizer import import_tokenizers

        tokenizers = import_tokenizers()
        self.tokenizer = tokenizers.Tokenizer.from_file(os.fspath(path))
        # The post-processor would add <s> ... </s>; the preprocessor does that.
        self.tokenizer.post_processor = None
        self.vocabulary_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        for index, token in enumerate(FAIRSEQ_PREFIX):
            if self.tokenizer.token_to_id(token) != index:
                raise ValueError(
                    f"{os.fspath(path)!r} does not use fairseq's XLM-R ids ({token!r} should be "
                    f"{index}); it is not an XLM-RoBERTa tokenizer.json."
                )
        self.mask_token_id = self.tokenizer.token_to_id(MASK_TOKEN)
        if self.mask_token_id != self.vocabulary_size - 1:
            raise ValueError(f"{os.fspath(path)!r} has no '<mask>' as its last id; not an XLM-R tokenizer.json.")

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, rows: list[list[int]]) -> list[str]:
        # As keras_hub / sentencepiece: <mask>, <s> and </s> vanish; <pad> and <unk> read as
        # sentencepiece's unknown mark; the pieces go through the file's own decoder.
        dropped = {0, 2, self.mask_token_id}
        texts = []
        for row in rows:
            pieces = [UNKNOWN_SURFACE if i in (1, 3) else self.tokenizer.id_to_token(i) for i in row if i not in dropped]
            texts.append(self.tokenizer.decoder.decode(pieces) if self.tokenizer.decoder else "".join(pieces))
        return texts

    def encode_with_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [e.ids for e in encodings], [[tuple(span) for span in e.offsets] for e in encodings]

    def piece(self, token_id: int) -> str:
        return self.tokenizer.id_to_token(token_id)

    def piece_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        return FAIRSEQ_PREFIX.index("<unk>") if token_id is None else token_id

    def vocabulary(self) -> list[str]:
        return [self.tokenizer.id_to_token(i) for i in range(self.vocabulary_size)]

    @functools.cached_property
    def cut_pattern(self):
        return prefix.sentencepiece_cuts(self.tokenizer.get_vocab(with_added_tokens=True))

    @functools.cached_property
    def whole_tokens(self) -> tuple[str, ...]:
        """The added tokens ("<mask>", ...), matched in the text before the model runs."""
        return tuple(token.content for token in self.tokenizer.get_added_tokens_decoder().values())


class XLMRobertaTokenizer(Tokenizer):
    """XLM-R sentencepiece: text -> ids like keras_hub's `XLMRobertaTokenizer`.

    Args:
        proto: the sentencepiece model, as bytes or the path of vocabulary.spm /
            sentencepiece.bpe.model.
        sequence_length: if set, outputs are truncated / padded (with `<pad>`=1).

    Ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, sentencepiece piece k at k + 1,
    `<mask>` = `vocabulary_size() - 1`. Unknown tokens map to `<unk>` (no error),
    as in keras_hub.
    """

    keras_class_name = "XLMRobertaTokenizer"
    keras_module = "keras_hub.src.models.xlm_roberta.xlm_roberta_tokenizer"
    keras_config_name = "xlm_roberta_tokenizer"

    def __init__(self, proto, sequence_length: int | None = None):
        super().__init__(sequence_length=sequence_length)
        self._set_backend(_SentencePieceBackend(read_proto(proto)))

    def _set_backend(self, backend) -> None:
        self._backend = backend
        self.start_token, self.start_token_id = "<s>", 0
        self.pad_token, self.pad_token_id = "<pad>", 1
        self.end_token, self.end_token_id = "</s>", 2
        self.unk_token, self.unk_token_id = "<unk>", 3
        self.mask_token, self.mask_token_id = MASK_TOKEN, backend.mask_token_id

    @classmethod
    def from_hf_tokenizer_file(cls, path, sequence_length: int | None = None) -> "XLMRobertaTokenizer":
        """Build from a transformers XLM-R `tokenizer.json` when no sentencepiece model exists.

        Ids follow transformers' fast tokenizer, which was converted from the same
        sentencepiece model and agrees with it except on text spelling special tokens
        ("<mask>", "<s>", ...: special here, plain text for sentencepiece and keras_hub).
        Prefer the model file when there is one.
        """
        tokenizer = cls.__new__(cls)
        Tokenizer.__init__(tokenizer, sequence_length=sequence_length)
        tokenizer._set_backend(_TokenizerJsonBackend(path))
        return tokenizer

    def vocabulary_size(self) -> int:
        return self._backend.vocabulary_size

    def get_vocabulary(self) -> list[str]:
        return self._backend.vocabulary()

    def id_to_token(self, id: int) -> str:
        id = self._check_id(id)
        if id == self.mask_token_id:
            return MASK_TOKEN
        if id < len(FAIRSEQ_PREFIX):
            return FAIRSEQ_PREFIX[id]
        return self._backend.piece(id)

    def token_to_id(self, token: str) -> int:
        if not isinstance(token, str):
            raise TypeError(f"`token` must be a str; got {type(token).__name__} ({token!r}).")
        if token == MASK_TOKEN:
            return self.mask_token_id
        if token in FAIRSEQ_PREFIX:
            return FAIRSEQ_PREFIX.index(token)
        return self._backend.piece_id(token)

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._backend.encode(texts)

    def _decode_batch(self, rows: list[list[int]]) -> list[str]:
        return self._backend.decode(rows)

    def _next_safe_cut(self, text: str, start: int) -> int | None:
        backend = self._backend
        return prefix.next_cut(backend.cut_pattern, text, start, backend.whole_tokens)

    def encode_with_offsets(self, inputs):
        """Ids and each token's character offsets `(start, end)` in the text, as transformers'
        `offset_mapping` (no special tokens added). A str gives `(ids, offsets)`; a list of
        str gives `(list of ids, list of offsets)`."""
        texts, batched = canonicalize_texts(inputs, "inputs")
        ids, offsets = self._backend.encode_with_offsets(texts) if texts else ([], [])
        return (ids, offsets) if batched else (ids[0], offsets[0])

    def get_config(self) -> dict:
        return {"sequence_length": self.sequence_length}

    @classmethod
    def from_spec(cls, spec, **kwargs) -> "XLMRobertaTokenizer":
        if spec.proto is not None:
            return cls(spec.proto, **kwargs)
        return cls.from_hf_tokenizer_file(spec.hf_tokenizer_json, **kwargs)

    def keras_extra_config(self) -> dict:
        # keras_hub stores the model as an asset, so `proto` is null in the config.
        return {"proto": None, "sequence_length": self.sequence_length, "add_bos": False, "add_eos": False}

    def _save_assets(self, assets) -> None:
        from ..presets import files

        proto = getattr(self._backend, "proto", None)
        if proto is None:
            raise ValueError(
                "This XLMRobertaTokenizer was built from a transformers tokenizer.json, which holds no "
                "sentencepiece model; keras_hub needs assets/tokenizer/vocabulary.spm. Build it from the "
                "sentencepiece model (sentencepiece.bpe.model) to save it."
            )
        files.write_bytes(assets / "vocabulary.spm", proto)
