"""Map every preset form to a local directory: the one place that knows about hubs.

Accepted forms:
  * a builtin name (`roberta_base_en`, ... see registry.py), mapped to its handle;
  * `kaggle://<owner>/<model>/<framework>/<variation>[/<version>]`, through kagglehub;
  * `hf://<owner>/<name>`, through huggingface_hub (Keras-preset or transformers repos);
  * a local directory.

Hub clients are imported here, lazily, so `import roberta_torch` never needs them.

Network timeouts (no call waits forever):
  * huggingface_hub: every file goes through `hf_hub_download`, whose metadata request
    uses `etag_timeout` (HF_ETAG_TIMEOUT_S below) and whose transfer uses
    huggingface_hub's `HF_HUB_DOWNLOAD_TIMEOUT` (environment variable, default 10 s between
    bytes). `snapshot_download` is not used: its repository listing has no timeout.
  * kagglehub: file transfers use kagglehub's own (5 s connect, 15 s read) timeouts, but the
    API calls it makes through kagglesdk (version lookup, download redirects) pass none.
    While kagglehub runs, `_default_requests_timeout` gives every `requests` call that did
    not choose a timeout (KAGGLE_CONNECT_TIMEOUT_S, KAGGLE_READ_TIMEOUT_S); calls that chose
    one keep it.
Download progress is shown by the clients' own progress bars.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import pathlib
import re
import threading

from . import registry
from .mapping import check_shard_name

logger = logging.getLogger(__name__)

KAGGLE_SCHEME = "kaggle://"
HF_SCHEME = "hf://"

HF_ETAG_TIMEOUT_S = 10.0
KAGGLE_CONNECT_TIMEOUT_S = 10.0
KAGGLE_READ_TIMEOUT_S = 60.0

KAGGLE_HANDLE_FORM = "kaggle://<owner>/<model>/<framework>/<variation>[/<version>]"
HF_HANDLE_FORM = "hf://<owner>/<name>"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Files fetched from a hub repository, by format: the first weights entry that exists wins.
# (Index files pull in the shards they name.) Optional files are fetched when present.
_KERAS_WEIGHTS = ("model.weights.h5", "model.weights.json")
_TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_TRANSFORMERS_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_NATIVE_WEIGHTS = ("model.safetensors",)
_OPTIONAL_FILES = (
    "metadata.json",
    "tokenizer.json",
    "assets/tokenizer/vocabulary.json",
    "assets/tokenizer/merges.txt",
    "assets/tokenizer/vocabulary.spm",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
)


def accepted_forms() -> str:
    names = ", ".join(registry.builtin_preset_names())
    return (
        "Accepted preset forms:\n"
        f"  1) a builtin name: {names}\n"
        f"  2) a Kaggle handle {KAGGLE_HANDLE_FORM}, "
        "e.g. 'kaggle://keras/roberta/keras/roberta_base_en/3'\n"
        f"  3) a Hugging Face handle {HF_HANDLE_FORM}, e.g. 'hf://FacebookAI/roberta-base'\n"
        "  4) a local preset directory, e.g. './my_preset'"
    )


def resolve_preset(preset, *, allow_pickle: bool = False) -> pathlib.Path:
    """Return the local directory holding `preset`, downloading it when needed.

    `allow_pickle` also fetches `pytorch_model.bin` from Hugging Face repositories that
    have no safetensors weights (loading it still needs the same opt-in).
    """
    if isinstance(preset, os.PathLike):
        return _local_directory(os.fspath(preset))
    if not isinstance(preset, str):
        raise TypeError(
            f"`preset` must be a str or a path; got {type(preset).__name__} ({preset!r}).\n"
            + accepted_forms()
        )
    if preset in registry.BUILTIN_PRESETS:
        return resolve_preset(registry.BUILTIN_PRESETS[preset]["handle"], allow_pickle=allow_pickle)
    if preset.startswith(registry.PACKAGE_HANDLE_PREFIX):
        directory = registry.package_preset_dir(preset)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"The shipped preset {preset!r} is missing from this installation: no directory "
                f"{directory}. Reinstall roberta_torch."
            )
        return directory
    if preset.startswith(KAGGLE_SCHEME):
        return _resolve_kaggle(preset)
    if preset.startswith(HF_SCHEME):
        return _resolve_hf(preset, allow_pickle=allow_pickle)
    if "://" in preset:
        scheme = preset.split("://", 1)[0]
        raise ValueError(f"Unknown preset scheme '{scheme}://' in preset={preset!r}.\n{accepted_forms()}")
    if os.path.exists(os.path.expanduser(preset)) or _looks_like_path(preset):
        return _local_directory(preset)
    suggestion = difflib.get_close_matches(preset, registry.builtin_preset_names(), n=1, cutoff=0.5)
    hint = f" Did you mean '{suggestion[0]}'?" if suggestion else ""
    raise ValueError(
        f"Unknown preset {preset!r}: not a builtin name, handle or directory.{hint}\n{accepted_forms()}"
    )


def _looks_like_path(preset: str) -> bool:
    return preset.startswith((".", "~")) or "/" in preset or os.sep in preset


def _local_directory(path: str) -> pathlib.Path:
    directory = pathlib.Path(path).expanduser()
    if not directory.exists():
        raise FileNotFoundError(f"Preset directory {str(directory)!r} does not exist.\n{accepted_forms()}")
    if not directory.is_dir():
        raise ValueError(
            f"preset={path!r} is a file; a local preset is the directory holding config.json "
            f"and the weights (e.g. {str(directory.parent)!r})."
        )
    return directory.resolve()


# -- Kaggle -----------------------------------------------------------------------------------


def parse_kaggle_handle(preset: str) -> tuple[list[str], int | None]:
    """'kaggle://o/m/f/v[/n]' -> ([o, m, f, v], n or None); ValueError with the form."""
    segments = preset[len(KAGGLE_SCHEME) :].split("/")
    version = None
    if len(segments) == 5:
        if not segments[4].isdigit():
            raise ValueError(
                f"Malformed Kaggle handle {preset!r}: the version must be a number. "
                f"Expected {KAGGLE_HANDLE_FORM}, e.g. 'kaggle://keras/roberta/keras/roberta_base_en/3'."
            )
        version = int(segments.pop())
    if len(segments) != 4 or not all(_HUB_NAME.match(s) for s in segments):
        raise ValueError(
            f"Malformed Kaggle handle {preset!r}. Expected {KAGGLE_HANDLE_FORM}, "
            "e.g. 'kaggle://keras/roberta/keras/roberta_base_en/3'."
        )
    return segments, version


def _import_kagglehub():
    try:
        import kagglehub
    except ImportError as error:
        raise ImportError(
            "Loading a 'kaggle://' preset needs the `kagglehub` package: pip install kagglehub"
        ) from error
    return kagglehub


def _resolve_kaggle(preset: str) -> pathlib.Path:
    segments, version = parse_kaggle_handle(preset)
    kagglehub = _import_kagglehub()
    handle = "/".join(segments) + (f"/{version}" if version is not None else "")
    try:
        with _default_requests_timeout((KAGGLE_CONNECT_TIMEOUT_S, KAGGLE_READ_TIMEOUT_S)):
            path = kagglehub.model_download(handle)
    except Exception as error:
        if not _is_network_error(error):
            raise
        if version is None:
            cached = _cached_kaggle_versions(segments)
            pinned = ", ".join(f"'{preset}/{v}'" for v in cached) or f"'{preset}/<version>'"
            raise ValueError(
                f"Cannot resolve the latest version of {preset!r} without network access "
                f"({type(error).__name__}). Pin a version to load it from the kagglehub cache: "
                f"{pinned}."
            ) from error
        raise ConnectionError(
            f"Cannot download {preset!r} and kagglehub's cache does not hold it "
            f"({type(error).__name__}: {error}). Check the network connection."
        ) from error
    return pathlib.Path(path)


def _is_network_error(error: BaseException) -> bool:
    import requests

    while error is not None:
        if isinstance(
            error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def _cached_kaggle_versions(segments: list[str]) -> list[int]:
    """Versions of a Kaggle model that kagglehub's cache holds completely."""
    from kagglehub.config import get_cache_folder

    variation_dir = pathlib.Path(get_cache_folder(), "models", *segments)
    if not variation_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in variation_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (variation_dir / f"{p.name}.complete").exists()
    )


_timeout_lock = threading.Lock()
_timeout_depth = 0
_original_send = None


@contextlib.contextmanager
def _default_requests_timeout(timeout):
    """Within the block, `requests` calls made without a timeout get `timeout`.

    kagglesdk sends its API requests with no timeout and offers no setting for one; this is
    the narrowest place to add it. Reentrant and thread-safe (patched while any block runs).
    """
    global _timeout_depth, _original_send
    import requests.adapters

    with _timeout_lock:
        if _timeout_depth == 0:
            _original_send = original = requests.adapters.HTTPAdapter.send

            def send(self, request, stream=False, timeout=None, **kwargs):
                if timeout is None:
                    timeout = default_timeout
                return original(self, request, stream=stream, timeout=timeout, **kwargs)

            default_timeout = timeout
            requests.adapters.HTTPAdapter.send = send
        _timeout_depth += 1
    try:
        yield
    finally:
        with _timeout_lock:
            _timeout_depth -= 1
            if _timeout_depth == 0:
                requests.adapters.HTTPAdapter.send = _original_send
                _original_send = None


# -- Hugging Face -----------------------------------------------------------------------------


def parse_hf_handle(preset: str) -> str:
    """'hf://owner/name' -> 'owner/name'; ValueError with the expected form."""
    segments = preset[len(HF_SCHEME) :].split("/")
    if len(segments) != 2 or not all(_HUB_NAME.match(s) for s in segments):
        raise ValueError(
            f"Malformed Hugging Face handle {preset!r}. Expected {HF_HANDLE_FORM}, "
            "e.g. 'hf://FacebookAI/roberta-base'."
        )
    return "/".join(segments)


def _import_huggingface_hub():
    try:
        import huggingface_hub
    except ImportError as error:
        raise ImportError(
            "Loading an 'hf://' preset needs the `huggingface_hub` package: " "pip install huggingface_hub"
        ) from error
    return huggingface_hub


class _HubRepo:
    """Fetches single files of one Hugging Face repository into its cache snapshot."""

    def __init__(self, huggingface_hub, repo_id: str, preset: str):
        self.hub = huggingface_hub
        self.repo_id = repo_id
        self.preset = preset

    def fetch(self, filename: str) -> pathlib.Path:
        return pathlib.Path(self.hub.hf_hub_download(self.repo_id, filename, etag_timeout=HF_ETAG_TIMEOUT_S))

    def fetch_optional(self, filename: str) -> pathlib.Path | None:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return self.fetch(filename)
        except EntryNotFoundError:  # absent from the repo, or offline and not cached
            return None

    def fetch_first_weights(self, candidates: tuple[str, ...], hint: str = "") -> None:
        for filename in candidates:
            path = self.fetch_optional(filename)
            if path is None:
                continue
            if filename.endswith(".json"):
                for shard in _shard_names(path):
                    self.fetch(shard)
            return
        raise FileNotFoundError(
            f"No weights file in {self.preset!r}: tried {', '.join(candidates)} (none exists in "
            f"the repository, or none is cached while offline).{hint}"
        )


def _shard_names(index_path: pathlib.Path) -> list[str]:
    weight_map = json.loads(index_path.read_text(encoding="utf-8")).get("weight_map", {})
    names = set()
    for value in weight_map.values():
        names.update(value if isinstance(value, list) else [value])
    return sorted(check_shard_name(name, str(index_path)) for name in names)


def _resolve_hf(preset: str, *, allow_pickle: bool) -> pathlib.Path:
    repo_id = parse_hf_handle(preset)
    huggingface_hub = _import_huggingface_hub()
    from huggingface_hub.errors import EntryNotFoundError

    repo = _HubRepo(huggingface_hub, repo_id, preset)
    try:
        config_path = repo.fetch("config.json")
    except EntryNotFoundError as error:
        raise FileNotFoundError(
            f"config.json is not available from {preset!r} (absent from the repository, or not "
            f"cached while offline): {error}"
        ) from error
    config = json.loads(config_path.read_text(encoding="utf-8"))
    hint = ""
    if "model_type" in config:
        candidates = _TRANSFORMERS_WEIGHTS + (_TRANSFORMERS_PICKLE_WEIGHTS if allow_pickle else ())
        if not allow_pickle:
            hint = " A repository with only pytorch_model.bin needs allow_pickle=True."
    elif "module" in config or "registered_name" in config:
        candidates = _KERAS_WEIGHTS
    else:
        candidates = _NATIVE_WEIGHTS
    repo.fetch_first_weights(candidates, hint)
    for filename in _OPTIONAL_FILES:
        repo.fetch_optional(filename)
    return config_path.parent
