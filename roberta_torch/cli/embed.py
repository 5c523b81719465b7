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
import json
import logging
import os
import pathlib
import shutil

import numpy as np

from ..presets import files
from ..embedding import distributed

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
        texts = path.read_text(encoding="utf-8").splitlines()
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
        with open(path, encoding="utf-8", newline="") as file:
            reader = csv.DictReader(file)
            columns = reader.fieldnames or []
            if field not in columns:
                raise ValueError(f"{str(path)!r} has no column {field!r} (--field); its columns: {columns}.")
            if id_field is not None and id_field not in columns:
                raise ValueError(f"{str(path)!r} has no column {id_field!r} (--id-field); its columns: {columns}.")
            records = [(f"row {number}", row) for number, row in enumerate(reader, start=2)]
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


# -- chunk store ----------------------------------------------------------------------------------


class ChunkStore:
    """Finished chunks of one run in `OUT.parts/`: chunk_000000.npy, ... and manifest.json."""

    def __init__(self, out: pathlib.Path, manifest: dict):
        self.directory = out.with_name(out.name + ".parts")
        self.manifest = manifest

    def open(self) -> list[int]:
        """Create or reuse the parts directory; return the finished chunk numbers."""
        path = self.directory / "manifest.json"
        if path.is_file():
            saved = files.read_json(path)
            if saved != self.manifest:
                changed = sorted(k for k in set(saved) | set(self.manifest) if saved.get(k) != self.manifest.get(k))
                raise ValueError(
                    f"{str(self.directory)!r} holds an unfinished run with other settings ({', '.join(changed)}); "
                    "rerun with the same arguments to resume it, or pass --overwrite to start over."
                )
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            files.write_json(path, self.manifest)
        return sorted(int(p.stem.split("_")[1]) for p in self.directory.glob("chunk_*.npy"))

    def path(self, number: int) -> pathlib.Path:
        return self.directory / f"chunk_{number:06d}.npy"

    def write(self, number: int, embeddings: np.ndarray) -> None:
        with files.atomic_output(self.path(number)) as temporary, open(temporary, "wb") as file:
            np.save(file, embeddings)
            file.flush()
            os.fsync(file.fileno())

    def load(self, number: int) -> np.ndarray:
        return np.load(self.path(number))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


# -- output ---------------------------------------------------------------------------------------


def _import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise ImportError("Writing .parquet needs the `pyarrow` package: pip install pyarrow (or write .npy / .jsonl).") from error
    return pyarrow


def check_output(out: pathlib.Path, overwrite: bool) -> str:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"--out {str(out)!r}: unknown format {suffix!r}; use one of {', '.join(OUTPUT_FORMATS)}.")
    if suffix == ".parquet":
        _import_pyarrow()
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
               on_chunk_written=None) -> dict:
    """Embed INPUT into OUT (see the module docstring); returns a summary dict (rank 0) or None.

    `on_chunk_written(number)` is called on rank 0 after each chunk file is safely written.
    """
    from ..embedding.batching import check_positive_int
    from ..embedding.text_embedder import TextEmbedder

    input, out = pathlib.Path(input), pathlib.Path(out)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}; got {precision!r}.")
    check_output(out, overwrite)
    texts, ids = read_texts(input, field, id_field)
    if not texts:
        raise ValueError(f"INPUT {str(input)!r} holds no texts.")
    rank, world_size, dist_device = distributed.init_from_environment()
    kwargs = {}
    if dtype:
        kwargs["dtype"] = dtype
    device = device or (str(dist_device) if dist_device is not None else None)
    if device:
        kwargs["device"] = device
    embedder = TextEmbedder.from_preset(preset, **kwargs)

    stat = input.stat()
    manifest = {
        "input": str(input.resolve()), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
        "preset": str(preset), "field": field, "id_field": id_field, "prompt_name": prompt_name,
        "normalize": normalize, "dtype": dtype, "chunk_size": chunk_size, "num_texts": len(texts),
        "embedding_dim": embedder.embedding_dim,
    }
    store = ChunkStore(out, manifest)
    if rank == 0 and overwrite:
        store.remove()
    distributed.barrier()
    done = distributed.broadcast_from_rank0(store.open() if rank == 0 else None)
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    summary = embed_file(
        args.preset, args.input, args.out, field=args.field, id_field=args.id_field, batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch, prompt_name=args.prompt_name, normalize=args.normalize,
        precision=args.precision, chunk_size=args.chunk_size, dtype=args.dtype, device=args.device,
        overwrite=args.overwrite, show_progress_bar=not args.no_progress,
    )
    if summary is not None:
        resumed = f", {summary['resumed_chunks']} resumed" if summary["resumed_chunks"] else ""
        print(f"Wrote {summary['texts']} embeddings {tuple(summary['shape'])} to {summary['out']} "
              f"({summary['chunks']} chunks{resumed}, {summary['world_size']} process(es))")
    return 0
