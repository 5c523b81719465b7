"""`roberta-torch embed`: every input and output format, resuming an interrupted run, refusals,
and 2 gloo processes under torch.distributed.run giving the one-process output."""

import json
import os
import shutil
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


def run_main(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_txt_lines_split_on_newlines_only(preset, tmp_path, capsys):
    """Before: str.splitlines also split on U+2028, U+0085, form feeds and a lone \\r (issue 22 W4)."""
    lines = ["first \u2028 still first", "second\x85same\x0cline", "third\rwith a lone CR", "", "fifth"]
    source = tmp_path / "in.txt"
    source.write_bytes(("\r\n".join(lines[:2]) + "\n" + "\n".join(lines[2:]) + "\n").encode("utf-8"))
    out = tmp_path / "out.jsonl"
    code, _, err = run_main(["embed", "--preset", preset, str(source), "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [0, 1, 2, 3, 4]
    expected = roberta_torch.TextEmbedder.from_preset(preset).encode(lines)
    assert np.abs(np.array([r["embedding"] for r in records], dtype=np.float32) - expected).max() <= 1e-6


def test_a_csv_field_over_128_kib_is_embedded(preset, tmp_path, capsys):
    """Before: csv's default field limit raised _csv.Error with a traceback (issue 22 B3)."""
    import csv

    long_text = "the river froze over night after night " * 5000  # 195 KB
    source = tmp_path / "in.csv"
    with open(source, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows([["text"], [long_text], ["short"]])
    out = tmp_path / "out.npy"
    code, _, err = run_main(["embed", "--preset", preset, str(source), "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    expected = roberta_torch.TextEmbedder.from_preset(preset).encode([long_text, "short"])
    assert np.abs(np.load(out) - expected).max() <= 1e-6
    assert csv.field_size_limit() == 131072  # the process-wide limit is restored


def test_environment_and_config_errors_print_one_line(preset, tmp_path, capsys):
    """Before: tracebacks (AssertionError from torch.cuda, OverflowError) (issue 22 B3)."""
    import torch

    source = write_input(tmp_path / "in.txt", ["a", "b"])
    out = tmp_path / "out.npy"
    if torch.cuda.device_count() <= 7:
        code, _, err = run_main(["embed", "--preset", preset, str(source), "--out", str(out), "--device", "cuda:7"],
                                capsys)
        assert code == 1 and err.count("\n") == 1 and "--device 'cuda:7'" in err
    code, _, err = run_main(["embed", "--preset", preset, str(source), "--out", str(out), "--device", "gpu"], capsys)
    assert code == 1 and err.count("\n") == 1 and "not a device name" in err
    for value in ("Infinity", "NaN"):
        broken = tmp_path / f"broken_{value}"
        shutil.copytree(preset, broken)
        config = json.loads((broken / "sentence_bert_config.json").read_text())
        config["max_seq_length"] = float(value.lower().replace("infinity", "inf"))
        (broken / "sentence_bert_config.json").write_text(json.dumps(config))
        code, _, err = run_main(["embed", "--preset", str(broken), str(source), "--out", str(out), "--no-progress"],
                                capsys)
        assert code == 1 and err.count("\n") == 1, err
        assert f"max_seq_length {config['max_seq_length']!r}" in err and str(broken) in err
    assert not out.exists()


def test_out_equal_to_the_input_is_refused(preset, tmp_path, capsys):
    """Before: with --overwrite the input was replaced by its embeddings (issue 22 D3)."""
    source = write_input(tmp_path / "in.jsonl", MORE_TEXTS[:3])
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.jsonl").symlink_to(source)
    os.link(source, tmp_path / "hard.jsonl")
    for spelling in (source, tmp_path / "sub" / ".." / "in.jsonl", tmp_path / "link.jsonl", tmp_path / "hard.jsonl"):
        code, _, err = run_main(["embed", "--preset", preset, str(source), "--out", str(spelling), "--field", "body",
                                 "--overwrite", "--no-progress"], capsys)
        assert code == 1 and "is the input file" in err, (spelling, err)
    assert source.read_bytes() == before and not list(tmp_path.glob("*.parts"))


def test_a_linked_parts_directory_is_refused(preset, tmp_path, capsys):
    """Before: the manifest and chunks were written into the link's target, and --overwrite
    resumed from it (issue 22 S2)."""
    source = write_input(tmp_path / "in.txt", MORE_TEXTS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not ours")
    (tmp_path / "out.npy.parts").symlink_to(elsewhere, target_is_directory=True)
    for extra in ([], ["--overwrite"]):
        code, _, err = run_main(["embed", "--preset", preset, str(source), "--out", str(tmp_path / "out.npy"),
                                 "--no-progress", *extra], capsys)
        assert code == 1 and "symbolic link" in err and err.count("\n") == 1, err
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"] and not (tmp_path / "out.npy").exists()
    (tmp_path / "out.npy.parts").unlink()
    (tmp_path / "out.npy.parts").mkdir()
    (tmp_path / "out.npy.parts" / "chunk_000000.npy").symlink_to(elsewhere / "keep.txt")
    with pytest.raises(ValueError, match="symbolic link"):
        embed_file(preset, source, tmp_path / "out.npy", show_progress_bar=False)


def test_resuming_with_a_changed_model_is_refused(preset, expected, tmp_path):
    """Before: a changed model at the same --preset resumed, mixing two models (issue 22 W3)."""
    import safetensors.torch

    model_dir = tmp_path / "model"
    shutil.copytree(preset, model_dir)
    source = write_input(tmp_path / "in.txt", MORE_TEXTS)
    out = tmp_path / "out.npy"

    def stop(number):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_file(str(model_dir), source, out, chunk_size=5, show_progress_bar=False, on_chunk_written=stop)
    weights = safetensors.torch.load_file(model_dir / "model.safetensors")
    weights = {k: v * 1.5 if v.is_floating_point() else v for k, v in weights.items()}
    safetensors.torch.save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="another model.*--overwrite"):
        embed_file(str(model_dir), source, out, chunk_size=5, show_progress_bar=False)
    summary = embed_file(str(model_dir), source, out, chunk_size=5, show_progress_bar=False, overwrite=True)
    assert summary["resumed_chunks"] == 0
    changed = roberta_torch.TextEmbedder.from_preset(str(model_dir)).encode(MORE_TEXTS)
    assert np.abs(np.load(out) - changed).max() <= 1e-6 and np.abs(changed - expected[None]).max() > 1e-3


def test_temporaries_of_a_killed_run_are_removed(preset, expected, tmp_path):
    """Before: a '.tmp' from a killed assembly (or chunk write) stayed forever (issue 22 B5)."""
    source = write_input(tmp_path / "in.txt", MORE_TEXTS)
    out = tmp_path / "out.npy"

    def stop(number):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_file(preset, source, out, chunk_size=5, show_progress_bar=False, on_chunk_written=stop)
    # What SIGKILL leaves inside presets.files.atomic_output: the temporaries, never renamed.
    stale = [tmp_path / ".out.npy.k1ll3d00.tmp", tmp_path / "out.npy.parts" / ".chunk_000001.npy.k1ll3d00.tmp"]
    for path in stale:
        path.write_bytes(b"\x93NUMPY partial")
    unrelated = tmp_path / ".other.npy.k1ll3d00.tmp"
    unrelated.write_bytes(b"")
    summary = embed_file(preset, source, out, chunk_size=5, show_progress_bar=False)
    assert summary["resumed_chunks"] == 1 and np.abs(np.load(out) - expected[None]).max() <= 1e-6
    assert not any(path.exists() for path in stale) and unrelated.exists()
