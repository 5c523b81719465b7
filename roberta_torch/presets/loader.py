"""`PresetLoader`: what every format serves, for every component, from one `Preset`.

One subclass per format (keras_format.KerasLoader, transformers_format.TransformersLoader,
native_format.NativeLoader, sentence_transformers_format.SentenceTransformersLoader; formats.
FilesOnlyLoader for a directory without config.json), chosen once by formats.loader_for,
in the manner of keras_hub's PresetLoader / KerasPresetLoader / TransformersPresetLoader:

    backbone     backbone_spec(overrides) -> BackboneSpec(class name, config, table dims);
                 read_backbone_tensors(), conversion_rows(), table_dims(), source_record();
                 load_backbone(backbone_cls, load_weights, **kwargs) builds the model
    task         stored_task(task classes) -> StoredTask (what head the preset holds);
                 read_task_tensors(task class) -> TaskTensors (source tensors, headers
                 only), then task_rows(task class, backbone config) for one strict pass
    tokenizer    tokenizer_spec() -> tokenizer_files.TokenizerSpec; preprocessor_config()
    embedder     encoder() (the preset holding the encoder and its tokenizer),
                 embedding_config(builtin name), bge_m3_heads(hidden_dim)
    reranker     cross_encoder_config() (activation, max length, prompts; the model
                 and tokenizer come from encoder())

Files are read only through `self.preset.file(...)` / `.json(...)`. Model and tokenizer
classes are handed in by the callers (`Backbone.from_preset`, `Task.from_preset`, ...);
nothing here imports them.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from . import loading, names, tokenizer_files
from .mapping import Row

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What a preset says about its backbone: the class name, the constructor config
    (Keras's keys), and the sizes its conversion table needs (num_heads, position offset...)."""

    class_name: str
    config: dict
    dims: dict


@dataclasses.dataclass(frozen=True)
class StoredTask:
    """What a preset stores beyond its backbone."""

    task_cls: type | None  # None: a backbone preset
    head_config: dict  # the stored head's constructor arguments
    description: str  # for messages: "task.json (RobertaTextClassifier)", ...


@dataclasses.dataclass
class TaskTensors:
    """The tensors of a task preset: the source tensors (headers only), the files (for
    messages), source key prefixes that are not weights, and tensors tied to others (source
    key -> model key: checked equal, not loaded)."""

    source: dict
    description: str
    ignored_prefixes: tuple = ()
    tied: dict = dataclasses.field(default_factory=dict)  # source key -> model key it must equal


class PresetLoader:
    """The base: the parts every format shares. Subclasses set the class attributes and
    implement the format's methods (see the module docstring)."""

    NAME = "?"
    IGNORED_PREFIXES: tuple[str, ...] = ()  # source keys that are not weights (buffers)
    HEAD_PREFIXES: tuple[str, ...] = ()  # task-head tensors a backbone leaves, with a log line
    LAYER_KEY_PATTERN = r"$^"  # group 1: a source key's encoder layer index

    def __init__(self, preset, raw_config: dict):
        self.preset = preset
        self.raw_config = raw_config
        self._spec: BackboneSpec | None = None

    @classmethod
    def is_config(cls, raw: dict) -> bool:
        raise NotImplementedError

    # -- backbone -------------------------------------------------------------------------------

    def parse_config(self, overrides: dict) -> BackboneSpec:
        raise NotImplementedError

    def backbone_spec(self, overrides: dict | None = None) -> BackboneSpec:
        """The backbone's class, stored config and table dims (`overrides`: the constructor
        arguments the caller will pass; some formats need them to decide)."""
        if overrides:
            return self.parse_config(dict(overrides))
        if self._spec is None:
            self._spec = self.parse_config({})
        return self._spec

    def backbone_class_name(self) -> str:
        """The backbone class the preset holds (e.g. "RobertaBackbone")."""
        return self.backbone_spec().class_name

    def max_sequence_length(self) -> int | None:
        return None

    def read_backbone_tensors(self) -> tuple[dict, str]:
        """({source key: SourceTensor}, description of the files): headers only."""
        raise NotImplementedError

    def conversion_rows(self, config: dict, model_keys) -> list[Row]:
        raise NotImplementedError

    def table_dims(self, config: dict, dims: dict) -> dict:
        return {"num_heads": config["num_heads"]}

    def source_record(self, source: dict, dims: dict):
        """What writing the model back to this format needs beyond its state dict (kept as
        the backbone's `transformers_source`), or None."""
        return None

    def layer_indices(self, source_keys) -> set[int]:
        """The encoder layer indices present among `source_keys` (the weights' structure)."""
        pattern = re.compile(self.LAYER_KEY_PATTERN)
        indices = set()
        for key in source_keys:
            match = pattern.match(key)
            if match:
                indices.add(int(match.group(1) or 0))
        return indices

    def load_backbone(self, backbone_cls, load_weights: bool = True, **kwargs):
        """Build `backbone_cls` from the preset: the stored config with `kwargs` on top; with
        `load_weights`, checked against the weights' structure first, built on the meta
        device (nothing initialized) and filled in one strict streaming pass."""
        spec = self.backbone_spec(kwargs)
        config = {**spec.config, **kwargs}
        if not load_weights:
            return backbone_cls(**config).eval()
        device = config.pop("device", None)
        source, description = self.read_backbone_tensors()
        loading.check_structure(self, config, source)
        model = backbone_cls(**config, device="meta")
        dims = self.table_dims(config, spec.dims)
        loading.load_backbone_weights(self, model, config, dims, source, description, device=device)
        return model.eval()

    # -- task -----------------------------------------------------------------------------------

    def stored_task(self, classes) -> StoredTask:
        """The task head the preset stores (`classes`: the task classes to pick from)."""
        return StoredTask(None, {}, "a backbone preset")

    def read_task_tensors(self, task_cls) -> TaskTensors:
        """The source tensors of the task head this preset stores (see stored_task), with
        its backbone's (headers only: the structure is checked before any row is built)."""
        raise ValueError(f"{self.preset.handle!r} ({self.NAME} format) stores no task head.")

    def task_rows(self, task_cls, backbone_config: dict) -> list[Row]:
        """The conversion rows of `task_cls` (model keys relative to the task module)."""
        raise ValueError(f"{self.preset.handle!r} ({self.NAME} format) stores no task head.")

    # -- tokenizer and preprocessor ---------------------------------------------------------------

    def default_tokenizer_class(self) -> str | None:
        """The tokenizer class the backbone class implies, when there is a backbone."""
        return tokenizer_files.BACKBONE_TOKENIZERS.get(self.backbone_class_name())

    def tokenizer_spec(self) -> tokenizer_files.TokenizerSpec:
        """Everything a tokenizer class needs to build itself from this preset."""
        return tokenizer_files.tokenizer_spec(self.preset, self.default_tokenizer_class())

    def preprocessor_config(self) -> dict | None:
        """The settings a saved preprocessor recorded (keras_hub's preprocessor.json, the one
        preprocessor file any format has; tokenizer-only presets carry it too), or None."""
        saved = self.preset.json(names.KERAS_PREPROCESSOR_FILE)
        config = saved.get("config") if isinstance(saved, dict) else None
        return config if isinstance(config, dict) else None

    # -- embedder ----------------------------------------------------------------------------------

    def encoder(self):
        """The preset holding the encoder (backbone weights and tokenizer): this one, or a
        sentence-transformers module's folder."""
        return self.preset

    def embedding_config(self, builtin_name: str | None = None):
        """How token vectors become text embeddings: a sentence-transformers directory says;
        a builtin embedding preset has its documented settings; anything else pools the mean,
        unnormalized (what sentence-transformers does with a plain transformers checkpoint)."""
        from .registry import EMBEDDING_DEFAULTS
        from .embedding_config import EmbeddingConfig

        if builtin_name in EMBEDDING_DEFAULTS:
            defaults = EMBEDDING_DEFAULTS[builtin_name]
            return EmbeddingConfig(
                pooling=defaults["pooling"], normalize=defaults["normalize"], prompts=dict(defaults["prompts"])
            )
        logger.info("%s has no modules.json: mean pooling without normalization.", self.preset.handle)
        return EmbeddingConfig()

    def bge_m3_heads(self, hidden_dim: int):
        """bge-m3's sparse and ColBERT heads (bge_m3_files.read_heads), or None. Only
        transformers checkpoints and sentence-transformers directories carry them."""
        return None

    # -- cross-encoder (reranker) ----------------------------------------------------------------

    def cross_encoder_config(self):
        """How a sequence classifier's logits become reranking scores (cross_encoder_config.py
        lists the files): the activation, max length and prompts sentence-transformers'
        CrossEncoder would use; defaults where the preset says nothing."""
        from .cross_encoder_config import CrossEncoderConfig, activation_name, checked_length, NO_LENGTH_LIMIT
        from .embedding_config import read_prompts

        config = CrossEncoderConfig()
        encoder = self.encoder()
        settings = self.preset.json(names.ST_CONFIG_FILE) or {}
        where = f"{names.ST_CONFIG_FILE} of {self.preset.handle}"
        config.activation = activation_name(settings.get("activation_fn"), where)
        if config.activation is None:
            raw = encoder.raw_config
            nested = raw.get("sentence_transformers")
            legacy = nested.get("activation_fn") if isinstance(nested, dict) else None
            legacy = legacy if legacy is not None else raw.get("sbert_ce_default_activation_function")
            config.activation = activation_name(legacy, f"{names.CONFIG_FILE} of {encoder.handle}")
        config.prompts, config.default_prompt_name = read_prompts(settings, where)
        # sentence-transformers' order: the module's max_seq_length, else the tokenizer's
        # model_max_length; keras presets: the preprocessor's sequence_length.
        module_settings = encoder.json(names.ST_SENTENCE_BERT_CONFIG) or {}
        length = checked_length(module_settings.get("max_seq_length"), f"{names.ST_SENTENCE_BERT_CONFIG} of {encoder.handle}")
        if length is None:
            model_max_length = (encoder.json(names.HF_TOKENIZER_CONFIG) or {}).get("model_max_length")
            if isinstance(model_max_length, (int, float)) and model_max_length >= NO_LENGTH_LIMIT:
                model_max_length = None
            length = checked_length(model_max_length, f"{names.HF_TOKENIZER_CONFIG} of {encoder.handle}")
        if length is None:
            length = checked_length((self.preprocessor_config() or {}).get("sequence_length"),
                                    f"{names.KERAS_PREPROCESSOR_FILE} of {self.preset.handle}")
        config.max_length = length
        return config
