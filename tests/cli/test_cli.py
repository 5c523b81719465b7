"""The command line: presets / info / convert, through main(argv) and `python -m`."""

import json
import os
import subprocess
import sys

import pytest
import torch

import roberta_torch
from helpers.keras_fixtures import batches, max_relative_error, preset_dir
from roberta_torch.cli import main
from roberta_torch.presets import registry

from helpers.paths import REPO_ROOT


def test_presets_table(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["preset", "class", "parameters", "handle"]
    for name in registry.builtin_preset_names():
        assert any(line.startswith(name + " ") for line in lines), name
    assert "124,052,736" in out and "kaggle://keras/xlm_roberta/keras/xlm_roberta_large_multi/3" in out


def test_info_of_a_sharded_keras_preset(capsys):
    assert main(["info", str(preset_dir("roberta_sharded"))]) == 0
    out = capsys.readouterr().out
    assert "format:     keras" in out and "class:      RobertaBackbone" in out
    assert "parameters: 1,600" in out and "model_00004.weights.h5" in out and "num_layers: 2" in out
    assert main(["info", "--json", str(preset_dir("xlm_roberta_2layer"))]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_name"] == "XLMRobertaBackbone" and report["format"] == "keras"
    assert (
        report["parameters"]
        == roberta_torch.Backbone.from_preset(str(preset_dir("xlm_roberta_2layer"))).num_parameters()
    )
    assert set(report["files"]) == {"config.json", "metadata.json", "model.weights.h5"}


@pytest.mark.parametrize("to", ["keras", "safetensors", "transformers"])
def test_convert_keras_preset(tmp_path, capsys, to):
    out_dir = tmp_path / "out"
    assert main(["convert", str(preset_dir("roberta_3layer_oddhead")), str(out_dir), "--to", to]) == 0
    assert f"as a {to} preset to {out_dir}" in capsys.readouterr().out
    model = roberta_torch.Backbone.from_preset(str(out_dir))
    worst = 0.0
    with torch.no_grad():
        for token_ids, mask, expected in batches("roberta_3layer_oddhead"):
            out = model({"token_ids": token_ids, "padding_mask": mask}).numpy()
            worst = max(worst, max_relative_error(out, expected, mask))
    assert worst < 1e-5


def test_convert_copies_a_keras_tokenizer_and_sets_dtype(tmp_path):
    source = tmp_path / "src"
    model = roberta_torch.RobertaBackbone(
        vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=8
    )
    model.save_to_preset(source)
    roberta_torch.Tokenizer.from_preset("roberta_tiny_random").save_to_preset(source)
    assert (
        main(["convert", str(source), str(tmp_path / "out"), "--to", "safetensors", "--dtype", "bfloat16"])
        == 0
    )
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    assert (tmp_path / "out" / "assets" / "tokenizer" / "vocabulary.json").is_file()
    converted = roberta_torch.Backbone.from_preset(str(tmp_path / "out"))
    assert converted.token_embedding.weight.dtype == torch.bfloat16


def test_convert_to_transformers_keeps_the_tokenizer(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    out_dir = tmp_path / "out"
    argv = ["convert", "roberta_tiny_random", str(out_dir), "--to", "transformers", "--max-shard-size", "20KB"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "as a transformers preset" in printed and "(+ RobertaTokenizer)" in printed
    names = {p.name for p in out_dir.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "vocab.json", "merges.txt"} <= names
    assert "model-00001-of-" in " ".join(sorted(names)) and not (out_dir / "assets").exists()
    hf_model = transformers.AutoModel.from_pretrained(out_dir).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    ours = roberta_torch.Backbone.from_preset("roberta_tiny_random")
    tokenizer = roberta_torch.Tokenizer.from_preset("roberta_tiny_random")
    assert hf_tokenizer.model_max_length == ours.max_sequence_length  # truncation=True fits the positions
    texts = ["The quick brown fox", "jumps"]
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["input_ids"][1, : len(tokenizer("jumps")) + 2].tolist() == [0] + tokenizer("jumps") + [2]
    with torch.no_grad():
        theirs = hf_model(**batch).last_hidden_state.numpy()
        mine = ours({"token_ids": batch["input_ids"], "padding_mask": batch["attention_mask"]}).numpy()
    assert max_relative_error(mine, theirs, batch["attention_mask"].numpy()) < 1e-5
    # The option belongs to --to transformers only, and is checked before anything is read.
    assert main(["convert", "roberta_tiny_random", str(tmp_path / "k"), "--to", "keras", "--max-shard-size", "1GB"]) == 1
    assert "--max-shard-size applies to --to transformers only" in capsys.readouterr().err
    assert main(["convert", "roberta_tiny_random", str(tmp_path / "k"), "--to", "transformers", "--max-shard-size", "x"]) == 1
    assert "max_shard_size" in capsys.readouterr().err and not (tmp_path / "k").exists()


def test_errors_exit_1_with_one_message(capsys):
    assert main(["info", "roberta_bse_en"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("roberta-torch info: error: Unknown preset 'roberta_bse_en'")
        and "roberta_base_en" in err
    )
    assert main(["convert", "kaggle://bad", "/tmp/x", "--to", "keras"]) == 1
    assert "Malformed Kaggle handle" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", str(preset_dir("roberta_1layer")), "/tmp/x", "--to", "onnx"])


def test_python_dash_m(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "roberta_torch", "presets"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "roberta_base_en" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "roberta_torch", "info", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1 and "does not exist" in done.stderr


def test_a_subcommand_registers_through_the_table(monkeypatch, capsys):
    """The documented hook (roberta_torch/cli/__init__.py): a module with HELP,
    add_arguments(parser) and run(args) -> int, named in SUBCOMMANDS."""
    import types

    import roberta_torch.cli as cli

    module = types.ModuleType("roberta_torch_test_hello")
    module.HELP = "say hello"
    module.add_arguments = lambda parser: parser.add_argument("--name", required=True)

    def run(args):
        if args.name == "bad":
            raise ValueError("no such\nname")
        print(f"hello {args.name}")
        return 0

    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "hello", module.__name__)
    assert main(["hello", "--name", "you"]) == 0
    assert capsys.readouterr().out == "hello you\n"
    assert main(["hello", "--name", "bad"]) == 1
    assert capsys.readouterr().err == "roberta-torch hello: error: no such name\n"
    assert "say hello" in cli.build_parser().format_help()
