"""sentence-transformers directories (SentenceTransformer.save), read and written.

    modules.json                         the module list: Transformer [, Pooling] [, Normalize]
    <Transformer path>/                  the encoder: a transformers checkpoint + tokenizer
    <Transformer path>/sentence_bert_config.json   max_seq_length, do_lower_case
    <Transformer path>/tokenizer_config.json       model_max_length (sentence-transformers >= 5
                                                   keeps max_seq_length there)
    <Pooling path>/config.json           pooling mode(s) (`pooling_mode`, or the legacy
                                         `pooling_mode_*_tokens` booleans), include_prompt
    config_sentence_transformers.json    prompts, default_prompt_name, similarity_fn_name

`SentenceTransformersLoader` serves the embedder (its `EmbeddingConfig`) and hands the
backbone, task and tokenizer to the loader of the Transformer module's folder (the directory
itself in the classic layout). Every module path goes through `Preset.file`: a path with
'..', an absolute path, or a linked folder leading outside the preset is refused before
anything is read. `save_embedder` writes the classic layout that every sentence-transformers
since 2.x (and Text Embeddings Inference) reads.
"""

from __future__ import annotations

import logging
import math
import pathlib

from . import bge_m3_files, files, names, saving
from .embedding_config import (
    LEGACY_POOLING_KEYS, SIMILARITY_FUNCTIONS, EmbeddingConfig, check_pooling_modes, read_prompts,
)
from .loader import PresetLoader

logger = logging.getLogger(__name__)

SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
MODULE_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Normalize": "sentence_transformers.models.Normalize",
}


def module_file(path: str, name: str) -> str:
    """A file of the module at `path` (modules.json's "path"; "" is the directory itself)."""
    path = path.rstrip("/")  # a leading "/" stays: an absolute path is refused by Preset.file
    return f"{path}/{name}" if path else name


def transformer_path(modules) -> str:
    """The Transformer module's folder in a modules.json list ("" when it has none)."""
    for module in modules if isinstance(modules, list) else []:
        if isinstance(module, dict) and str(module.get("type", "")).rsplit(".", 1)[-1] == "Transformer":
            path = module.get("path", "")
            return path if isinstance(path, str) else ""
    return ""


class SentenceTransformersLoader(PresetLoader):
    """A sentence-transformers directory: its own files for the embedder, the Transformer
    module's loader (`encoder_loader`) for everything else."""

    NAME = "sentence-transformers"

    def __init__(self, preset, modules, encoder_loader):
        super().__init__(preset, preset.raw_config)
        self.modules = modules
        self.encoder_loader = encoder_loader

    # The encoder's parts come from the Transformer module.
    def backbone_spec(self, overrides=None):
        return self.encoder_loader.backbone_spec(overrides)

    def parse_config(self, overrides):
        return self.encoder_loader.parse_config(overrides)

    def backbone_class_name(self):
        return self.encoder_loader.backbone_class_name()

    def max_sequence_length(self):
        return self.encoder_loader.max_sequence_length()

    def read_backbone_tensors(self):
        return self.encoder_loader.read_backbone_tensors()

    def layer_indices(self, source_keys):
        return self.encoder_loader.layer_indices(source_keys)

    def conversion_rows(self, config, model_keys=None):
        return self.encoder_loader.conversion_rows(config, model_keys)

    def table_dims(self, config, dims):
        return self.encoder_loader.table_dims(config, dims)

    def preprocessor_config(self):
        return self.encoder_loader.preprocessor_config()

    def load_backbone(self, backbone_cls, load_weights: bool = True, **kwargs):
        return self.encoder_loader.load_backbone(backbone_cls, load_weights, **kwargs)

    def stored_task(self, classes):
        return self.encoder_loader.stored_task(classes)

    def read_task_tensors(self, task_cls):
        return self.encoder_loader.read_task_tensors(task_cls)

    def task_rows(self, task_cls, backbone_config):
        return self.encoder_loader.task_rows(task_cls, backbone_config)

    def source_record(self, source, dims):
        return self.encoder_loader.source_record(source, dims)

    def tokenizer_spec(self):
        return self.encoder_loader.tokenizer_spec()

    def encoder(self):
        return self.encoder_loader.preset

    def bge_m3_heads(self, hidden_dim: int):
        """bge-m3's heads lie at the top of the directory (FlagEmbedding's layout)."""
        return bge_m3_files.read_heads(self.preset, hidden_dim)

    def cross_encoder_config(self):
        """A CrossEncoder directory holds one module, the Transformer (a sequence classifier);
        anything more is an embedding model or a pipeline we do not implement."""
        kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in self._checked_modules()]
        if kinds != ["Transformer"]:
            raise ValueError(
                f"{names.ST_MODULES_FILE!r} of {self.preset.handle} lists the modules {kinds}; roberta_torch's "
                "CrossEncoder reads a single Transformer module (a RoBERTa / XLM-R sequence classifier), as "
                "sentence-transformers saves rerankers."
            )
        return super().cross_encoder_config()

    def _checked_modules(self) -> list:
        modules = self.modules
        if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
            raise ValueError(f"{str(self.preset.file(names.ST_MODULES_FILE))!r} must be a list of {{'type', 'path', ...}} objects.")
        return modules

    # -- the embedder ---------------------------------------------------------------------------

    def embedding_config(self, builtin_name: str | None = None) -> EmbeddingConfig:
        """What the directory says (a builtin name changes nothing: the files are exact)."""
        modules_path = self.preset.file(names.ST_MODULES_FILE)
        modules = self._checked_modules()
        config = EmbeddingConfig(pooling=())
        kinds = []
        for module in sorted(modules, key=lambda m: m.get("idx", 0) if isinstance(m.get("idx", 0), int) else 0):
            kind = str(module["type"]).rsplit(".", 1)[-1]
            path = module.get("path", "")
            if not isinstance(path, str):
                raise ValueError(f"{str(modules_path)!r}: module path {path!r} must be a str.")
            if kind not in SUPPORTED_MODULES:
                raise ValueError(
                    f"{str(modules_path)!r} lists a {module['type']} module; roberta_torch's TextEmbedder "
                    f"reads only {', '.join(SUPPORTED_MODULES)} modules (RoBERTa / XLM-R encoders)."
                )
            kinds.append(kind)
            if kind == "Transformer":
                self._read_transformer(config)
            elif kind == "Pooling":
                self._read_pooling(module_file(path, names.ST_MODULE_CONFIG), config)
            else:
                config.normalize = True
        if kinds[:1] != ["Transformer"] or kinds.count("Transformer") != 1:
            raise ValueError(f"{str(modules_path)!r} must start with its one Transformer module; got {kinds}.")
        if not config.pooling:
            raise ValueError(
                f"{str(modules_path)!r} has no Pooling module: its output is token vectors, not one "
                "embedding per text. Pass pooling=... to TextEmbedder.from_preset to choose one."
            )
        self._read_settings(config)
        return config

    def _read_transformer(self, config: EmbeddingConfig) -> None:
        encoder = self.encoder()
        settings = encoder.json(names.ST_SENTENCE_BERT_CONFIG) or {}
        where = encoder.source.describe()
        max_length = settings.get("max_seq_length")
        if max_length is None:
            # sentence-transformers >= 5 keeps it as the tokenizer's model_max_length, capped by
            # the model's max_position_embeddings (huge "no limit" sentinels included).
            max_length = (encoder.json(names.HF_TOKENIZER_CONFIG) or {}).get("model_max_length")
            positions = encoder.raw_config.get("max_position_embeddings")
            if positions is not None:
                max_length = positions if max_length is None else min(
                    _checked_length(max_length, where), _checked_length(positions, where)
                )
        if max_length is not None:
            config.max_seq_length = _checked_length(max_length, where)
        config.do_lower_case = bool(settings.get("do_lower_case", False))

    def _read_pooling(self, name: str, config: EmbeddingConfig) -> None:
        settings = self.preset.json(name)
        if not settings:
            raise FileNotFoundError(f"The Pooling module's config {name!r} is missing or empty in {self.preset.source.describe()!r}.")
        if "pooling_mode" in settings:
            modes = settings["pooling_mode"]
        else:
            modes = tuple(mode for key, mode in LEGACY_POOLING_KEYS.items() if settings.get(key))
            modes = modes or ("mean",)
        config.pooling = check_pooling_modes(modes, f"pooling_mode in {name!r}")
        config.include_prompt = bool(settings.get("include_prompt", True))

    def _read_settings(self, config: EmbeddingConfig) -> None:
        name = names.ST_CONFIG_FILE
        settings = self.preset.json(name) or {}
        config.prompts, config.default_prompt_name = read_prompts(settings, f"{name} of {self.preset.handle}")
        similarity = settings.get("similarity_fn_name") or "cosine"
        if similarity not in SIMILARITY_FUNCTIONS:
            raise ValueError(
                f"similarity_fn_name {similarity!r} in {name!r} is not supported; roberta_torch "
                f"computes {', '.join(SIMILARITY_FUNCTIONS)}."
            )
        config.similarity = similarity


# -- writing ----------------------------------------------------------------------------------------


def _modules(normalize: bool) -> list[dict]:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": MODULE_TYPES["Transformer"]},
        {"idx": 1, "name": "1", "path": names.ST_POOLING_PATH, "type": MODULE_TYPES["Pooling"]},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": names.ST_NORMALIZE_PATH, "type": MODULE_TYPES["Normalize"]})
    return modules


def pooling_config(config: EmbeddingConfig, embedding_dim: int) -> dict:
    """Legacy flags (read by every sentence-transformers version) when they say exactly what
    the embedder computes; they fix the concatenation order, so another order of several
    modes is written as sentence-transformers >= 5's `pooling_mode` list."""
    canonical = tuple(mode for mode in LEGACY_POOLING_KEYS.values() if mode in config.pooling)
    if canonical == tuple(config.pooling):
        pooling = {"word_embedding_dimension": embedding_dim}
        pooling.update({key: mode in config.pooling for key, mode in LEGACY_POOLING_KEYS.items()})
    else:
        pooling = {"embedding_dimension": embedding_dim, "pooling_mode": list(config.pooling)}
    pooling["include_prompt"] = bool(config.include_prompt)
    return pooling


def write_embedder(embedder, directory: pathlib.Path) -> None:
    """Write every file of `embedder` (a TextEmbedder) into an existing (staging) directory:
    weights first, configs last."""
    config = embedder.config
    saving.write_backbone(embedder.backbone, directory, "transformers")
    embedder.tokenizer.save_to_preset(directory, format="transformers")
    if embedder.heads is not None:
        bge_m3_files.write_heads(
            directory, {"sparse_linear": embedder.heads.sparse_linear, "colbert_linear": embedder.heads.colbert_linear}
        )
    files.ensure_subdirectory(directory, names.ST_POOLING_PATH)
    files.write_json(
        directory / names.ST_POOLING_PATH / names.ST_MODULE_CONFIG, pooling_config(config, embedder.embedding_dim)
    )
    if config.normalize:
        files.ensure_subdirectory(directory, names.ST_NORMALIZE_PATH)
        files.write_json(directory / names.ST_NORMALIZE_PATH / names.ST_MODULE_CONFIG, {})
    files.write_json(
        directory / names.ST_SENTENCE_BERT_CONFIG,
        {"max_seq_length": embedder.max_seq_length, "do_lower_case": bool(config.do_lower_case)},
    )
    files.write_json(
        directory / names.ST_CONFIG_FILE,
        {
            "prompts": dict(config.prompts),
            "default_prompt_name": config.default_prompt_name,
            "similarity_fn_name": config.similarity,
        },
    )
    files.write_json(directory / names.ST_MODULES_FILE, _modules(config.normalize))


def save_embedder(embedder, directory, format: str = "sentence-transformers", *, overwrite: bool = False) -> pathlib.Path:
    """`TextEmbedder.save_to_preset`: a directory `SentenceTransformer(directory)` loads and
    that encodes exactly as the embedder does; staged and renamed into place."""
    if format != "sentence-transformers":
        raise ValueError(
            f"`format`={format!r} is not supported for a TextEmbedder; use 'sentence-transformers' (or save "
            "its backbone with embedder.backbone.save_to_preset(..., format=...))."
        )
    with files.staged_directory(directory, overwrite=overwrite) as staging:
        write_embedder(embedder, staging)
    return pathlib.Path(directory)


def _checked_length(value, where: str) -> int:
    """A sequence length read from `where`'s JSON files as an int; ValueError for anything
    else (a bool, a string, NaN, Infinity, < 2)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 2:
        raise ValueError(f"max_seq_length {value!r} read from {where!r} must be an int >= 2.")
    return int(value)
