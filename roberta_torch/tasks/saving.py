"""`task.save_to_preset(directory, format=...)`: every file a task writes, in one module.

format="keras": the backbone's files (config.json, metadata.json, model.weights.h5, written
by `Backbone.save_to_preset`), then task.json and task.weights.h5 with exactly the tree
keras-hub 0.32 writes (every `vars` group with its layer name, keras's compile state
`optimizer/vars/{0,1}`), so `keras_hub.models.TextClassifier.from_preset(dir)` /
`MaskedLM.from_preset(dir)` load it. When the task was loaded from a Keras preset that has
a tokenizer, its tokenizer files are copied and a matching preprocessor.json is written.

format="transformers": config.json + model.safetensors of the matching `RobertaFor*`,
with num_labels / id2label / label2id / problem_type written back.

The head tensors come from the same tables the loader uses (tasks/heads.py), applied
backwards. Weights are written under temporary names and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil

import torch

from ..presets import keras_format, transformers_format
from ..presets.mapping import source_tensors_from_state_dict, table_rows
from .loading import PREPROCESSOR_CONFIG_FILE, TASK_CONFIG_FILE, TASK_WEIGHTS_FILE

logger = logging.getLogger(__name__)

SAVE_FORMATS = ("keras", "transformers")
TRANSFORMERS_WEIGHTS_FILE = "model.safetensors"
KERAS_TOKENIZER_CONFIG_FILE = "tokenizer.json"
KERAS_TOKENIZER_ASSETS = "assets/tokenizer"
# keras_hub compiles every task with Adam(5e-5); task.weights.h5 carries its two scalars.
_KERAS_OPTIMIZER = {"optimizer/vars/0": torch.tensor(0, dtype=torch.int32),
                    "optimizer/vars/1": torch.tensor(5e-5, dtype=torch.float32)}
_MODEL_TYPES = {"RobertaBackbone": "roberta", "XLMRobertaBackbone": "xlm-roberta"}
# Token ids of every RoBERTa / XLM-R vocabulary (fairseq layout); positions start at pad + 1.
_PAD, _BOS, _EOS = 1, 0, 2


def save_task(task, directory, format: str | None = None) -> pathlib.Path:
    if format is None:
        format = "keras" if task.keras_class_name else "transformers"
    if format not in SAVE_FORMATS:
        raise ValueError(f"`format`={format!r} is not supported; use one of {', '.join(SAVE_FORMATS)}.")
    if format == "keras" and not task.keras_class_name:
        raise ValueError(
            f"keras_hub has no {type(task).__name__}; save it with format='transformers' "
            "(a transformers checkpoint that this package and transformers both load)."
        )
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"`directory`={str(directory)!r} is a file; pass a directory to write the preset into.")
    meta = [n for n, p in task.named_parameters() if p.is_meta]
    if meta:
        raise ValueError(
            f"The task has parameters on the meta device ({meta[0]}, ...): load or initialize them first."
        )
    directory.mkdir(parents=True, exist_ok=True)
    if format == "keras":
        _save_keras(task, directory)
    else:
        _save_transformers(task, directory)
    logger.info("Saved %s to %s (%s format).", type(task).__name__, directory, format)
    return directory


# -- keras ------------------------------------------------------------------------------------


def _keras_head_config(task) -> dict:
    config = task.head_config()
    if task.task_kind == "text_classifier":
        for key in ("id2label", "label2id", "problem_type"):  # not keras_hub arguments
            if config.pop(key, None) is not None:
                logger.info("%s is not part of a Keras task preset; save with format='transformers' to keep it.", key)
    return config


def _save_keras(task, directory: pathlib.Path) -> None:
    task.backbone.save_to_preset(directory, format="keras")
    preprocessor = _copy_keras_preprocessor(task, directory)
    rows = table_rows(task.keras_head_table)
    tensors = source_tensors_from_state_dict(rows, task.state_dict(), {})
    tensors.update(_KERAS_OPTIMIZER)
    groups = [("", task.keras_config_name), *task.keras_head_groups, ("optimizer", "adam")]
    if preprocessor is not None:
        groups += [
            ("preprocessor", preprocessor["config"]["name"]),
            ("preprocessor/tokenizer", preprocessor["config"]["tokenizer"]["config"]["name"]),
        ]
    weights = directory / TASK_WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp.h5")
    keras_format.write_weights(tmp, tensors, groups)
    os.replace(tmp, weights)
    backbone_config = keras_format.keras_config(task.backbone)
    task_config = {
        "module": task.keras_module,
        "class_name": task.keras_class_name,
        "config": {
            "backbone": backbone_config,
            "preprocessor": preprocessor,
            "name": task.keras_config_name,
            **_keras_head_config(task),
        },
        "registered_name": f"keras_hub>{task.keras_class_name}",
    }
    keras_format.write_json(directory / TASK_CONFIG_FILE, task_config)


def _copy_keras_preprocessor(task, directory: pathlib.Path) -> dict | None:
    """Copy the source Keras preset's tokenizer and write this task's preprocessor.json.

    Returns the preprocessor config (embedded in task.json), or None when the task came
    from no Keras preset with a tokenizer (then keras_hub loads the task without one).
    """
    source = task.preset_directory
    tokenizer_file = None if source is None else pathlib.Path(source) / KERAS_TOKENIZER_CONFIG_FILE
    if tokenizer_file is None or not tokenizer_file.is_file():
        return None
    try:
        tokenizer_config = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not isinstance(tokenizer_config, dict) or "module" not in tokenizer_config:
        return None  # a transformers tokenizer.json, not keras_hub's
    if pathlib.Path(source).resolve() != directory.resolve():
        shutil.copy2(tokenizer_file, directory / KERAS_TOKENIZER_CONFIG_FILE)
        assets = pathlib.Path(source) / KERAS_TOKENIZER_ASSETS
        if assets.is_dir():
            shutil.copytree(assets, directory / KERAS_TOKENIZER_ASSETS, dirs_exist_ok=True)
    sequence_length = min(512, task.backbone.max_sequence_length)
    saved = pathlib.Path(source) / PREPROCESSOR_CONFIG_FILE
    if saved.is_file():
        try:
            sequence_length = json.loads(saved.read_text(encoding="utf-8"))["config"]["sequence_length"]
        except (ValueError, KeyError, TypeError):
            pass
    module, class_name = task.keras_preprocessor
    name = task.keras_config_name.replace("_text_classifier", "_text_classifier_preprocessor").replace(
        "_masked_lm", "_masked_lm_preprocessor"
    )
    config = {
        "name": name,
        "trainable": True,
        "dtype": {
            "module": "keras",
            "class_name": "DTypePolicy",
            "config": {"name": "float32"},
            "registered_name": None,
        },
        "tokenizer": tokenizer_config,
        "config_file": PREPROCESSOR_CONFIG_FILE,
        "sequence_length": sequence_length,
        "truncate": "round_robin",
    }
    if task.task_kind == "masked_lm":
        config.update(mask_selection_rate=0.15, mask_selection_length=96, mask_token_rate=0.8, random_token_rate=0.1)
    preprocessor = {
        "module": module,
        "class_name": class_name,
        "config": config,
        "registered_name": f"keras_hub>{class_name}",
    }
    keras_format.write_json(directory / PREPROCESSOR_CONFIG_FILE, preprocessor)
    return preprocessor


# -- transformers -----------------------------------------------------------------------------


def transformers_config(task) -> dict:
    backbone = task.backbone
    config = {
        "architectures": [task.transformers_architecture],
        "model_type": _MODEL_TYPES[backbone.keras_class_name],
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_heads,
        "intermediate_size": backbone.intermediate_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": backbone.dropout,
        "attention_probs_dropout_prob": backbone.dropout,
        "max_position_embeddings": backbone.max_sequence_length + _PAD + 1,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": transformers_format.LAYER_NORM_EPSILON,
        "position_embedding_type": "absolute",
        "pad_token_id": _PAD,
        "bos_token_id": _BOS,
        "eos_token_id": _EOS,
        "tie_word_embeddings": True,
        "dtype": str(backbone.dtype_policy.variable_dtype).removeprefix("torch."),
    }
    if task.task_kind in ("text_classifier", "token_classifier"):
        id2label = task.id2label or {i: f"LABEL_{i}" for i in range(task.num_classes)}
        config["id2label"] = {str(k): v for k, v in id2label.items()}
        config["label2id"] = task.label2id or {v: k for k, v in id2label.items()}
        config["classifier_dropout"] = task.dropout
        if task.problem_type is not None:
            config["problem_type"] = task.problem_type
        not_transformers = task.task_kind == "text_classifier" and (
            task.hidden_dim != backbone.hidden_dim or task.activation != "linear"
        )
        if not_transformers:
            raise ValueError(
                f"transformers' classification head has hidden_dim = hidden_size and no output activation; this "
                f"classifier has hidden_dim={task.hidden_dim}, activation={task.activation!r}. Save it with "
                "format='keras'."
            )
    return config


def _save_transformers(task, directory: pathlib.Path) -> None:
    from safetensors.torch import save_file

    backbone = task.backbone
    dims = {"num_heads": backbone.num_heads, "position_offset": _PAD + 1, "type_vocab_size": 1}
    rows = [row for row in transformers_format.conversion_rows(backbone.num_layers) if not row.add]
    tensors = source_tensors_from_state_dict(rows, backbone.state_dict(), dims)
    tensors = {"roberta." + k: v for k, v in tensors.items()}
    position = tensors["roberta.embeddings.position_embeddings.weight"]
    # The token-type row is folded into the positions when loading: write it as zeros.
    tensors["roberta.embeddings.token_type_embeddings.weight"] = position.new_zeros(1, position.shape[1])
    tensors.update(source_tensors_from_state_dict(table_rows(task.transformers_head_table), task.state_dict(), {}))
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    weights = directory / TRANSFORMERS_WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, weights)
    keras_format.write_json(directory / transformers_format.CONFIG_FILE, transformers_config(task))
