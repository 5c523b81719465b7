"""One object per preset: its files, fetched on demand, and its format loader, chosen once.

`open_preset(handle)` maps any preset form (builtin name, `kaggle://`, `hf://`, a local
directory, see resolve.py) to a `Preset`: the source of its files (sources.py) plus the
loader of its format (formats.py classifies config.json once). Every component (backbone,
task, tokenizer, preprocessor, embedder, CLI) reads the preset through it: `Preset.file(name)`
fetches one file from the local directory, huggingface_hub or kagglehub when first asked,
refuses names that leave the preset (`..`, absolute paths) and links whose target lies
outside it, and is the only way preset files are opened (tests/presets/test_preset_reads.py).
Passing a `Preset` where a handle is expected reuses it (nothing is resolved or read twice).

Nothing here imports a model or tokenizer class: classes pick themselves by the name a
preset records (`Preset.class_name`, the loader's `tokenizer_spec()`).
"""

from __future__ import annotations

import logging
import pathlib
import re

from . import files, formats, names, resolve
from .sources import SOURCES, SubfolderSource

logger = logging.getLogger(__name__)


def check_preset_path(name) -> str:
    """A file name inside a preset: a relative POSIX path with no '..', '.' or empty parts."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"A preset file name must be a non-empty str; got {name!r}.")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"{name[:200]!r} is not a path inside the preset (absolute paths, '..' and empty parts are refused); "
            "refusing to read it."
        )
    return name


class Preset:
    """A preset: where its files come from and which format reads them.

    handle:     what the user passed (for messages).
    source:     where its files come from (sources.LocalSource, HuggingFaceSource, KaggleSource).
    loader:     the format's loader (keras_format.KerasLoader, transformers_format.
                TransformersLoader, native_format.NativeLoader, sentence_transformers_format.
                SentenceTransformersLoader), or a formats.FilesOnlyLoader for a directory
                without config.json (a tokenizer-only preset).
    raw_config: config.json as read ({} when there is none).
    allow_pickle: whether pickled tensors may be read (torch.load(weights_only=True)).
    """

    def __init__(self, source, *, allow_pickle: bool = False, require_config: bool = True):
        self.source = source
        self.allow_pickle = allow_pickle
        self._json_cache: dict = {}
        self.raw_config = self.json(names.CONFIG_FILE) or {}
        self.loader = formats.loader_for(self, require_config=require_config)

    # -- what the preset is ---------------------------------------------------------------------

    @property
    def handle(self) -> str:
        return self.source.handle

    @property
    def directory(self) -> pathlib.Path | None:
        """The local folder its fetched files lie in (a hub cache snapshot for hub presets)."""
        return self.source.directory

    @property
    def root(self) -> pathlib.Path | None:
        return self.source.root

    @property
    def format(self):
        return self.loader

    @property
    def format_name(self) -> str:
        return self.loader.NAME

    @property
    def class_name(self) -> str:
        """The backbone class the preset holds (e.g. "RobertaBackbone")."""
        return self.loader.backbone_class_name()

    def parse(self, overrides: dict | None = None) -> tuple[str, dict, dict]:
        """(class name, stored constructor config, table dims); `overrides` are the
        constructor arguments the caller will pass (some formats need them to decide)."""
        spec = self.loader.backbone_spec(overrides)
        return spec.class_name, dict(spec.config), dict(spec.dims)

    @property
    def max_sequence_length(self) -> int | None:
        """The backbone's max_sequence_length as the config states it (derived by the
        format, e.g. transformers' max_position_embeddings minus its reserved rows), or None."""
        return self.loader.max_sequence_length()

    # -- files --------------------------------------------------------------------------------

    def file(self, name: str, *, required: bool = False) -> pathlib.Path | None:
        """The local path of one of the preset's files (fetched now if needed), or None when
        the preset has no such file (FileNotFoundError naming it when `required`)."""
        path = self.source.fetch(check_preset_path(name))
        if path is None:
            if required:
                raise FileNotFoundError(self.source.missing(name))
            return None
        real, trusted = path.resolve(), pathlib.Path(self.source.root).resolve()
        if trusted != real and trusted not in real.parents:
            # Never quote or open the target: it is not the preset's.
            raise ValueError(f"{path} leads outside the preset ({trusted}); refusing to read it.")
        return path

    def json(self, name: str, *, required: bool = False, expect=dict):
        """A JSON file of the preset (read once, then cached), or None if absent."""
        if name not in self._json_cache:
            path = self.file(name, required=required)
            if path is None:
                return None
            self._json_cache[name] = files.read_json(path, expect=expect)
        return self._json_cache[name]

    def missing(self, what: str) -> str:
        """The message for a required file the preset lacks (says "no network" when offline)."""
        return self.source.missing(what)

    def subpreset(self, path: str) -> "Preset":
        """The preset a folder inside this one holds (a sentence-transformers module)."""
        return Preset(SubfolderSource(self.source, check_preset_path(path)), allow_pickle=self.allow_pickle)

    def local_files(self) -> dict[str, int]:
        """{relative name: size} of the files fetched so far (all of them for a local preset)."""
        directory = self.directory
        if directory is None or not directory.is_dir():
            return {}
        return {
            str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()
        }

    # -- weights (the backbone's, through the format) -------------------------------------------

    def read_tensors(self):
        """({source key: SourceTensor}, description of the files): headers only, no data."""
        return self.loader.read_backbone_tensors()

    def layer_indices(self, source_keys) -> set[int]:
        """The encoder layer indices present among `source_keys` (the weights' structure)."""
        return self.loader.layer_indices(source_keys)

    def __repr__(self) -> str:
        described = f", class_name={self.class_name!r}" if self.raw_config else ""
        return f"Preset({self.handle!r}, format={self.format_name!r}{described}, source={self.source.describe()!r})"


def open_preset(preset, *, allow_pickle: bool = False, require_config: bool = True) -> Preset:
    """Resolve `preset` (any form, or an existing Preset) and classify its config.json.

    `require_config=False` accepts a directory without config.json (a tokenizer-only
    preset, as keras_hub's tokenizers save them); its loader then serves tokenizers only."""
    if not isinstance(allow_pickle, bool):
        raise TypeError(f"`allow_pickle` must be a bool; got {type(allow_pickle).__name__} ({allow_pickle!r}).")
    if isinstance(preset, Preset):
        if allow_pickle and not preset.allow_pickle:  # the same files, read with the opt-in
            return Preset(preset.source, allow_pickle=True, require_config=require_config)
        return preset
    if isinstance(preset, SOURCES):  # e.g. a task's `preset_source`: the same files again
        return Preset(preset, allow_pickle=allow_pickle, require_config=require_config)
    return Preset(resolve.resolve_preset(preset), allow_pickle=allow_pickle, require_config=require_config)
