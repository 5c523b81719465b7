"""`kagglehub.model_download` with every network wait bounded, without patching this process.

kagglehub's file transfers pass their own timeouts, but the API calls it makes through
kagglesdk (the latest-version lookup, the download redirect) pass none, and neither library
offers a setting for one. So a download that needs the network runs in a child process
(this file run as a script: it imports only the standard library and kagglehub, not
torch) whose only job it is: there, and only
there, every `requests` call that chose no timeout gets (CONNECT_TIMEOUT_S, READ_TIMEOUT_S);
the read timeout bounds the wait between two bytes, not a whole transfer, so large files
still download. The child inherits the environment (KAGGLEHUB_CACHE, credentials, proxies)
and stderr (kagglehub's progress bars), and reports the path or the error as JSON in a file.
Files kagglehub's cache already holds never get here (sources.KaggleSource finds them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the child reports: the local path, or the error (its type name, message, and
    whether it means "no network" or "no such file in the model")."""

    path: str | None = None
    error: str | None = None
    error_type: str | None = None
    network: bool = False
    not_found: bool = False


def download(handle: str, name: str | None) -> Outcome:
    """Run kagglehub.model_download(handle, path=name) in a child process (`name` None: the
    whole bundle; the path is then its folder)."""
    with tempfile.TemporaryDirectory(prefix="roberta_torch-kaggle-") as folder:
        result = pathlib.Path(folder, "result.json")
        command = [
            sys.executable, str(pathlib.Path(__file__).resolve()), handle, name or "", str(result),
            str(CONNECT_TIMEOUT_S), str(READ_TIMEOUT_S),
        ]
        process = subprocess.Popen(command, stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None)
        try:
            process.wait()
        except BaseException:  # Ctrl-C: do not leave the child behind
            process.kill()
            process.wait()
            raise
        if not result.is_file():
            return Outcome(error=f"the kagglehub download process exited with code {process.returncode}",
                           error_type="ChildProcessError")
        return Outcome(**json.loads(result.read_text(encoding="utf-8")))


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError):  # e.g. pytest's captured streams, notebooks
        return False


def cached_versions(segments) -> list[int]:
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


def unpinned_error(preset: str, segments, outcome: Outcome) -> Exception:
    """The latest version of an unversioned handle could not be looked up."""
    if not outcome.network:
        return ValueError(f"Cannot resolve {preset!r} through kagglehub: {outcome.error_type}: {outcome.error}")
    pinned = ", ".join(f"'kaggle://{'/'.join(segments)}/{v}'" for v in cached_versions(segments))
    return ValueError(
        f"Cannot resolve the latest version of {preset!r} without network access ({outcome.error_type}: "
        f"{outcome.error}). Pin a version to load it from the kagglehub cache: "
        f"{pinned or repr('kaggle://' + '/'.join(segments) + '/<version>')}."
    )


def download_error(preset: str, outcome: Outcome) -> Exception:
    if outcome.network:
        return ConnectionError(
            f"Cannot download {preset!r} and kagglehub's cache does not hold it ({outcome.error_type}: "
            f"{outcome.error}). Check the network connection."
        )
    return ValueError(f"Cannot download {preset!r} through kagglehub: {outcome.error_type}: {outcome.error}")


# -- the child ----------------------------------------------------------------------------------


def _default_requests_timeout(timeout) -> None:
    """Give every `requests` call of this (child) process that chose no timeout `timeout`."""
    import requests.adapters

    original = requests.adapters.HTTPAdapter.send

    def send(self, request, stream=False, timeout=None, **kwargs):
        return original(self, request, stream=stream, timeout=default if timeout is None else timeout, **kwargs)

    default = timeout
    requests.adapters.HTTPAdapter.send = send


def _is_network_error(error: BaseException) -> bool:
    import requests

    while error is not None:
        if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _is_not_found(error: BaseException) -> bool:
    # What kagglehub says for a file the model does not have (keras_hub reads it the same way).
    message = str(error)
    return "404 Client Error" in message or "is not present in the model files" in message


def _child(handle: str, name: str, result: str, connect: str, read: str) -> None:
    if os.path.exists(result):
        raise SystemExit(f"{result} exists")
    _default_requests_timeout((float(connect), float(read)))
    try:
        import kagglehub

        outcome = Outcome(path=kagglehub.model_download(handle, path=name or None))
    except Exception as error:
        outcome = Outcome(
            error=str(error)[:2000],
            error_type=type(error).__name__,
            network=_is_network_error(error),
            not_found=_is_not_found(error),
        )
    pathlib.Path(result).write_text(json.dumps(dataclasses.asdict(outcome)), encoding="utf-8")


if __name__ == "__main__":
    sys.path.pop(0)  # this package's folder: its module names must not shadow kagglehub's imports
    _child(*sys.argv[1:6])
