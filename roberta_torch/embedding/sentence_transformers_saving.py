"""`TextEmbedder.save_to_preset(directory, format="sentence-transformers")`: a directory that
`sentence_transformers.SentenceTransformer(directory)` loads and that encodes exactly as the
embedder does.

The layout is sentence-transformers' classic one, which every version since 2.x (and
Text Embeddings Inference) reads: the encoder as a transformers checkpoint at the root
(config.json + model.safetensors + the tokenizer's transformers files), then

    modules.json                       Transformer ("") -> Pooling (1_Pooling) [-> Normalize (2_Normalize)]
    sentence_bert_config.json          max_seq_length, do_lower_case
    1_Pooling/config.json              word_embedding_dimension, pooling_mode_* flags, include_prompt
    config_sentence_transformers.json  prompts, default_prompt_name, similarity_fn_name

bge-m3's sparse and ColBERT heads, when the embedder has them, are written as
sparse_linear.pt / colbert_linear.pt (tensors only: they load with weights_only=True).
"""

from __future__ import annotations

import io
import pathlib

import torch

from ..presets import files, saving
from .pooling import LEGACY_POOLING_KEYS

_MODULE_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Normalize": "sentence_transformers.models.Normalize",
}


def _modules(normalize: bool) -> list[dict]:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": _MODULE_TYPES["Transformer"]},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": _MODULE_TYPES["Pooling"]},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": _MODULE_TYPES["Normalize"]})
    return modules


def _pooling_config(config, embedding_dim: int) -> dict:
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


def write_sentence_transformers(embedder, directory: pathlib.Path) -> None:
    """Write every file into an existing (staging) directory: weights first, configs last."""
    config = embedder.config
    saving.write_backbone(embedder.backbone, directory, "transformers")
    embedder.tokenizer.save_to_preset(directory, format="transformers")
    if embedder.heads is not None:
        for name, module in (("sparse_linear.pt", embedder.heads.sparse_linear), ("colbert_linear.pt", embedder.heads.colbert_linear)):
            buffer = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buffer)
            files.write_bytes(directory / name, buffer.getvalue())
    files.ensure_subdirectory(directory, "1_Pooling")
    files.write_json(directory / "1_Pooling" / "config.json", _pooling_config(config, embedder.embedding_dim))
    if config.normalize:
        files.ensure_subdirectory(directory, "2_Normalize")
        files.write_json(directory / "2_Normalize" / "config.json", {})
    files.write_json(
        directory / "sentence_bert_config.json",
        {"max_seq_length": embedder.max_seq_length, "do_lower_case": bool(config.do_lower_case)},
    )
    files.write_json(
        directory / "config_sentence_transformers.json",
        {
            "prompts": dict(config.prompts),
            "default_prompt_name": config.default_prompt_name,
            "similarity_fn_name": config.similarity,
        },
    )
    files.write_json(directory / files.ST_MODULES_FILE, _modules(config.normalize))


def save_embedder(embedder, directory, format: str = "sentence-transformers", *, overwrite: bool = False) -> pathlib.Path:
    if format != "sentence-transformers":
        raise ValueError(
            f"`format`={format!r} is not supported for a TextEmbedder; use 'sentence-transformers' (or save "
            "its backbone with embedder.backbone.save_to_preset(..., format=...))."
        )
    with files.staged_directory(directory, overwrite=overwrite) as staging:
        write_sentence_transformers(embedder, staging)
    return pathlib.Path(directory)
