"""Map every preset form to a local directory: the one place that knows about hubs.

Accepted forms:
  * a builtin name (`roberta_base_en`, ... see registry.py), mapped to its handle;
  * `kaggle://<owner>/<model>/<framework>/<variation>[/<version>]`, through kagglehub;
  * `hf://<owner>/<name>`, through huggingface_hub (Keras-preset or transformers repos);
  * a local directory.

Hub clients are imported here, lazily, so `import roberta_torch` never needs them.

Network timeouts (no call waits forever):
  * huggingface_hub: one probe (the metadata of config.json, HF_ETAG_TIMEOUT_S) decides
    whether the hub answers, within HF_PROBE_DEADLINE_S of wall time whatever the client's
    retry policy (it runs in a worker thread that is abandoned at the deadline). If it does
    not answer, every file comes from huggingface_hub's cache (`local_files_only`) and a
    missing one is reported as "no network"; if it answers, each file goes through
    `hf_hub_download` (metadata: `etag_timeout`; transfers: huggingface_hub's
    `HF_HUB_DOWNLOAD_TIMEOUT` between bytes). After any network error the remaining files
    come from the cache. `snapshot_download` is not used: its listing has no timeout.
  * kagglehub: file transfers use kagglehub's own (5 s connect, 15 s read) timeouts, but the
    API calls it makes through kagglesdk (version lookup, download redirects) pass none.
    While kagglehub runs, `_default_requests_timeout` gives every `requests` call that did
    not choose a timeout (KAGGLE_CONNECT_TIMEOUT_S, KAGGLE_READ_TIMEOUT_S); calls that chose
    one keep it.
Download progress is shown by the clients' own progress bars.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import pathlib
import re
import threading

from . import files, formats, registry

logger = logging.getLogger(__name__)

KAGGLE_SCHEME = "kaggle://"
HF_SCHEME = "hf://"

HF_ETAG_TIMEOUT_S = 10.0
HF_PROBE_DEADLINE_S = 15.0
MAX_HANDLE_ECHO = 200  # characters of a bad handle quoted in an error message
KAGGLE_CONNECT_TIMEOUT_S = 10.0
KAGGLE_READ_TIMEOUT_S = 60.0

KAGGLE_HANDLE_FORM = "kaggle://<owner>/<model>/<framework>/<variation>[/<version>]"
HF_HANDLE_FORM = "hf://<owner>/<name>"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

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


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a preset's files are: `directory`, and `root`, the folder its links may point
    into (the directory itself, or the hub cache folder that holds it)."""

    handle: str
    directory: pathlib.Path
    root: pathlib.Path


def _echo(value) -> str:
    """A handle quoted in an error message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= MAX_HANDLE_ECHO else text[:MAX_HANDLE_ECHO] + f"... ({len(text):,} characters)"


def resolve_preset(preset, *, allow_pickle: bool = False) -> Location:
    """Return where `preset`'s files are, downloading them when needed.

    `allow_pickle` also fetches `pytorch_model.bin` from Hugging Face repositories that
    have no safetensors weights (loading it still needs the same opt-in).
    """
    return _resolve(preset, allow_pickle)


def _resolve(preset, allow_pickle: bool) -> Location:
    if isinstance(preset, os.PathLike):
        return _local(os.fspath(preset))
    if not isinstance(preset, str):
        raise TypeError(
            f"`preset` must be a str or a path; got {type(preset).__name__} ({_echo(preset)}).\n"
            + accepted_forms()
        )
    if preset in registry.BUILTIN_PRESETS:
        if os.path.isdir(preset):
            logger.warning(
                "Preset %r is a builtin name and also a local directory; using the builtin. "
                "Pass './%s' for the directory.", preset, preset
            )
        location = _resolve(registry.BUILTIN_PRESETS[preset]["handle"], allow_pickle)
        return dataclasses.replace(location, handle=preset)
    if preset.startswith(registry.PACKAGE_HANDLE_PREFIX):
        directory = registry.package_preset_dir(preset)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"The shipped preset {_echo(preset)} is missing from this installation: no directory "
                f"{directory}. Reinstall roberta_torch."
            )
        return Location(preset, directory, directory)
    if preset.startswith(KAGGLE_SCHEME):
        directory = _resolve_kaggle(preset)
        return Location(preset, directory, directory)
    if preset.startswith(HF_SCHEME):
        return _resolve_hf(preset, allow_pickle=allow_pickle)
    if "://" in preset:
        scheme = preset.split("://", 1)[0][:40]
        raise ValueError(f"Unknown preset scheme '{scheme}://' in preset={_echo(preset)}.\n{accepted_forms()}")
    if len(preset) < 4096 and (os.path.exists(os.path.expanduser(preset)) or _looks_like_path(preset)):
        return _local(preset)
    suggestion = difflib.get_close_matches(preset[:100], registry.builtin_preset_names(), n=1, cutoff=0.5)
    hint = f" Did you mean '{suggestion[0]}'?" if suggestion else ""
    raise ValueError(
        f"Unknown preset {_echo(preset)}: not a builtin name, handle or directory.{hint}\n{accepted_forms()}"
    )


def _looks_like_path(preset: str) -> bool:
    return preset.startswith((".", "~")) or "/" in preset or os.sep in preset


def _local(path: str) -> Location:
    directory = pathlib.Path(path).expanduser()
    if not directory.exists():
        raise FileNotFoundError(f"Preset directory {_echo(str(directory))} does not exist.\n{accepted_forms()}")
    if not directory.is_dir():
        raise ValueError(
            f"preset={_echo(path)} is a file; a local preset is the directory holding config.json "
            f"and the weights (e.g. {str(directory.parent)!r})."
        )
    directory = directory.resolve()
    return Location(path, directory, directory)


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


def _is_hub_network_error(error: BaseException) -> bool:
    """Whether `error` (or its cause) says the hub could not be reached."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    names = {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError", "ProxyError"}
    while error is not None:
        if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        if type(error).__name__ in names:
            return True
        error = error.__cause__ or error.__context__
    return False


def _call_with_deadline(function, deadline_s: float):
    """Run `function()` in a worker thread; TimeoutError if it has not returned in time.

    The hub client retries a failing request several times with long timeouts; no call here
    may wait longer than the documented deadline, so the thread is abandoned (daemon) then.
    """
    result: dict = {}

    def run():
        try:
            result["value"] = function()
        except BaseException as error:  # re-raised in the caller's thread
            result["error"] = error

    worker = threading.Thread(target=run, daemon=True, name="roberta_torch-hub")
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        raise TimeoutError(f"the hub did not answer within {deadline_s:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


class _HubRepo:
    """Fetches single files of one Hugging Face repository into its cache snapshot.

    `offline` (the reason, or None) switches every fetch to the local cache; it is set by
    HF_HUB_OFFLINE, by a probe that gets no answer, or by the first network error.
    """

    def __init__(self, huggingface_hub, repo_id: str, preset: str):
        self.hub = huggingface_hub
        self.repo_id = repo_id
        self.preset = preset
        from huggingface_hub import constants

        self.offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None

    def probe(self) -> None:
        """One bounded request that tells whether the hub answers at all."""
        if self.offline:
            return
        url = self.hub.hf_hub_url(self.repo_id, files.CONFIG_FILE)
        try:
            _call_with_deadline(
                lambda: self.hub.get_hf_file_metadata(url, timeout=HF_ETAG_TIMEOUT_S), HF_PROBE_DEADLINE_S
            )
        except Exception as error:
            if _is_hub_network_error(error):
                self._go_offline(error)
            # Other answers (404, gated, ...) came from the hub: it is reachable.

    def _go_offline(self, error: BaseException) -> None:
        self.offline = f"no network: {type(error).__name__}: {str(error)[:200]}"
        logger.warning("%s: the Hugging Face hub cannot be reached (%s); using the local cache only.",
                       self.preset, self.offline)

    def fetch(self, filename: str) -> pathlib.Path:
        if self.offline:
            return pathlib.Path(self.hub.hf_hub_download(self.repo_id, filename, local_files_only=True))
        try:
            return pathlib.Path(self.hub.hf_hub_download(self.repo_id, filename, etag_timeout=HF_ETAG_TIMEOUT_S))
        except Exception as error:
            if not _is_hub_network_error(error):
                raise
            self._go_offline(error)
            return pathlib.Path(self.hub.hf_hub_download(self.repo_id, filename, local_files_only=True))

    def fetch_optional(self, filename: str) -> pathlib.Path | None:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return self.fetch(filename)
        except (EntryNotFoundError, LocalEntryNotFoundError):  # absent, or offline and not cached
            return None

    def missing(self, what: str) -> str:
        if self.offline:
            return f"{what} is not in the local huggingface_hub cache for {self.preset!r} and the hub is unreachable ({self.offline})."
        return f"{what} is absent from the repository {self.preset!r}."

    def fetch_first_weights(self, candidates: tuple[str, ...], hint: str = "") -> None:
        for filename in candidates:
            path = self.fetch_optional(filename)
            if path is None:
                continue
            if filename.endswith(".json"):
                for shard in files.shard_names(path):
                    self.fetch(shard)
            return
        raise FileNotFoundError(self.missing(f"No weights file (tried {', '.join(candidates)})") + hint)


def _module_config_files(modules_path: pathlib.Path) -> list[str]:
    """The config files of the modules a sentence-transformers modules.json lists under paths
    other than the usual ones."""
    if not modules_path.is_file():
        return []
    modules = files.read_json(modules_path, expect=list)
    names = []
    for module in modules:
        path = module.get("path") if isinstance(module, dict) else None
        if isinstance(path, str) and path and ".." not in path.split("/") and not path.startswith("/"):
            names.append(f"{path}/config.json")
    return [name for name in dict.fromkeys(names) if name not in files.EMBEDDING_FILES]


def _resolve_hf(preset: str, *, allow_pickle: bool) -> Location:
    repo_id = parse_hf_handle(preset)
    huggingface_hub = _import_huggingface_hub()

    repo = _HubRepo(huggingface_hub, repo_id, preset)
    repo.probe()
    config_path = repo.fetch_optional(files.CONFIG_FILE)
    if config_path is None:
        raise FileNotFoundError(repo.missing("config.json"))
    raw = files.read_json(config_path)
    fmt = formats.detect_format(raw, config_path)
    hint = ""
    if fmt.NAME == "transformers" and not allow_pickle:
        hint = " A repository with only pytorch_model.bin needs allow_pickle=True."
    repo.fetch_first_weights(fmt.hub_weight_candidates(allow_pickle), hint)
    extra = files.KERAS_EXTRA_FILES if fmt.NAME == "keras" else files.EMBEDDING_FILES
    for filename in files.TOKENIZER_FILES + extra:
        repo.fetch_optional(filename)
    for filename in _module_config_files(config_path.parent / files.ST_MODULES_FILE):
        repo.fetch_optional(filename)
    directory = config_path.parent
    # huggingface_hub's snapshots link into the repository's blob store next to them.
    return Location(preset, directory, directory.parent.parent)
