"""Where a preset's files come from, one file at a time: a local directory, a Hugging Face
repository (huggingface_hub's cache), a Kaggle model (kagglehub's cache).

Every source answers `fetch(name) -> local path | None` for a POSIX path inside the preset,
downloading it on demand, and knows `directory` (where fetched files lie) and `root` (the
folder links inside the preset may point into: the directory itself, or the hub cache
folder whose snapshots link into its blob store). Names are checked and links followed by
`Preset.file` (preset.py), the only caller. Sources hold plain data (strings, paths, flags),
so nothing here keeps a module object; hub clients are imported when a file is fetched.

Network waits are the clients' own:
  * huggingface_hub: HF_HUB_OFFLINE, HF_HUB_ETAG_TIMEOUT (metadata requests, default 10 s)
    and HF_HUB_DOWNLOAD_TIMEOUT (between bytes of a transfer). One metadata request for
    config.json (no retries) tells whether the hub answers; if it does not, or after any
    network error, every file comes from the cache (`local_files_only=True`), so a cached
    repository loads in seconds offline and a missing file is reported as "no network".
  * kagglehub: a file its cache holds is found in this process with no network call
    (kagglehub's cache layout, read through kagglehub.cache). Anything that needs the network
    runs `kagglehub.model_download` in a child process (kaggle_download.py): kagglesdk's API
    calls pass no timeout and kagglehub has no setting for one, so the child, and only the
    child, gives `requests` a default timeout. Nothing in this process is patched, and no
    thread is left behind.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

from .. import optional

logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class LocalSource:
    """A directory on this machine (a local preset, or one shipped in the package)."""

    handle: str
    directory: pathlib.Path
    remote = False  # files are on this machine: checking one costs nothing

    @property
    def root(self) -> pathlib.Path:
        return self.directory

    def fetch(self, name: str) -> pathlib.Path | None:
        path = self.directory / name
        return path if path.is_file() else None

    def missing(self, what: str) -> str:
        return f"{what} is missing from preset directory {str(self.directory)!r} (preset {self.handle!r})."

    def describe(self) -> str:
        return str(self.directory)


@dataclasses.dataclass(eq=False)
class SubfolderSource:
    """A folder inside another preset (a sentence-transformers module's path): files are
    fetched through the enclosing preset's source, and links may point anywhere in it."""

    parent: object
    prefix: str

    @property
    def remote(self) -> bool:
        return self.parent.remote

    @property
    def handle(self) -> str:
        return f"{self.parent.handle} ({self.prefix})"

    @property
    def directory(self) -> pathlib.Path | None:
        return None if self.parent.directory is None else self.parent.directory / self.prefix

    @property
    def root(self) -> pathlib.Path | None:
        return self.parent.root

    def fetch(self, name: str) -> pathlib.Path | None:
        return self.parent.fetch(f"{self.prefix}/{name}")

    def missing(self, what: str) -> str:
        return self.parent.missing(f"{what} (in {self.prefix}/)")

    def describe(self) -> str:
        return f"{self.parent.describe()}/{self.prefix}"


# -- Hugging Face -----------------------------------------------------------------------------


def import_huggingface_hub():
    return optional.require("huggingface_hub", "Loading an 'hf://' preset")


def is_hub_network_error(error: BaseException) -> bool:
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


@dataclasses.dataclass(eq=False)
class HuggingFaceSource:
    """One repository of the Hugging Face hub, file by file into huggingface_hub's cache.

    offline: why every file now comes from the cache (HF_HUB_OFFLINE, a probe that got no
             answer, or the first network error), or None.
    directory: the cache snapshot the fetched files lie in (known after the first fetch).
    """

    handle: str
    repo_id: str
    offline: str | None = None
    directory: pathlib.Path | None = None
    probed: bool = False
    remote = True

    @property
    def root(self) -> pathlib.Path | None:
        # snapshots/<revision>/ link into ../../blobs: the repository's cache folder.
        return None if self.directory is None else self.directory.parent.parent

    def _probe(self, hub) -> None:
        """One metadata request (huggingface_hub's HF_HUB_ETAG_TIMEOUT, no retries) that tells
        whether the hub answers at all."""
        self.probed = True
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            self.offline = "HF_HUB_OFFLINE is set"
            return
        try:
            hub.get_hf_file_metadata(hub.hf_hub_url(self.repo_id, "config.json"), timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except Exception as error:
            if is_hub_network_error(error):
                self._go_offline(error)
            # Other answers (404, gated, ...) came from the hub: it is reachable.

    def _go_offline(self, error: BaseException) -> None:
        self.offline = f"no network: {type(error).__name__}: {str(error)[:200]}"
        logger.warning(
            "%s: the Hugging Face hub cannot be reached (%s); using the local cache only.", self.handle, self.offline
        )

    def fetch(self, name: str) -> pathlib.Path | None:
        hub = import_huggingface_hub()
        from huggingface_hub.errors import EntryNotFoundError

        if not self.probed:
            self._probe(hub)
        try:
            path = hub.hf_hub_download(self.repo_id, name, local_files_only=self.offline is not None)
        except EntryNotFoundError as error:  # absent from the repository, or offline and not cached
            if self.offline is None and is_hub_network_error(error):
                self._go_offline(error)
            return None
        except Exception as error:
            if not is_hub_network_error(error):
                raise
            self._go_offline(error)
            return None
        path = pathlib.Path(path)
        if self.directory is None:
            self.directory = path.parents[len(pathlib.PurePosixPath(name).parts) - 1]
        return path

    def missing(self, what: str) -> str:
        if self.offline:
            return (
                f"{what} is not in the local huggingface_hub cache for {self.handle!r} and the hub is unreachable "
                f"({self.offline})."
            )
        return f"{what} is absent from the repository {self.handle!r}."

    def describe(self) -> str:
        return f"{self.handle} ({self.directory or 'huggingface_hub cache'})"


# -- Kaggle -----------------------------------------------------------------------------------


def import_kagglehub():
    return optional.require("kagglehub", "Loading a 'kaggle://' preset")


@dataclasses.dataclass(eq=False)
class KaggleSource:
    """One Kaggle model variation through kagglehub's cache.

    segments: (owner, model, framework, variation); version: pinned by the handle or by the
    first download (kagglehub resolves the latest version then). config.json comes alone
    (enough to tell the format, or to build without weights); any other file brings the
    whole bundle once, after which every question (including "is there a task.json?") is
    answered from the cache without a network call.
    """

    handle: str
    segments: tuple
    version: int | None = None
    remote = True

    @property
    def kaggle_handle(self) -> str:
        return "/".join(self.segments) + (f"/{self.version}" if self.version is not None else "")

    @property
    def directory(self) -> pathlib.Path | None:
        if self.version is None:
            return None
        from kagglehub.config import get_cache_folder

        return pathlib.Path(get_cache_folder(), "models", *self.segments, str(self.version))

    @property
    def root(self) -> pathlib.Path | None:
        return self.directory

    def _cached(self, name: str) -> tuple[bool, pathlib.Path | None]:
        """(known, path): whether kagglehub's cache answers for `name` without a download, and
        the file when it has it. A completely downloaded bundle answers for every name."""
        import_kagglehub()
        from kagglehub.cache import Cache
        from kagglehub.handle import parse_model_handle

        model = parse_model_handle(self.kaggle_handle)
        cache = Cache()
        bundle = cache.load_from_cache(model)
        if bundle is not None:
            path = pathlib.Path(bundle, name)
            return True, (path if path.is_file() else None)
        single = cache.load_from_cache(model, name)
        return (True, pathlib.Path(single)) if single is not None else (False, None)

    def fetch(self, name: str) -> pathlib.Path | None:
        from . import kaggle_download

        if self.version is not None:
            known, path = self._cached(name)
            if known:
                return path
        single = name == "config.json" or self.version is None
        outcome = kaggle_download.download(self.kaggle_handle, name if single else None)
        if outcome.not_found:
            return None
        if outcome.error is not None:
            if self.version is None:
                raise kaggle_download.unpinned_error(self.handle, self.segments, outcome)
            raise kaggle_download.download_error("kaggle://" + self.kaggle_handle, outcome)
        path = pathlib.Path(outcome.path)
        if self.version is None:  # pin what kagglehub resolved: the folder above the file
            self.version = int(path.parents[len(pathlib.PurePosixPath(name).parts) - 1].name)
        if not single:  # the bundle's folder
            path = path / name
            return path if path.is_file() else None
        return path

    def missing(self, what: str) -> str:
        return f"{what} is absent from the Kaggle model {self.handle!r} ({self.describe()})."

    def describe(self) -> str:
        return f"kaggle://{self.kaggle_handle} ({self.directory or 'kagglehub cache'})"


SOURCES = (LocalSource, SubfolderSource, HuggingFaceSource, KaggleSource)
