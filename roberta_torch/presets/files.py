"""File I/O every format shares: JSON with one error contract, the sharded-weights index,
safetensors headers, tensor-only pickles (opt-in), and writes that stay inside their
directory. File names live in names.py.

Writes never follow links: a file is written to a fresh temporary file created exclusively
(`O_EXCL`, `O_NOFOLLOW`) in the target directory, then renamed over the destination, which
must not be a link. A destination directory that is a link, or that holds a link where a
file is about to be written, is refused with a ValueError.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import pathlib
import re
import secrets
import shutil
import socket
import stat

from .. import optional
from . import renames

logger = logging.getLogger(__name__)

# -- reading ----------------------------------------------------------------------------------


MAX_JSON_BYTES = 64 * 1024 * 1024  # far above any real config; refuses absurd files early


def read_json(path: pathlib.Path, *, required: bool = True, expect=dict):
    """The JSON value in `path` (an object unless `expect` says otherwise).

    Missing file: FileNotFoundError when `required`, else None. Anything unreadable (not
    UTF-8, not JSON, nested too deep, too large, the wrong type): ValueError naming the file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path.name} is missing from {str(path.parent)!r}.")
        return None
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size:,} bytes; a preset JSON file is far smaller.")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error
    except RecursionError as error:
        raise ValueError(f"{path} is nested too deeply to be a preset file.") from error
    if expect is not None and not isinstance(value, expect):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, expected an object.")
    return value


def check_shard_name(name, index_file) -> str:
    """A shard named by an index file must be a plain file name next to it."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(
            f"{index_file} names shard {name!r}; shards must be plain file names in the same directory."
        )
    return name


def read_weight_map(index_path: pathlib.Path) -> dict[str, list[str]]:
    """The `weight_map` of a sharded-weights index (transformers' and Keras's): tensor or
    group name -> shard file names (Keras lists several for one group)."""
    index = read_json(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path} is not a sharded-weights index (no 'weight_map' object).")
    out = {}
    for key, value in weight_map.items():
        names = value if isinstance(value, list) else [value]
        out[key] = [check_shard_name(name, index_path) for name in names]
    return out


def shard_names(index_path: pathlib.Path) -> list[str]:
    """Every shard file an index names, sorted."""
    return sorted({name for names in read_weight_map(index_path).values() for name in names})


# -- writing ----------------------------------------------------------------------------------


def output_directory_path(directory, argument: str = "directory") -> pathlib.Path:
    """A destination directory argument as a path: not empty, not a link, not a file."""
    if isinstance(directory, (bytes, bytearray)):
        directory = os.fsdecode(directory)
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"`{argument}` must be a str or a path; got {type(directory).__name__}.")
    if not os.fspath(directory):
        raise ValueError(f"`{argument}` is an empty path; name the directory to write the preset into.")
    directory = pathlib.Path(directory)
    if directory.is_symlink():
        raise ValueError(f"`{argument}`={str(directory)!r} is a symbolic link; pass the real directory.")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"`{argument}`={str(directory)!r} is a file; pass a directory to write the preset into.")
    return directory


def check_output_directory(directory, argument: str = "directory") -> pathlib.Path:
    """Validate (and create) a directory to write preset files into."""
    directory = output_directory_path(directory, argument)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _check_destination(path: pathlib.Path) -> None:
    if path.is_symlink():
        raise ValueError(f"Refusing to write {path}: it is a symbolic link. Remove it first.")
    if path.exists() and not path.is_file():
        raise ValueError(f"Refusing to write {path}: it exists and is not a regular file.")


def ensure_subdirectory(directory: pathlib.Path, relative: str) -> pathlib.Path:
    """Create `directory/relative` (no links on the way) and return it."""
    current = directory
    for part in pathlib.PurePosixPath(relative).parts:
        current = current / part
        if current.is_symlink():
            raise ValueError(f"Refusing to write into {current}: it is a symbolic link. Remove it first.")
        if current.exists() and not current.is_dir():
            raise ValueError(f"Refusing to write into {current}: it exists and is not a directory.")
        current.mkdir(exist_ok=True)
    return current


# A temporary name keeps at most this many bytes of its destination's name, so that with its
# tags it stays within the file-name limit (255 bytes) for every valid destination name.
_NAME_ROOM = 180


def short_name(name: str) -> str:
    """`name` as temporary names next to it spell it: whole when short, else cut (bytes) and
    followed by a hash of the whole name, so two long names never share temporaries."""
    encoded = os.fsencode(name)
    if len(encoded) <= _NAME_ROOM:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:12]
    return os.fsdecode(encoded[: _NAME_ROOM - 13]) + "~" + digest


def _create_file(path: pathlib.Path) -> None:
    """Create `path` exclusively, never through a link, with the mode a plain open() gives
    under the user's umask (tempfile.mkstemp would make it private: 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    os.close(os.open(path, flags, 0o666))


def _fresh_path(parent: pathlib.Path, name: str, suffix: str, create, tag: str = "") -> pathlib.Path:
    """Create (with `create`) and return a new path `.NAME.<tag><random><suffix>` in `parent`."""
    for _ in range(100):
        candidate = parent / f".{short_name(name)}.{tag}{secrets.token_hex(4)}{suffix}"
        try:
            create(candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"Cannot create a temporary name for {name!r} in {str(parent)!r}.")


@contextlib.contextmanager
def atomic_output(path: pathlib.Path):
    """Yield a fresh temporary path next to `path`; on success rename it over `path`.

    The temporary file is created exclusively (never an existing file or link) in the
    destination's directory, so the rename is atomic and nothing outside is touched. It gets
    the mode a plain open() would give (the user's umask applies).
    """
    path = pathlib.Path(path)
    _check_destination(path)
    temporary = _fresh_path(path.parent, path.name, ".tmp", _create_file)
    mode = stat.S_IMODE(os.lstat(temporary).st_mode)
    try:
        yield temporary
        _check_destination(path)
        if not temporary.is_symlink() and stat.S_IMODE(temporary.stat().st_mode) != mode:
            os.chmod(temporary, mode)  # a writer that replaced the file (safetensors: 0600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_bytes(path: pathlib.Path, data: bytes) -> None:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


def write_text(path: pathlib.Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: pathlib.Path, data) -> None:
    write_text(path, json.dumps(data, indent=4))


# -- safetensors --------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def import_safetensors():
    """The `safetensors` package (ImportError naming the remedy when it is missing)."""
    return optional.require("safetensors", "Reading or writing safetensors weights", also=("torch",))


def read_safetensors(path: pathlib.Path) -> dict:
    """Every tensor of one safetensors file: key -> SourceTensor (header only; each tensor's
    data is read from the memory-mapped file when its loader is called)."""
    from .mapping import SourceTensor

    safe_open = import_safetensors().safe_open

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


# -- pickles (opt-in) -----------------------------------------------------------------------------

# torch.load(weights_only=True) could be made to run code before torch 2.6 (CVE-2025-32434,
# GHSA-53q9-r3pm-6pq6); no bypass is known from 2.6 on.
SAFE_PICKLE_TORCH = "2.6"


def check_pickle_loader(torch_version: str | None = None) -> None:
    """Refuse to read any pickle with a torch whose `weights_only=True` has a known bypass."""
    from torch.torch_version import TorchVersion

    import torch

    version = TorchVersion(torch_version or torch.__version__)
    if version < SAFE_PICKLE_TORCH:
        raise ValueError(
            f"allow_pickle=True needs torch >= {SAFE_PICKLE_TORCH}: torch.load(weights_only=True) in torch "
            f"{version} can be made to run code (CVE-2025-32434). Upgrade torch, or convert the file to "
            "safetensors with a trusted tool first."
        )


def read_pickle(path: pathlib.Path):
    """A pickle through torch.load(weights_only=True): tensors and plain containers only,
    never code (the caller checks what it holds). Reached only with allow_pickle=True."""
    import torch

    check_pickle_loader()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses anything but tensors and plain containers
        raise ValueError(f"Cannot read {path} with torch.load(weights_only=True): {error}") from error


# -- whole directories ------------------------------------------------------------------------
#
# A save writes into a staging directory `.NAME.<host>-<pid>-<random>.partial` next to NAME and
# moves it into place in one step. Linux: renameat2 (renames.py), so a destination that
# appeared meanwhile is never replaced (RENAME_NOREPLACE) and an overwrite swaps old and new in
# one step (RENAME_EXCHANGE): a crash at any point leaves the old or the new preset at NAME,
# never nothing. Elsewhere the old directory is moved aside to `.NAME.<host>-<pid>-<random>.old`
# first, and the next save or load of NAME puts it back if the process died before the new one
# was in.
# The host and pid in the names let the next save remove what a dead save left (never the
# files of a live one).

_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _leftover_pattern(directory: pathlib.Path) -> re.Pattern:
    return re.compile(re.escape(f".{short_name(directory.name)}.") + r"([0-9a-f]{8})-(\d+)-[0-9a-f]{8}\.(partial|old)")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process is saving
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # alive, another user's (or not a pid we can ask about: keep it)
    return True


def remove_tree(path: pathlib.Path) -> None:
    """Delete a directory tree of ours, also when its contents are read-only (a read-only
    directory's entries cannot be unlinked until the directory is writable again)."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)
    for root, subdirectories, _ in os.walk(path):  # top-down: each directory made writable before its turn
        for name in subdirectories:
            child = os.path.join(root, name)
            if not os.path.islink(child):
                with contextlib.suppress(OSError):
                    os.chmod(child, stat.S_IMODE(os.lstat(child).st_mode) | stat.S_IRWXU)
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
        return
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        logger.warning("Could not remove %s; delete it by hand.", path)


def _dead_leftovers(directory: pathlib.Path):
    """(path, kind) of each staging ("partial") or moved-aside ("old") directory of
    `directory` that a save on this host whose process is dead left next to it."""
    pattern = _leftover_pattern(directory)
    try:
        entries = list(os.scandir(directory.parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        host, pid, kind = match.groups()
        if host == _HOST_TAG and not _process_alive(int(pid)):
            found.append((pathlib.Path(entry.path), kind))
    return found


def restore_moved_aside(directory: pathlib.Path) -> bool:
    """Put back the preset a dead save moved aside (the portable swap's window) when nothing
    is at `directory`; whether it did. Loading a missing preset directory calls this too."""
    if os.path.lexists(directory):
        return False
    for path, kind in _dead_leftovers(directory):
        if kind == "old":
            logger.warning("Restoring %s from %s, moved aside by a save that did not finish.", directory, path)
            try:
                renames.rename_noreplace(path, directory)
            except renames.Unsupported:
                os.rename(path, directory)
            except FileExistsError:  # another process restored or saved it meanwhile
                pass
            except FileNotFoundError:  # another process restored it first
                pass
            return os.path.lexists(directory)
    return False


def remove_leftovers(directory: pathlib.Path) -> None:
    """Remove the staging directories dead saves of `directory` left next to it, after
    putting back an old preset such a save moved aside if nothing replaced it."""
    restore_moved_aside(directory)
    for path, _ in _dead_leftovers(directory):
        logger.info("Removing %s, left by a save that did not finish.", path)
        remove_tree(path)


def _make_directory(path: pathlib.Path) -> None:
    os.mkdir(path, 0o777)  # the mode a plain mkdir gives under the user's umask (mkdtemp: 0700)


def _staging_path(directory: pathlib.Path, kind: str) -> pathlib.Path:
    """A new empty directory `.NAME.<host>-<pid>-<random>.<kind>` next to `directory`."""
    owner = f"{_HOST_TAG}-{os.getpid()}-"
    return _fresh_path(directory.parent, directory.name, f".{kind}", _make_directory, tag=owner)


def _refuse_current_directory(directory: pathlib.Path, argument: str) -> None:
    """A preset replaces its directory as a whole: never the one we (or the shell) stand in."""
    try:
        current = pathlib.Path.cwd().resolve()
    except FileNotFoundError:
        return
    target = directory.resolve()
    if target == current or target in current.parents:
        raise ValueError(
            f"`{argument}`={str(directory)!r} is the current directory{'' if target == current else ' or one above it'}; "
            "a preset is written as a whole new directory. Name a subdirectory to save into (e.g. "
            f"{str(directory / 'my_preset')!r})."
        )


def _not_empty(directory: pathlib.Path, argument: str, meanwhile: bool = False) -> ValueError:
    when = " (another process wrote it while this save ran; nothing of this save was kept)" if meanwhile else ""
    return ValueError(
        f"`{argument}`={str(directory)!r} is not empty{when}; pass overwrite=True (CLI: --overwrite) to "
        "replace it, or choose a new directory."
    )


def _place_new(staging: pathlib.Path, directory: pathlib.Path, argument: str) -> None:
    """Move `staging` to `directory`, which must not exist or be empty, failing if it was
    filled meanwhile (also by a concurrent save)."""
    try:
        os.rmdir(directory)  # an empty destination; refused by the OS if anything appeared in it
    except FileNotFoundError:
        pass
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise _not_empty(directory, argument, meanwhile=True) from error
        raise
    try:
        renames.rename_noreplace(staging, directory)
    except renames.Unsupported:
        try:
            os.rename(staging, directory)  # replaces at most an empty directory
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise _not_empty(directory, argument, meanwhile=True) from error
            raise
    except FileExistsError as error:
        raise _not_empty(directory, argument, meanwhile=True) from error


def _replace(staging: pathlib.Path, directory: pathlib.Path) -> None:
    """Put `staging` at `directory`, replacing whatever preset is there; delete the old one."""
    try:
        renames.exchange(staging, directory)
    except FileNotFoundError:  # nothing to replace
        try:
            renames.rename_noreplace(staging, directory)
            return
        except FileExistsError:  # it appeared meanwhile: replace it as asked
            renames.exchange(staging, directory)
    except renames.Unsupported:
        old = None
        if os.path.lexists(directory):
            old = _staging_path(directory, "old")
            os.rename(directory, old)  # onto the new empty directory: replaces it
        os.rename(staging, directory)
        if old is not None:
            remove_tree(old)
        return
    remove_tree(staging)  # now the old preset


def check_staged_destination(directory, *, overwrite: bool = False, argument: str = "directory") -> pathlib.Path:
    """The checks `staged_directory` makes before writing anything, for callers that want
    them before expensive work (e.g. loading the model to convert): `directory` as a path.
    Removes what dead saves of `directory` left (see remove_leftovers)."""
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool; got {type(overwrite).__name__} ({overwrite!r}).")
    directory = output_directory_path(directory, argument)
    _refuse_current_directory(directory, argument)
    remove_leftovers(directory)  # first: it may put back a preset a dead save moved aside
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise _not_empty(directory, argument)
    return directory


@contextlib.contextmanager
def staged_directory(directory, *, overwrite: bool = False, argument: str = "directory"):
    """Yield an empty temporary directory next to `directory`; on success it becomes
    `directory` in one rename, so an interrupted write never leaves a mix of old and new
    files (nor a config next to partial weights), and a crash during an overwrite leaves the
    old or the new preset, never nothing (see the notes above).

    An existing non-empty `directory` is refused unless `overwrite=True`, also when another
    process fills it while this save runs; with `overwrite=True` it is replaced as a whole
    (its old files are removed once the new ones are in place). The current directory and
    its ancestors are refused. What dead saves of `directory` left next to it is removed
    first. Directories and files get the modes a plain mkdir()/open() gives (umask).
    """
    directory = check_staged_destination(directory, overwrite=overwrite, argument=argument)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(directory, "partial")
    try:
        yield staging
        try:
            (_replace(staging, directory) if overwrite else _place_new(staging, directory, argument))
        except OSError as error:
            if error.errno == errno.EBUSY:
                raise ValueError(
                    f"`{argument}`={str(directory)!r} is in use (a mount point, or a process's working "
                    "directory); save into a subdirectory of it."
                ) from error
            raise
    except BaseException:
        remove_tree(staging)  # this save's files (or, after an exchange, the old preset's)
        raise
