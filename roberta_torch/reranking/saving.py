"""`CrossEncoder.save_to_preset`: the directory sentence-transformers' `CrossEncoder.save` writes.

    config.json, model.safetensors       the classifier as a transformers
                                         `*ForSequenceClassification` checkpoint, plus
                                         config.json's `sentence_transformers.activation_fn`
                                         (what sentence-transformers 4 / 5 read)
    tokenizer files                      transformers' (tokenizers/hf_files.py), with
                                         model_max_length = the cross-encoder's max length
    modules.json                         one Transformer module at the root
    sentence_bert_config.json            its task: sequence classification, logits as scores
    config_sentence_transformers.json    activation_fn, prompts, default_prompt_name
                                         (sentence-transformers >= 6)

`sentence_transformers.CrossEncoder(directory)` and `CrossEncoder.from_preset(directory)` both
load it and score exactly as the saved cross-encoder. Staged and renamed into place.
"""

from __future__ import annotations

import pathlib

from ..presets import files, names, transformers_format
from ..presets.cross_encoder_config import ACTIVATION_CLASS_PATHS
from ..tasks.saving import transformers_task_export
from ..tokenizers.hf_files import save_hf_files
from .activations import ACTIVATIONS

SAVE_FORMATS = ("sentence-transformers",)
TRANSFORMER_MODULE = "sentence_transformers.base.modules.transformer.Transformer"
# What sentence-transformers 6 writes for a CrossEncoder's Transformer module.
SEQUENCE_CLASSIFICATION_MODULE = {
    "transformer_task": "sequence-classification",
    "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
    "module_output_name": "scores",
}


def check_savable(cross_encoder, format: str) -> str:
    """The activation's torch class path; ValueError naming what cannot be written."""
    if format not in SAVE_FORMATS:
        raise ValueError(f"`format`={format!r} is not supported for a CrossEncoder; use one of {SAVE_FORMATS}.")
    classifier = cross_encoder.classifier
    if classifier.activation != "linear" or classifier.hidden_dim != classifier.backbone.hidden_dim:
        raise ValueError(
            "sentence-transformers' CrossEncoder holds a transformers classification head (hidden_dim = hidden "
            f"size, no output activation); this classifier has hidden_dim={classifier.hidden_dim}, "
            f"activation={classifier.activation!r}. Save the classifier itself with format='keras'."
        )
    path = ACTIVATION_CLASS_PATHS.get(cross_encoder.activation_name)
    if path is None or cross_encoder.activation_fn is not ACTIVATIONS.get(cross_encoder.activation_name):
        raise ValueError(
            f"The activation {cross_encoder.activation_name!r} is a callable, which a preset cannot store; build the "
            f"CrossEncoder with activation_fn= one of {sorted(ACTIVATION_CLASS_PATHS)} to save it."
        )
    return path


def save_cross_encoder(cross_encoder, directory, format: str = "sentence-transformers", *,
                       overwrite: bool = False) -> pathlib.Path:
    activation_path = check_savable(cross_encoder, format)
    config = cross_encoder.config
    classifier = cross_encoder.classifier
    with files.staged_directory(directory, overwrite=overwrite) as staging:
        transformers_format.save(classifier.backbone, staging, task=transformers_task_export(classifier))
        save_hf_files(cross_encoder.tokenizer, staging, model_max_length=cross_encoder.max_length)
        model_config = files.read_json(staging / names.CONFIG_FILE)
        model_config["sentence_transformers"] = {"activation_fn": activation_path}
        files.write_json(staging / names.CONFIG_FILE, model_config)
        files.write_json(staging / names.ST_SENTENCE_BERT_CONFIG, SEQUENCE_CLASSIFICATION_MODULE)
        files.write_json(staging / names.ST_CONFIG_FILE, {
            "model_type": "CrossEncoder",
            "activation_fn": activation_path,
            "prompts": dict(config.prompts),
            "default_prompt_name": config.default_prompt_name,
        })
        files.write_json(staging / names.ST_MODULES_FILE,
                         [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER_MODULE}])
    return pathlib.Path(directory)
