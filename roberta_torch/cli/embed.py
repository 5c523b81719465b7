"""`roberta-torch embed --preset P INPUT --out OUT`: embed a file of texts, resumably.

INPUT: `.txt` (one text per line), `.jsonl` (a text field per object) or `.csv` (a text column).
OUT:   `.npy` ((n, dim), input order), `.jsonl` ({"id", "embedding"} per line) or `.parquet`
       (columns id, embedding; needs pyarrow).

The texts are embedded in chunks of `--chunk-size`; each finished chunk is written atomically
to `OUT.parts/` next to a manifest of the run's settings. A rerun of the same command after an
interruption skips the finished chunks. OUT itself appears only at the end, by an atomic
rename of a fully written temporary file, and then `OUT.parts/` is removed: a file at OUT is
always complete.

Under `torchrun --nproc-per-node N` every rank embeds its share of each chunk and rank 0 writes:

    torchrun --nproc-per-node 8 --no-python roberta-torch embed --preset bge_m3 in.jsonl --out out.npy
    torchrun --nproc-per-node 8 -m roberta_torch embed --preset bge_m3 in.jsonl --out out.npy
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import logging
import os
import pathlib
import shutil

import numpy as np

from .. import optional
from ..embedding import distributed
from ..presets import files

logger = logging.getLogger(__name__)

INPUT_FORMATS = (".txt", ".jsonl", ".csv")
OUTPUT_FORMATS = (".npy", ".jsonl", ".parquet")
DEFAULT_CHUNK_SIZE = 4096
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


# -- input ----------------------------------------------------------------------------------------


def read_texts(path: pathlib.Path, field: str = "text", id_field: str | None = None) -> tuple[list[str], list]:
    """(texts, ids) of an input file; ids are `id_field`'s values or the 0-based record numbers."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_FORMATS:
        raise ValueError(f"INPUT {str(path)!r}: unknown format {suffix!r}; use one of {', '.join(INPUT_FORMATS)}.")
    if not path.is_file():
        raise FileNotFoundError(f"INPUT {str(path)!r} does not exist.")
    if suffix == ".txt":
        texts = split_lines(_read_text(path))
        return texts, list(range(len(texts)))
    records = []
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{str(path)!r} line {number} is not valid JSON: {error}") from error
                if not isinstance(record, dict):
                    raise ValueError(f"{str(path)!r} line {number} must be a JSON object; got {type(record).__name__}.")
                records.append((f"line {number}", record))
        where = "--field"
    else:
        records = _read_csv(path, field, id_field)
        where = "--field"
    texts, ids = [], []
    for index, (label, record) in enumerate(records):
        if field not in record or not isinstance(record[field], str):
            raise ValueError(
                f"{str(path)!r} {label}: no string field {field!r} ({where}); it has {sorted(record)}."
            )
        texts.append(record[field])
        if id_field is not None:
            if id_field not in record:
                raise ValueError(f"{str(path)!r} {label}: no field {id_field!r} (--id-field).")
            ids.append(record[id_field])
        else:
            ids.append(index)
    return texts, ids


def _read_text(path: pathlib.Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as file:  # newline="": line ends as written
            return file.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"INPUT {str(path)!r} is not UTF-8 text ({error}).") from error


def split_lines(text: str) -> list[str]:
    """One text per line, split on "\n" and "\r\n" only: U+2028, U+0085, form feeds, a lone
    "\r" ... are characters of a text, as every line-oriented tool reads them (str.splitlines
    would add lines and shift every id after them)."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# The csv module refuses fields over 128 KiB by default; a text may be longer (only its first
# tokens are used). The largest limit every platform's C long takes.
CSV_FIELD_LIMIT = 2**31 - 1


def _read_csv(path: pathlib.Path, field: str, id_field: str | None) -> list:
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = None
    try:
        with open(path, encoding="utf-8", newline="") as file:
            reader = csv.DictReader(file)
            columns = reader.fieldnames or []
            if field not in columns:
                raise ValueError(f"{str(path)!r} has no column {field!r} (--field); its columns: {columns}.")
            if id_field is not None and id_field not in columns:
                raise ValueError(f"{str(path)!r} has no column {id_field!r} (--id-field); its columns: {columns}.")
            return [(f"row {number}", row) for number, row in enumerate(reader, start=2)]
    except csv.Error as error:
        line = f" line {reader.line_num}" if reader is not None else ""
        raise ValueError(f"{str(path)!r}{line} is not valid CSV: {error}.") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"INPUT {str(path)!r} is not UTF-8 text ({error}).") from error
    finally:
        csv.field_size_limit(previous)


# -- chunk store ----------------------------------------------------------------------------------


class ChunkStore:
    """Finished chunks of one run in `OUT.parts/`: chunk_000000.npy, ... and manifest.json.

    The directory, its manifest and its chunks must be what this command wrote: a link at any
    of them is refused (never read, written or removed through), as every other write refuses
    links.
    """

    MANIFEST = "manifest.json"

    def __init__(self, out: pathlib.Path, manifest: dict):
        self.directory = out.with_name(out.name + ".parts")
        self.manifest = manifest

    def _check_not_a_link(self, path: pathlib.Path) -> None:
        if path.is_symlink():
            raise ValueError(
                f"{str(path)!r} is a symbolic link; refusing to use it for the unfinished run of --out. "
                "Remove the link (it is not followed, also not with --overwrite)."
            )

    def _check_directory(self) -> None:
        self._check_not_a_link(self.directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"{str(self.directory)!r} exists and is not a directory; remove it or choose another --out.")

    def open(self) -> list[int]:
        """Create or reuse the parts directory; return the finished chunk numbers."""
        self._check_directory()
        path = self.directory / self.MANIFEST
        self._check_not_a_link(path)
        if path.is_file():
            self._check_manifest(files.read_json(path))
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            files.write_json(path, self.manifest)
        remove_stale_temporaries(self.directory, "*")
        chunks = sorted(self.directory.glob("chunk_*.npy"))
        for chunk in chunks:
            self._check_not_a_link(chunk)
        return sorted(int(p.stem.split("_")[1]) for p in chunks)

    def _check_manifest(self, saved: dict) -> None:
        if saved == self.manifest:
            return
        if saved.get("model") != self.manifest.get("model"):
            raise ValueError(
                f"{str(self.directory)!r} holds an unfinished run made with another model: the files of --preset "
                f"{self.manifest.get('preset')!r} changed since it started (weights, config or tokenizer), and mixing "
                "the two models' embeddings would be wrong. Pass --overwrite to start over with this model."
            )
        changed = sorted(k for k in set(saved) | set(self.manifest) if saved.get(k) != self.manifest.get(k))
        raise ValueError(
            f"{str(self.directory)!r} holds an unfinished run with other settings ({', '.join(changed)}); "
            "rerun with the same arguments to resume it, or pass --overwrite to start over."
        )

    def path(self, number: int) -> pathlib.Path:
        return self.directory / f"chunk_{number:06d}.npy"

    def write(self, number: int, embeddings: np.ndarray) -> None:
        with files.atomic_output(self.path(number)) as temporary, open(temporary, "wb") as file:
            np.save(file, embeddings)
            file.flush()
            os.fsync(file.fileno())

    def load(self, number: int) -> np.ndarray:
        path = self.path(number)
        self._check_not_a_link(path)
        return np.load(path)

    def remove(self) -> None:
        """Delete the directory (--overwrite, or after OUT is written); a link is refused."""
        self._check_directory()
        shutil.rmtree(self.directory, ignore_errors=True)


def remove_stale_temporaries(directory: pathlib.Path, name_pattern: str) -> None:
    """Delete the temporary files a killed run left for files named like `name_pattern` in
    `directory` (presets.files.atomic_output writes ".NAME.<random>.tmp" and renames it into
    place; a kill in between leaves it). Only regular files: a link is left alone."""
    for temporary in directory.glob(f".{name_pattern}.*.tmp"):
        if temporary.is_file() and not temporary.is_symlink():
            logger.info("Removing %s, left by an interrupted run", temporary)
            temporary.unlink(missing_ok=True)


def model_fingerprint(preset) -> str:
    """A digest of the name, size and modification time of every file of the preset (weights,
    config, tokenizer, embedding modules): it changes when the model at `preset` changes."""
    from ..presets.preset import open_preset

    directory = open_preset(preset, require_config=False).directory
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue  # hidden files (.cache/, .git/) are not the model
        stat = path.stat()  # through hub caches' links to their blobs
        digest.update(f"{relative.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# -- output ---------------------------------------------------------------------------------------


def _import_pyarrow():
    return optional.require("pyarrow", "Writing .parquet", install="pyarrow (or write .npy / .jsonl)", also=("parquet",))


def check_output(out: pathlib.Path, overwrite: bool, input: pathlib.Path | None = None) -> str:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"--out {str(out)!r}: unknown format {suffix!r}; use one of {', '.join(OUTPUT_FORMATS)}.")
    if suffix == ".parquet":
        _import_pyarrow()
    if input is not None and out.exists() and input.exists() and os.path.samefile(out, input):
        # Also through a link, a hard link or another spelling of the path.
        raise ValueError(f"--out {str(out)!r} is the input file {str(input)!r}; write the embeddings to another file.")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {str(out)!r} exists; pass --overwrite to replace it.")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {str(out)!r}: the directory {str(out.parent)!r} does not exist.")
    return suffix


def _json_id(value):
    return value.item() if isinstance(value, np.generic) else value


def assemble(store: ChunkStore, chunks: int, ids: list, out: pathlib.Path, precision: str) -> tuple[int, ...]:
    """Write OUT from the chunk files: a temporary file first, renamed over OUT when complete."""
    from ..embedding.text_embedder import quantize

    ranges = None
    if precision in ("int8", "uint8"):  # one set of buckets for the whole output
        mins, maxs = zip(*((c.min(axis=0), c.max(axis=0)) for c in map(store.load, range(chunks))))
        ranges = np.stack([np.min(mins, axis=0), np.max(maxs, axis=0)])
        if len(ids) < 2:
            raise ValueError(f"precision={precision!r} needs at least 2 texts to compute its ranges.")

    def quantized(number):
        return quantize(store.load(number), precision, ranges)

    with files.atomic_output(out) as temporary:
        return _write_output(temporary, out.suffix.lower(), chunks, ids, quantized)


def _write_output(temporary: pathlib.Path, suffix: str, chunks: int, ids: list, quantized) -> tuple[int, ...]:
    first = quantized(0)
    shape = (len(ids), *first.shape[1:])
    if suffix == ".npy":
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=first.dtype, shape=shape)
        start = 0
        for number in range(chunks):
            rows = first if number == 0 else quantized(number)
            array[start : start + len(rows)] = rows
            start += len(rows)
        array.flush()
        del array
    elif suffix == ".jsonl":
        with open(temporary, "w", encoding="utf-8") as file:
            start = 0
            for number in range(chunks):
                rows = first if number == 0 else quantized(number)
                for offset, row in enumerate(rows):
                    file.write(json.dumps({"id": _json_id(ids[start + offset]), "embedding": row.tolist()}) + "\n")
                start += len(rows)
    else:
        pyarrow = _import_pyarrow()
        writer, start = None, 0
        for number in range(chunks):
            rows = first if number == 0 else quantized(number)
            table = pyarrow.table({"id": [_json_id(i) for i in ids[start : start + len(rows)]],
                                   "embedding": list(rows)})
            writer = writer or pyarrow.parquet.ParquetWriter(str(temporary), table.schema)
            writer.write_table(table)
            start += len(rows)
        writer.close()
    return shape


# -- the command ----------------------------------------------------------------------------------


def embed_file(preset, input, out, *, field: str = "text", id_field: str | None = None, batch_size: int = 32,
               max_tokens_per_batch: int | None = None, prompt_name: str | None = None, normalize: bool | None = None,
               precision: str = "float32", chunk_size: int = DEFAULT_CHUNK_SIZE, dtype: str | None = None,
               device: str | None = None, overwrite: bool = False, show_progress_bar: bool = True,
               on_chunk_written=None, allow_pickle: bool = False) -> dict:
    """Embed INPUT into OUT (see the module docstring); returns a summary dict (rank 0) or None.

    `on_chunk_written(number)` is called on rank 0 after each chunk file is safely written.
    """
    from ..embedding.batching import check_positive_int
    from ..embedding.text_embedder import TextEmbedder

    input, out = pathlib.Path(input), pathlib.Path(out)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}; got {precision!r}.")
    check_output(out, overwrite, input)
    if device:
        check_device(device)
    texts, ids = read_texts(input, field, id_field)
    if not texts:
        raise ValueError(f"INPUT {str(input)!r} holds no texts.")
    rank, world_size, dist_device = distributed.init_from_environment()
    with distributed.process_group_scope():
        kwargs = {}
        if dtype:
            kwargs["dtype"] = dtype
        device = device or (str(dist_device) if dist_device is not None else None)
        if device:
            kwargs["device"] = device
        embedder = TextEmbedder.from_preset(preset, allow_pickle=allow_pickle, **kwargs)

        stat = input.stat()
        manifest = {
            "input": str(input.resolve()), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
            "preset": str(preset), "model": model_fingerprint(preset), "field": field, "id_field": id_field,
            "prompt_name": prompt_name, "normalize": normalize, "dtype": dtype, "chunk_size": chunk_size,
            "num_texts": len(texts), "embedding_dim": embedder.embedding_dim,
        }
        store = ChunkStore(out, manifest)
        done = distributed.broadcast_from_rank0(_start_run(store, out, overwrite) if rank == 0 else None)
        if isinstance(done, str):  # rank 0 refused: every rank stops with its message
            raise ValueError(done)
        chunks = (len(texts) + chunk_size - 1) // chunk_size
        todo = [n for n in range(chunks) if n not in set(done)]
        if rank == 0 and done:
            logger.info("Resuming: %d of %d chunks already in %s", len(done), chunks, store.directory)
        progress = None
        if rank == 0 and show_progress_bar:
            from tqdm.auto import tqdm

            finished = sum(min(chunk_size, len(texts) - n * chunk_size) for n in done)
            progress = tqdm(total=len(texts), initial=finished, desc="Embedding", unit="text")
        try:
            for number in todo:
                chunk = texts[number * chunk_size : (number + 1) * chunk_size]
                embeddings = distributed.encode_sharded(
                    embedder, chunk, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch,
                    prompt_name=prompt_name, normalize=normalize, show_progress_bar=False,
                )
                if rank == 0:
                    store.write(number, embeddings.astype(np.float32))
                    if progress is not None:
                        progress.update(len(chunk))
                    if on_chunk_written is not None:
                        on_chunk_written(number)
        finally:
            if progress is not None:
                progress.close()
        distributed.barrier()
        if rank != 0:
            return None
        shape = assemble(store, chunks, ids, out, precision)
        store.remove()
        return {"out": str(out), "shape": shape, "texts": len(texts), "chunks": chunks, "resumed_chunks": len(done),
                "world_size": world_size}


HELP = "embed a .txt / .jsonl / .csv file of texts (resumable; torchrun-aware)"
DESCRIPTION = __doc__


def check_device(device: str) -> None:
    """--device names a device this machine has (ValueError otherwise, before any work)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"--device {device!r} is not a device name (e.g. cpu, cuda, cuda:1): {error}") from error
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device!r}: no CUDA GPU is available here; use --device cpu.")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"--device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}.")
    elif parsed.type != "cpu":
        try:
            torch.empty(0, device=parsed)
        except Exception as error:  # each backend raises its own type for a missing device
            raise ValueError(f"--device {device!r} is not usable here: {error}") from error


def _start_run(store: ChunkStore, out: pathlib.Path, overwrite: bool):
    """Rank 0: clear what a killed run left, open the chunk store; the finished chunk numbers,
    or the message of a refusal (sent to every rank)."""
    try:
        remove_stale_temporaries(out.parent, glob.escape(files.short_name(out.name)))
        if overwrite:
            store.remove()
        return store.open()
    except ValueError as error:
        if distributed.world()[1] == 1:
            raise
        return str(error)


def add_arguments(parser) -> None:
    parser.add_argument("input", help="a .txt (one text per line), .jsonl or .csv file")
    parser.add_argument("--preset", required=True, help="bge_m3, multilingual_e5_base, a sentence-transformers "
                        "directory, hf://owner/name, or any backbone preset")
    parser.add_argument("--out", required=True, help="output file: .npy, .jsonl or .parquet")
    parser.add_argument("--field", default="text", help="the text field (.jsonl) or column (.csv) (default: %(default)s)")
    parser.add_argument("--id-field", help="a field / column holding ids (default: the record number)")
    parser.add_argument("--batch-size", type=int, default=32, help="most texts per forward pass (default: %(default)s)")
    parser.add_argument("--max-tokens-per-batch", type=int, help="most tokens per forward pass")
    parser.add_argument("--prompt-name", help="a prompt of the model, e.g. query or passage")
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                        help="L2-normalize (default: as the model says)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="(default: %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help="texts per resumable chunk (default: %(default)s)")
    parser.add_argument("--dtype", help="model dtype, e.g. bfloat16 (default: the preset's)")
    parser.add_argument("--device", help="e.g. cpu or cuda (default: the preset's; cuda:LOCAL_RANK under torchrun)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT and any unfinished run")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read pickled files (transformers' pytorch_model.bin, FlagEmbedding's bge-m3 .pt heads)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    summary = embed_file(
        args.preset, args.input, args.out, field=args.field, id_field=args.id_field, batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch, prompt_name=args.prompt_name, normalize=args.normalize,
        precision=args.precision, chunk_size=args.chunk_size, dtype=args.dtype, device=args.device,
        overwrite=args.overwrite, show_progress_bar=not args.no_progress, allow_pickle=args.allow_pickle,
    )
    if summary is not None:
        resumed = f", {summary['resumed_chunks']} resumed" if summary["resumed_chunks"] else ""
        print(f"Wrote {summary['texts']} embeddings {tuple(summary['shape'])} to {summary['out']} "
              f"({summary['chunks']} chunks{resumed}, {summary['world_size']} process(es))")
    return 0
