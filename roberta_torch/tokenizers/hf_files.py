"""The tokenizer files transformers reads, written from a roberta_torch tokenizer, so that
`transformers.AutoTokenizer.from_pretrained(directory)` gives the same ids (with
`add_special_tokens=False`; with the default it adds `<s> ... </s>` as our preprocessor
does).

RoBERTa (`RobertaTokenizer`):
    tokenizer.json           the `tokenizers` pipeline the tokenizer runs (byte-level BPE),
                             plus RobertaProcessing; added tokens = the unsplittable tokens
    vocab.json + merges.txt  for slow tokenizers and older transformers
XLM-R (`XLMRobertaTokenizer`):
    tokenizer.json           the sentencepiece model as a `tokenizers` Unigram pipeline in
                             fairseq's id layout (what transformers' converter builds)
    sentencepiece.bpe.model  the sentencepiece model itself
Both: tokenizer_config.json and special_tokens_map.json.

Where transformers and roberta_torch differ by design, documented in README.md:
  * XLM-R: text that spells a special token ("<mask>", "<s>") is one special token in
    transformers and plain text for sentencepiece (and keras_hub, and roberta_torch);
  * RoBERTa: "<unk>" is written as the unknown token only when the tokenizer keeps it whole
    (keras_hub does not), otherwise transformers would keep "<unk>" text whole.
"""

from __future__ import annotations

import json
import pathlib

from ..presets import files, names

# transformers' RobertaTokenizer / XLMRobertaTokenizer special-token attributes.
_SPECIALS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


def _added_token(token: str, token_id: int) -> dict:
    # lstrip False for <mask> too: roberta_torch (as keras_hub) keeps the space before it.
    return {
        "id": token_id,
        "content": token,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _specials(tokenizer, whole_tokens) -> dict:
    """The special tokens transformers should know: those the tokenizer treats as special."""
    return {name: token for name, token in _SPECIALS.items() if name != "unk_token" or token in whole_tokens}


def _tokenizer_config(tokenizer, class_name: str, specials: dict, added: dict, extra: dict) -> dict:
    config = {
        "added_tokens_decoder": {str(i): {k: v for k, v in t.items() if k != "id"} for i, t in sorted(added.items())},
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": class_name,
        **specials,
        **extra,
    }
    return dict(sorted(config.items()))


def _write_common(directory: pathlib.Path, config: dict, specials: dict, added: dict) -> None:
    files.write_json(directory / names.HF_TOKENIZER_CONFIG, config)
    special_map = {}
    for name, token in specials.items():
        token_id = next((i for i, t in added.items() if t["content"] == token), None)
        entry = added.get(token_id, _added_token(token, -1))
        special_map[name] = {k: v for k, v in entry.items() if k not in ("id", "special")}
    files.write_json(directory / names.HF_SPECIAL_TOKENS_MAP, special_map)


# -- RoBERTa ----------------------------------------------------------------------------------


def roberta_tokenizer_json(tokenizer) -> str:
    """The tokenizer's own `tokenizers` pipeline, with RoBERTa's <s> ... </s> template."""
    from tokenizers import Tokenizer, processors

    pipeline = Tokenizer.from_str(tokenizer._tokenizer.to_str())
    pipeline.post_processor = processors.RobertaProcessing(
        (tokenizer.end_token, tokenizer.end_token_id),
        (tokenizer.start_token, tokenizer.start_token_id),
        trim_offsets=True,
        add_prefix_space=tokenizer.add_prefix_space,
    )
    spec = json.loads(pipeline.to_str())
    spec["added_tokens"] = [
        _added_token(token, tokenizer.vocabulary[token])
        for token in sorted(tokenizer.unsplittable_tokens, key=lambda t: tokenizer.vocabulary.get(t, -1))
        if token in tokenizer.vocabulary
    ]
    return json.dumps(spec, ensure_ascii=False, indent=2)


def save_roberta(tokenizer, directory: pathlib.Path, model_max_length: int) -> None:
    whole = set(tokenizer.unsplittable_tokens)
    added = {tokenizer.vocabulary[t]: _added_token(t, tokenizer.vocabulary[t]) for t in whole if t in tokenizer.vocabulary}
    specials = _specials(tokenizer, whole)
    if "unk_token" not in specials:
        specials["unk_token"] = None  # see the module docstring
    extra = {
        "add_prefix_space": tokenizer.add_prefix_space,
        "errors": "replace",
        "model_max_length": model_max_length,
        "trim_offsets": True,
    }
    listed = set(specials.values())
    additional = [t for t in tokenizer.unsplittable_tokens if t not in listed]
    if additional:
        extra["additional_special_tokens"] = additional
    files.write_text(directory / names.HF_TOKENIZER_FILE, roberta_tokenizer_json(tokenizer))
    # As transformers' slow RobertaTokenizer writes them.
    files.write_text(
        directory / names.HF_VOCAB_JSON,
        json.dumps(tokenizer.vocabulary, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
    )
    files.write_text(directory / names.HF_MERGES, "#version: 0.2\n" + "\n".join(tokenizer.merges) + "\n")
    _write_common(directory, _tokenizer_config(tokenizer, "RobertaTokenizer", specials, added, extra), specials, added)


# -- XLM-R ------------------------------------------------------------------------------------


def xlm_roberta_tokenizer_json(proto: bytes, mask_token_id: int) -> str:
    """A sentencepiece model as transformers' XLMRobertaConverter builds it: the Unigram
    pieces in fairseq's layout (<s> <pad> </s> <unk>, pieces 3.., <mask>), the model's
    precompiled normalizer, Metaspace pre-tokenizer and decoder."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece.piece, piece.score) for piece in model.pieces[3:]]
    vocab += [("<mask>", 0.0)]
    if len(vocab) - 1 != mask_token_id:
        raise ValueError(f"The sentencepiece model gives {len(vocab)} ids; the tokenizer's <mask> is {mask_token_id}.")
    pipeline = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    spec = model.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if steps:
        pipeline.normalizer = normalizers.Sequence(steps)
    scheme = "always" if spec.add_dummy_prefix else "never"
    pipeline.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=True)
    pipeline.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme, split=True)
    pipeline.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    out = json.loads(pipeline.to_str())
    out["added_tokens"] = [_added_token(t, i) for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])] + [
        _added_token("<mask>", mask_token_id)
    ]
    return json.dumps(out, ensure_ascii=False, indent=2)


def save_xlm_roberta(tokenizer, directory: pathlib.Path, model_max_length: int) -> None:
    proto = getattr(tokenizer._backend, "proto", None)
    hf_json = getattr(tokenizer._backend, "tokenizer", None)
    if proto is not None:
        files.write_bytes(directory / names.HF_SENTENCEPIECE, proto)
        text = xlm_roberta_tokenizer_json(proto, tokenizer.mask_token_id)
    else:  # built from a transformers tokenizer.json: write that pipeline back
        from tokenizers import Tokenizer, processors

        pipeline = Tokenizer.from_str(hf_json.to_str())
        pipeline.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
        text = json.dumps(json.loads(pipeline.to_str()), ensure_ascii=False, indent=2)
    files.write_text(directory / names.HF_TOKENIZER_FILE, text)
    added = {i: _added_token(t, i) for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    added[tokenizer.mask_token_id] = _added_token("<mask>", tokenizer.mask_token_id)
    specials = dict(_SPECIALS)
    config = _tokenizer_config(
        tokenizer, "XLMRobertaTokenizer", specials, added, {"add_prefix_space": True, "model_max_length": model_max_length}
    )
    _write_common(directory, config, specials, added)


DEFAULT_MODEL_MAX_LENGTH = 512  # every released RoBERTa / XLM-R


def save_hf_files(tokenizer, directory, *, model_max_length: int | None = None) -> pathlib.Path:
    """Write the transformers tokenizer files of `tokenizer` into `directory` (files already
    there are replaced, never through a link); returns the directory.

    model_max_length: what transformers truncates to (`truncation=True`); default the
    tokenizer's `sequence_length`, else 512. Pass the backbone's `max_sequence_length` when
    they go together (the CLI does)."""
    if model_max_length is None:
        model_max_length = getattr(tokenizer, "sequence_length", None) or DEFAULT_MODEL_MAX_LENGTH
    if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length < 1:
        raise ValueError(f"`model_max_length` must be a positive int; got {model_max_length!r}.")
    name = getattr(tokenizer, "keras_class_name", None)
    if name not in ("RobertaTokenizer", "XLMRobertaTokenizer"):
        raise TypeError(
            f"`tokenizer` must be a roberta_torch RobertaTokenizer or XLMRobertaTokenizer; got {type(tokenizer).__name__}."
        )
    directory = files.check_output_directory(directory)
    if name == "RobertaTokenizer":
        save_roberta(tokenizer, directory, model_max_length)
    else:
        save_xlm_roberta(tokenizer, directory, model_max_length)
    return directory
