"""Builtin presets as plain data, and the few queries over them.

Each row names the keras_hub backbone class, the versioned Kaggle handle keras-hub 0.32
loads it from, the exact parameter count keras-hub publishes, and the architecture, so
`from_preset(name, load_weights=False)` builds offline (the shipped tiny preset too).

The three XLM-R-architecture embedding presets (bge_m3, multilingual_e5_*) are listed in
keras-hub with a parameter count only; their configs below are the unique ones that match
it: multilingual-e5-base/-large are fine-tuned xlm-roberta-base/-large (same vocabulary and
512 positions, hence the same counts 277,450,752 / 558,837,760), and bge-m3 is
xlm-roberta-large with 8,192 positions (558,837,760 + (8192 - 512) * 1024 = 566,702,080).
keras-hub converts all of them with the default dropout 0.1.
"""

from __future__ import annotations

import pathlib


# The directory (inside this package) of presets that ship with roberta_torch.
PACKAGE_HANDLE_PREFIX = "package://"

_ROBERTA_DESCRIPTION = (
    "{layers}-layer RoBERTa model where case is maintained. Trained on English Wikipedia, "
    "BooksCorpus, CommonCrawl, and OpenWebText."
)
_XLM_ROBERTA_DESCRIPTION = (
    "{layers}-layer XLM-RoBERTa model where case is maintained. Trained on CommonCrawl in " "100 languages."
)


def _config(vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim, max_sequence_length):
    return {
        "vocabulary_size": vocabulary_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": intermediate_dim,
        "dropout": 0.1,
        "max_sequence_length": max_sequence_length,
    }


_ROBERTA_BASE = _config(50265, 12, 12, 768, 3072, 512)
_ROBERTA_LARGE = _config(50265, 24, 16, 1024, 4096, 512)
_XLM_ROBERTA_BASE = _config(250002, 12, 12, 768, 3072, 512)
_XLM_ROBERTA_LARGE = _config(250002, 24, 16, 1024, 4096, 512)

BUILTIN_PRESETS: dict[str, dict] = {
    "roberta_base_en": {
        "class_name": "RobertaBackbone",
        "handle": "kaggle://keras/roberta/keras/roberta_base_en/3",
        "params": 124_052_736,
        "description": _ROBERTA_DESCRIPTION.format(layers=12),
        "config": _ROBERTA_BASE,
    },
    "roberta_large_en": {
        "class_name": "RobertaBackbone",
        "handle": "kaggle://keras/roberta/keras/roberta_large_en/3",
        "params": 354_307_072,
        "description": _ROBERTA_DESCRIPTION.format(layers=24),
        "config": _ROBERTA_LARGE,
    },
    "xlm_roberta_base_multi": {
        "class_name": "XLMRobertaBackbone",
        "handle": "kaggle://keras/xlm_roberta/keras/xlm_roberta_base_multi/3",
        "params": 277_450_752,
        "description": _XLM_ROBERTA_DESCRIPTION.format(layers=12),
        "config": _XLM_ROBERTA_BASE,
    },
    "xlm_roberta_large_multi": {
        "class_name": "XLMRobertaBackbone",
        "handle": "kaggle://keras/xlm_roberta/keras/xlm_roberta_large_multi/3",
        "params": 558_837_760,
        "description": _XLM_ROBERTA_DESCRIPTION.format(layers=24),
        "config": _XLM_ROBERTA_LARGE,
    },
    "bge_m3": {
        "class_name": "XLMRobertaBackbone",
        "handle": "kaggle://keras/bge/keras/bge_m3/1",
        "params": 566_702_080,
        "description": (
            "568M-parameter multilingual text embedding model (BAAI) supporting 100+ "
            "languages with sequences up to 8192 tokens."
        ),
        "config": {**_XLM_ROBERTA_LARGE, "max_sequence_length": 8192},
    },
    "multilingual_e5_base": {
        "class_name": "XLMRobertaBackbone",
        "handle": "kaggle://keras/multilingual-e5/keras/multilingual_e5_base/1",
        "params": 277_450_752,
        "description": (
            "12-layer multilingual E5 embedding model with 768-dimensional vectors, "
            "fine-tuned for dense retrieval across 100+ languages."
        ),
        "config": _XLM_ROBERTA_BASE,
    },
    "multilingual_e5_large": {
        "class_name": "XLMRobertaBackbone",
        "handle": "kaggle://keras/multilingual-e5/keras/multilingual_e5_large/1",
        "params": 558_837_760,
        "description": (
            "24-layer multilingual E5 embedding model with 1024-dimensional vectors, "
            "fine-tuned for dense retrieval across 100+ languages."
        ),
        "config": _XLM_ROBERTA_LARGE,
    },
    # Shipped inside the package (tools/make_tiny_preset.py wrote it; a test checks that this
    # row equals its config.json and metadata.json).
    "roberta_tiny_random": {
        "class_name": "RobertaBackbone",
        "handle": PACKAGE_HANDLE_PREFIX + "assets/presets/roberta_tiny_random",
        "params": 54_016,
        "description": "A tiny RoBERTa with random weights and a small BPE vocabulary, for tests.",
        "config": _config(1024, 2, 2, 32, 64, 128),
    },
}


def builtin_preset_names() -> tuple[str, ...]:
    return tuple(BUILTIN_PRESETS)


def package_preset_dir(handle: str) -> pathlib.Path:
    """The directory a `package://...` handle names inside the installed roberta_torch."""
    package = pathlib.Path(__file__).resolve().parent.parent
    directory = (package / handle[len(PACKAGE_HANDLE_PREFIX) :]).resolve()
    if package not in directory.parents:
        raise ValueError(f"Package handle {handle!r} points outside the roberta_torch package.")
    return directory


def preset_metadata(name: str) -> dict:
    """Metadata of one builtin (a copy): description, params, handle, class_name, config."""
    if name not in BUILTIN_PRESETS:
        raise KeyError(name)
    row = dict(BUILTIN_PRESETS[name])
    row["config"] = dict(row["config"])
    return row


def presets_for_classes(class_names) -> dict[str, dict]:
    """name -> metadata of the builtins whose class name is in `class_names` (the model
    classes pass their own name and their subclasses', as keras_hub lists them)."""
    return {
        name: preset_metadata(name) for name, row in BUILTIN_PRESETS.items() if row["class_name"] in set(class_names)
    }


def builtin_architecture(preset) -> tuple[str, dict] | None:
    """(class name, config) of a builtin whose architecture is known without a download."""
    row = BUILTIN_PRESETS.get(preset) if isinstance(preset, str) else None
    if row is None:
        return None
    return row["class_name"], dict(row["config"])


# The builtin embedding presets' documented settings (keras_hub: bge-m3 "uses CLS token pooling
# with L2 normalization"; multilingual-e5 "prefix inputs with 'query: ' ... 'passage: '"; the
# e5 model cards mean-pool and normalize). Their Kaggle files are plain Keras backbones.
_E5 = {"pooling": ("mean",), "normalize": True, "prompts": {"query": "query: ", "passage": "passage: "}}
EMBEDDING_DEFAULTS = {
    "bge_m3": {"pooling": ("cls",), "normalize": True, "prompts": {}},
    "multilingual_e5_base": _E5,
    "multilingual_e5_large": _E5,
}
