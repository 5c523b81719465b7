"""safetensors files: reading any of them (transformers checkpoints use this too), and
roberta_torch's own export: config.json + model.safetensors holding the model's state dict
under its own keys (no conversion table: the identity).

config.json:
    {"format": "roberta_torch", "format_version": 1, "class_name": "RobertaBackbone",
     "config": {<get_config()>}, "parameter_count": <int>}
"""

from __future__ import annotations

import os
import pathlib

import torch

from .mapping import Row, SourceTensor

FORMAT_NAME = "roberta_torch"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def _import_safetensors():
    try:
        import safetensors  # noqa: F401
        from safetensors import safe_open
    except ImportError as error:
        raise ImportError(
            "Reading safetensors weights needs the `safetensors` package: pip install safetensors"
        ) from error
    return safe_open


def read_safetensors(path: pathlib.Path) -> dict[str, SourceTensor]:
    """Every tensor of one safetensors file: key -> SourceTensor (data not read yet)."""
    safe_open = _import_safetensors()

    def loader(key):
        def load():
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(key)

        return load

    out = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                piece = f.get_slice(key)
                dtype = piece.get_dtype()
                out[key] = SourceTensor(
                    tuple(piece.get_shape()), _SAFETENSORS_DTYPES.get(dtype, dtype), path.name, loader(key)
                )
    except Exception as error:  # safetensors raises its own SafetensorError for bad headers
        if isinstance(error, (ImportError, MemoryError)):
            raise
        raise ValueError(f"Cannot read safetensors file {path}: corrupt or truncated ({error}).") from error
    return out


def is_native_config(config: dict) -> bool:
    return config.get("format") == FORMAT_NAME


def parse_config(config: dict, path) -> tuple[str, dict]:
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version={version!r} is not supported by this roberta_torch (reads version "
            f"{FORMAT_VERSION}); upgrade roberta_torch."
        )
    if not isinstance(config.get("class_name"), str) or not isinstance(config.get("config"), dict):
        raise ValueError(f"{path}: expected string 'class_name' and object 'config' entries.")
    return config["class_name"], dict(config["config"])


def native_config(model) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class_name": model.keras_class_name,
        "config": model.get_config(),
        "parameter_count": sum(p.numel() for p in model.parameters()),
    }


def conversion_rows(model_keys) -> list[Row]:
    """The identity table over the model's own keys."""
    return [Row(key, key) for key in model_keys]


def read_source_tensors(directory: pathlib.Path):
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_FILE} is missing from preset directory {str(directory)!r}.")
    return read_safetensors(path), str(path)


def write_weights(path: pathlib.Path, state_dict: dict[str, torch.Tensor]) -> None:
    _import_safetensors()
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
