"""`roberta-torch embed`: every input and output format, resuming an interrupted run, refusals,
and 2 gloo processes under torch.distributed.run giving the one-process output."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import roberta_torch
from helpers.paths import REPO_ROOT
from helpers.sentence_transformers_dirs import TEXTS, sentence_transformers_dir
from roberta_torch.cli import main
from roberta_torch.cli.embed import embed_file

pytest.importorskip("sentence_transformers")  # writes the test directories

MORE_TEXTS = TEXTS + [f"line number {i} of the corpus, about topic {i % 3}" for i in range(13)]  # 21 texts


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return str(sentence_transformers_dir(tmp_path_factory.mktemp("st"), "xlm-roberta", pooling="mean", normalize=True,
                                         prompts={"query": "query: "}))


@pytest.fixture(scope="module")
def expected(preset):
    embedder = roberta_torch.TextEmbedder.from_preset(preset)
    return {None: embedder.encode(MORE_TEXTS), "query": embedder.encode(MORE_TEXTS, prompt_name="query")}


def write_input(path, texts):
    if path.suffix == ".txt":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"doc": f"d{i}", "body": t}) + "\n" for i, t in enumerate(texts)),
                        encoding="utf-8")
    else:
        import csv

        with open(path, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["doc", "body"])
            writer.writerows([f"d{i}", t] for i, t in enumerate(texts))
    return path


@pytest.mark.parametrize("input_suffix, out_suffix", [(".txt", ".npy"), (".jsonl", ".jsonl"), (".csv", ".npy"),
                                                      (".csv", ".jsonl")])
def test_formats(preset, expected, tmp_path, input_suffix, out_suffix, capsys):
    source = write_input(tmp_path / f"in{input_suffix}", MORE_TEXTS)
    out = tmp_path / f"out{out_suffix}"
    fields = [] if input_suffix == ".txt" else ["--field", "body", "--id-field", "doc"]
    assert main(["embed", "--preset", preset, str(source), "--out", str(out), "--chunk-size", "8", "--batch-size", "4",
                 "--prompt-name", "query", "--no-progress", *fields]) == 0
    assert "Wrote 21 embeddings (21, 16)" in capsys.readouterr().out
    if out_suffix == ".npy":
        actual = np.load(out)
    else:
        records = [json.loads(line) for line in out.read_text().splitlines()]
        ids = [r["id"] for r in records]
        assert ids == (list(range(21)) if input_suffix == ".txt" else [f"d{i}" for i in range(21)])
        actual = np.array([r["embedding"] for r in records], dtype=np.float32)
    assert actual.shape == (21, 16) and np.abs(actual - expected["query"]).max() <= 1e-6
    assert not (tmp_path / f"out{out_suffix}.parts").exists()


def test_parquet_needs_pyarrow_or_round_trips(preset, expected, tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", MORE_TEXTS)
    code = main(["embed", "--preset", preset, str(source), "--out", str(tmp_path / "out.parquet"), "--no-progress"])
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert code == 1 and "pip install pyarrow" in capsys.readouterr().err
        assert not (tmp_path / "out.parquet.parts").exists()  # refused before any work
        return
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert table["id"] == list(range(21))
    assert np.abs(np.array(table["embedding"], dtype=np.float32) - expected[None]).max() <= 1e-6


def test_interrupted_run_resumes_and_never_leaves_a_complete_looking_output(preset, expected, tmp_path):
    source = write_input(tmp_path / "in.txt", MORE_TEXTS)
    out = tmp_path / "out.npy"

    def stop_after_two(number):
        if number == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_file(preset, source, out, chunk_size=5, show_progress_bar=False, on_chunk_written=stop_after_two)
    assert not out.exists() and not list(tmp_path.glob(".out.npy*"))
    parts = sorted(p.name for p in (tmp_path / "out.npy.parts").iterdir())
    assert parts == ["chunk_000000.npy", "chunk_000001.npy", "manifest.json"]

    with pytest.raises(ValueError, match="other settings \\(chunk_size\\)"):
        embed_file(preset, source, out, chunk_size=7, show_progress_bar=False)

    written = []
    summary = embed_file(preset, source, out, chunk_size=5, show_progress_bar=False, on_chunk_written=written.append)
    assert written == [2, 3, 4] and summary["resumed_chunks"] == 2 and summary["chunks"] == 5
    assert np.abs(np.load(out) - expected[None]).max() <= 1e-6
    assert not (tmp_path / "out.npy.parts").exists()

    with pytest.raises(FileExistsError, match="--overwrite"):
        embed_file(preset, source, out, show_progress_bar=False)
    summary = embed_file(preset, source, out, precision="int8", overwrite=True, show_progress_bar=False)
    from sentence_transformers.util.quantization import quantize_embeddings

    assert np.array_equal(np.load(out), quantize_embeddings(expected[None], precision="int8"))


@pytest.mark.parametrize("name, content, args, words", [
    ("in.md", "x", [], "unknown format '.md'"),
    ("in.jsonl", '{"text": "a"}\n{"title": "b"}\n', [], "line 2: no string field 'text'"),
    ("in.jsonl", '{"text": "a"}\nnot json\n', [], "line 2 is not valid JSON"),
    ("in.csv", "title,body\nx,y\n", [], "no column 'text'"),
    ("in.txt", "a\nb\n", ["--out", "out.h5"], "unknown format '.h5'"),
    ("in.txt", "", [], "holds no texts"),
])
def test_refusals_print_one_error(preset, tmp_path, capsys, name, content, args, words):
    (tmp_path / name).write_text(content)
    out = tmp_path / (args[1] if args else "out.npy")
    assert main(["embed", "--preset", preset, str(tmp_path / name), "--out", str(out), "--no-progress"]) == 1
    assert words in capsys.readouterr().err


def test_torchrun_two_gloo_processes_equal_one(preset, expected, tmp_path):
    source = write_input(tmp_path / "in.jsonl", MORE_TEXTS)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
               "-m", "roberta_torch", "embed", "--preset", preset, str(source),
               "--out", str(tmp_path / "out.jsonl"), "--field", "body", "--id-field", "doc", "--chunk-size", "8",
               "--batch-size", "3", "--no-progress"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("Wrote 21 embeddings") == 1 and "2 process(es)" in done.stdout
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"d{i}" for i in range(21)]
    actual = np.array([r["embedding"] for r in records], dtype=np.float32)
    assert np.abs(actual - expected[None]).max() <= 1e-6
