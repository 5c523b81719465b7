"""One object per preset: resolved once, config.json classified once.

`open_preset(handle)` maps any preset form (builtin name, `kaggle://`, `hf://`, a local
directory, see resolve.py) to a local directory, fetching only the files the detected format
needs, and returns a `Preset` that every loader uses: the backbone, the tokenizer, the
preprocessor, the CLI, task and embedding loaders. Passing a `Preset` where a handle is
expected reuses it (nothing is resolved or read twice).

Nothing here imports a model or tokenizer class: classes pick themselves by the name a
preset records (`Preset.class_name`, `tokenizer_files.tokenizer_spec`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import re

from . import files, formats, resolve

logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Preset:
    """A resolved preset directory and what its config.json says.

    handle:     what the user passed (for messages).
    directory:  the local directory holding the files.
    root:       links inside the preset may point anywhere under this folder (the directory
                itself, or the hub cache folder whose snapshots link into its blob store).
    format:     the format module (keras_format, transformers_format, native_format), or
                None for a directory without config.json (a tokenizer-only preset).
    raw_config: config.json as read ({} when there is none).
    """

    handle: str
    directory: pathlib.Path
    root: pathlib.Path
    format: object
    raw_config: dict
    allow_pickle: bool = False

    @property
    def format_name(self) -> str:
        return self.format.NAME

    @property
    def config_path(self) -> pathlib.Path:
        return self.directory / files.CONFIG_FILE

    def _require_config(self) -> None:
        if self.format is None:
            raise FileNotFoundError(
                f"config.json is missing from preset directory {str(self.directory)!r} (preset {self.handle!r})."
            )

    @functools.cached_property
    def class_name(self) -> str:
        """The backbone class the preset holds (e.g. "RobertaBackbone")."""
        self._require_config()
        return self.format.class_name(self.raw_config, self.config_path)

    def parse(self, overrides: dict | None = None) -> tuple[str, dict, dict]:
        """(class name, stored constructor config, table dims); `overrides` are the
        constructor arguments the caller will pass (some formats need them to decide)."""
        self._require_config()
        return self.format.parse_config(self.raw_config, self.config_path, overrides or {})

    @property
    def max_sequence_length(self) -> int | None:
        """The backbone's max_sequence_length as the config states it (derived by the
        format, e.g. transformers' max_position_embeddings minus its reserved rows), or None."""
        return None if self.format is None else self.format.max_sequence_length(self.raw_config)

    def file(self, name: str) -> pathlib.Path | None:
        """The path of one of the preset's files, or None when it has no such file."""
        return files.preset_file(self.directory, name, self.root)

    def json(self, name: str, *, required: bool = False):
        """A JSON object file of the preset (read once, then cached), or None if absent."""
        if name not in self._json_cache:
            path = self.file(name)
            if path is None:
                if required:
                    raise FileNotFoundError(f"{name} is missing from preset {self.handle!r} ({self.directory}).")
                return None
            self._json_cache[name] = files.read_json(path)
        return self._json_cache[name]

    def read_tensors(self):
        """({source key: SourceTensor}, description of the files): headers only, no data."""
        self._require_config()
        return self.format.read_tensors(self.directory, allow_pickle=self.allow_pickle, root=self.root)

    def layer_indices(self, source_keys) -> set[int]:
        """The encoder layer indices present among `source_keys` (the weights' structure)."""
        pattern = re.compile(self.format.LAYER_KEY_PATTERN)
        indices = set()
        for key in source_keys:
            match = pattern.match(key)
            if match:
                indices.add(int(match.group(1) or 0))
        return indices

    def __post_init__(self):
        self._json_cache: dict = {}

    # A task keeps the Preset it was loaded from (to save its tokenizer with it), so copying,
    # pickling or torch.save-ing the model copies the Preset too: the format module is kept
    # by name (modules cannot be pickled) and looked up again on the way back.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state.get("format") is not None:
            state["format"] = state["format"].NAME
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("format"), str):
            state = {**state, "format": formats.by_name(state["format"])}
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"Preset({self.handle!r}, format={self.format_name!r}, class_name={self.class_name!r}, directory={str(self.directory)!r})"


def open_preset(preset, *, allow_pickle: bool = False, require_config: bool = True) -> Preset:
    """Resolve `preset` (any form, or an existing Preset) and classify its config.json.

    `require_config=False` accepts a directory without config.json (a tokenizer-only
    preset, as keras_hub's tokenizers save them); its `format` is None."""
    if isinstance(preset, Preset):
        if allow_pickle and not preset.allow_pickle:
            return dataclasses.replace(preset, allow_pickle=True)
        return preset
    if not isinstance(allow_pickle, bool):
        raise TypeError(f"`allow_pickle` must be a bool; got {type(allow_pickle).__name__} ({allow_pickle!r}).")
    location = resolve.resolve_preset(preset, allow_pickle=allow_pickle)
    config_path = files.preset_file(location.directory, files.CONFIG_FILE, location.root)
    if config_path is None:
        if require_config:
            raise FileNotFoundError(
                f"config.json is missing from preset directory {str(location.directory)!r} "
                f"(preset {location.handle!r})."
            )
        raw, fmt = {}, None
    else:
        raw = files.read_json(config_path)
        fmt = formats.detect_format(raw, config_path)
    return Preset(
        handle=location.handle,
        directory=location.directory,
        root=location.root,
        format=fmt,
        raw_config=raw,
        allow_pickle=allow_pickle,
    )
