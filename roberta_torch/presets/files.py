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
import json
import os
import pathlib
import tempfile

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


@contextlib.contextmanager
def atomic_output(path: pathlib.Path):
    """Yield a fresh temporary path next to `path`; on success rename it over `path`.

    The temporary file is created exclusively (never an existing file or link) in the
    destination's directory, so the rename is atomic and nothing outside is touched.
    """
    path = pathlib.Path(path)
    _check_destination(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        yield pathlib.Path(temporary)
        _check_destination(path)
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
    try:
        import safetensors
        import safetensors.torch  # noqa: F401
    except ImportError as error:
        raise ImportError("Reading or writing safetensors weights needs the `safetensors` package: pip install safetensors") from error
    return safetensors


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


@contextlib.contextmanager
def staged_directory(directory, *, overwrite: bool = False, argument: str = "directory"):
    """Yield an empty temporary directory next to `directory`; on success it becomes
    `directory` in one rename, so an interrupted write never leaves a mix of old and new
    files (nor a config next to partial weights).

    An existing non-empty `directory` is refused unless `overwrite=True`; then it is
    replaced as a whole (its old files are removed once the new ones are in place).
    """
    import shutil

    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool; got {type(overwrite).__name__} ({overwrite!r}).")
    directory = output_directory_path(directory, argument)
    non_empty = directory.is_dir() and any(directory.iterdir())
    if non_empty and not overwrite:
        raise ValueError(
            f"`{argument}`={str(directory)!r} is not empty; pass overwrite=True (CLI: --overwrite) to "
            "replace it, or choose a new directory."
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if directory.exists():
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
        os.rmdir(old)
        os.rename(directory, old)
    os.rename(staging, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
