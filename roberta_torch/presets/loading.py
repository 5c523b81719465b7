"""`Backbone.from_preset`: resolve the preset, detect its format, check the class, build.

Nothing is half-built: the model is created on the meta device (no memory, no random
init), the complete state dict is assembled and validated from the files, and only then
are the tensors assigned (`load_state_dict(strict=True, assign=True)`). Any failure
before that raises, and no model exists.

Formats, told apart by config.json:
  * Keras preset (keras_hub): {"module", "class_name", "config", "registered_name"}; as in
    keras_hub, its stored dtype policy is not used: the model is float32 unless `dtype=`
    is passed;
  * transformers: {"model_type": "roberta" | "xlm-roberta", ...};
  * roberta_torch's safetensors export: {"format": "roberta_torch", ...}.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

from . import keras_format, registry, safetensors_format, transformers_format
from .mapping import assemble_state_dict
from .resolve import resolve_preset

logger = logging.getLogger(__name__)

FORMATS = ("keras", "transformers", "safetensors")


@dataclasses.dataclass
class PresetInfo:
    """What a preset directory holds: format, backbone class name, constructor config
    (stored, before overrides), the dims its conversion table needs, the raw config.json."""

    directory: pathlib.Path
    format: str
    class_name: str
    config: dict
    dims: dict
    raw_config: dict


def _backbone_classes() -> dict:
    from ..backbone import BACKBONE_CLASSES

    return BACKBONE_CLASSES


def read_config_file(directory: pathlib.Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"config.json is missing from preset directory {str(directory)!r}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, expected an object.")
    return config


def _keras_class_and_config(raw: dict, path) -> tuple[str, dict]:
    from ..dtype_policy import get_dtype_policy

    class_name, config = raw.get("class_name"), raw.get("config")
    if not isinstance(class_name, str) or not isinstance(config, dict):
        raise ValueError(
            f"{path}: a Keras preset config needs string 'class_name' and object 'config' entries."
        )
    config = dict(config)
    # keras_hub's from_preset builds with the `dtype` argument (default: the global policy,
    # float32) and never with the stored policy; so does this loader.
    stored = config.pop("dtype", None)
    if stored is not None:
        get_dtype_policy(stored)  # still refuse a policy we cannot represent
    return class_name, config


def inspect_directory(directory: pathlib.Path, overrides: dict | None = None) -> PresetInfo:
    """Read config.json and classify the directory (no weights are read)."""
    overrides = overrides or {}
    raw = read_config_file(directory)
    path = directory / "config.json"
    if transformers_format.is_transformers_config(raw):
        class_name, config, dims = transformers_format.convert_config(raw, overrides, path)
        fmt = "transformers"
    elif safetensors_format.is_native_config(raw):
        class_name, config = safetensors_format.parse_config(raw, path)
        dims, fmt = {}, "safetensors"
    elif "class_name" in raw and "config" in raw:
        class_name, config = _keras_class_and_config(raw, path)
        dims, fmt = {}, "keras"
    else:
        raise ValueError(
            f"{path} is neither a Keras preset config ('class_name', 'config'), a transformers config "
            "('model_type') nor a roberta_torch export ('format': 'roberta_torch')."
        )
    return PresetInfo(directory, fmt, class_name, config, dims, raw)


def check_backbone_class(cls, class_name: str, preset) -> type:
    """The class to build: the preset's, if it is `cls` or a subclass of it."""
    classes = _backbone_classes()
    preset_cls = classes.get(class_name)
    if preset_cls is None:
        raise ValueError(
            f"Preset {str(preset)!r} holds a {class_name}, which roberta_torch does not implement "
            f"(supported: {', '.join(classes)})."
        )
    if not (isinstance(cls, type) and issubclass(preset_cls, cls)):
        name = getattr(cls, "__name__", repr(cls))
        raise ValueError(
            f"Preset {str(preset)!r} holds a {class_name}, which {name}.from_preset cannot load; use "
            f"{class_name}.from_preset or roberta_torch.Backbone.from_preset."
        )
    return preset_cls


def _read_state_dict(info: PresetInfo, config: dict, model_tensors: dict, allow_pickle: bool) -> dict:
    """The validated state dict for a model built from `config` (stored config + overrides)."""
    if info.format == "keras":
        files = keras_format.weight_files(info.directory)
        source = keras_format.read_source_tensors(files)
        rows = keras_format.conversion_rows(config["num_layers"])
        dims, ignored = {"num_heads": config["num_heads"]}, ()
        description = (
            ", ".join(str(f) for f in files) if len(files) < 3 else f"{files[0].parent} ({len(files)} shards)"
        )
    elif info.format == "transformers":
        source, description = transformers_format.read_source_tensors(
            info.directory, allow_pickle=allow_pickle
        )
        rows = transformers_format.conversion_rows(config["num_layers"])
        dims, ignored = info.dims, transformers_format.IGNORED_PREFIXES
    else:
        source, description = safetensors_format.read_source_tensors(info.directory)
        rows = safetensors_format.conversion_rows(model_tensors)
        dims, ignored = {}, ()
    return assemble_state_dict(
        rows, source, model_tensors, dims, ignored_prefixes=ignored, description=description
    )


def backbone_from_preset(cls, preset, load_weights: bool = True, **kwargs):
    """Build `cls` (or the subclass the preset names) from `preset`.

    kwargs override the stored config (dtype, dropout, padding_free, device, ...);
    `allow_pickle=True` permits transformers' pytorch_model.bin (torch.load with
    weights_only=True). Returns the model in eval mode, as keras_hub and transformers do.
    """
    allow_pickle = bool(kwargs.pop("allow_pickle", False))
    builtin = registry.BUILTIN_PRESETS.get(preset) if isinstance(preset, str) else None
    if not load_weights and builtin is not None and builtin["config"] is not None:
        # The architecture of a builtin is known: no download.
        backbone_cls = check_backbone_class(cls, builtin["class_name"], preset)
        return backbone_cls(**{**builtin["config"], **kwargs}).eval()

    directory = resolve_preset(preset, allow_pickle=allow_pickle)
    info = inspect_directory(directory, overrides=kwargs)
    backbone_cls = check_backbone_class(cls, info.class_name, preset)
    config = {**info.config, **kwargs}
    if not load_weights:
        return backbone_cls(**config).eval()

    device = config.pop("device", None)
    model = backbone_cls(**config, device="meta")
    model_tensors = dict(model.state_dict())
    state_dict = _read_state_dict(info, config, model_tensors, allow_pickle)
    if device is not None:
        state_dict = {k: v.to(device) for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:  # a tensor outside the state dict: the model class needs a non-meta init
        raise RuntimeError(f"{backbone_cls.__name__} kept meta tensors after loading: {leftovers}")
    logger.info("Loaded %s from %s (%s format).", backbone_cls.__name__, directory, info.format)
    return model.eval()
