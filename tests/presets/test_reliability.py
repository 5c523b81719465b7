"""Reliability and security of preset I/O: writes that never follow links, hub loading that
never hangs (through the real huggingface_hub client, network unreachable), configs that
cannot exhaust memory, one-line CLI errors."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import roberta_torch
from helpers.hub_caches import put_in_hf_cache
from helpers.keras_fixtures import preset_dir
from helpers.network import HangingServer, closed_port
from helpers.paths import REPO_ROOT
from helpers.subprocesses import run_python

SMALL = dict(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=8)


def small_model():
    return roberta_torch.RobertaBackbone(**SMALL)


# -- writes stay inside the target directory ---------------------------------------------------


@pytest.mark.parametrize("format", ["keras", "safetensors"])
def test_planted_links_are_never_written_through(tmp_path, format):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("model.weights.h5", "model.weights.h5.tmp", "config.json.tmp", "model.safetensors", "config.json"):
        (out / name).symlink_to(victim)
    with pytest.raises(ValueError, match="not empty"):
        small_model().save_to_preset(out, format=format)
    small_model().save_to_preset(out, format=format, overwrite=True)  # replaces the directory
    assert victim.read_text() == "keep me"
    assert not any(p.is_symlink() for p in out.iterdir())
    assert roberta_torch.Backbone.from_preset(str(out)).num_layers == 1
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(ValueError, match="symbolic link"):
        small_model().save_to_preset(link, overwrite=True)


def test_empty_and_file_destinations_are_refused(tmp_path):
    with pytest.raises(ValueError, match="empty path"):
        small_model().save_to_preset("")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        small_model().save_to_preset(tmp_path / "file")


def test_interrupted_save_leaves_the_old_preset_whole(tmp_path, monkeypatch):
    out = tmp_path / "out"
    small_model().save_to_preset(out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    from roberta_torch.presets import keras_format

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_format, "keras_metadata", crash)  # after the weights, before the configs
    with pytest.raises(KeyboardInterrupt):
        small_model().save_to_preset(out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left behind


def test_cli_convert_refuses_links_and_non_empty_outputs(tmp_path, capsys):
    from roberta_torch.cli import main

    source = tmp_path / "src"
    shutil.copytree(preset_dir("roberta_1layer"), source)
    roberta_torch.Tokenizer.from_preset("roberta_tiny_random").save_to_preset(source)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (source / "assets" / "tokenizer" / "merges.txt").unlink()
    (source / "assets" / "tokenizer" / "merges.txt").symlink_to(secret)
    assert main(["convert", str(source), str(tmp_path / "out"), "--to", "keras"]) == 1
    assert "outside the preset" in capsys.readouterr().err
    (source / "assets" / "tokenizer" / "merges.txt").unlink()
    shutil.copy(roberta_torch.presets.registry.package_preset_dir(
        roberta_torch.presets.registry.BUILTIN_PRESETS["roberta_tiny_random"]["handle"]
    ) / "assets/tokenizer/merges.txt", source / "assets/tokenizer/merges.txt")

    other = tmp_path / "other"
    small_model().save_to_preset(other, format="safetensors")
    assert main(["convert", str(source), str(other), "--to", "keras"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert json.loads((other / "config.json").read_text())["format"] == "roberta_torch"  # untouched
    assert main(["convert", str(source), str(other), "--to", "keras", "--overwrite"]) == 0
    assert sorted(p.name for p in other.iterdir()) == [
        "assets", "config.json", "metadata.json", "model.weights.h5", "tokenizer.json"
    ]


# -- hub loading never hangs -------------------------------------------------------------------

HF_OFFLINE_SCRIPT = """
import json, sys, time
import roberta_torch
results = {}
start = time.monotonic()
model = roberta_torch.Backbone.from_preset("hf://someone/cached")
results["cached"] = [type(model).__name__, time.monotonic() - start]
start = time.monotonic()
try:
    roberta_torch.Backbone.from_preset("hf://someone/not-cached")
except FileNotFoundError as error:
    results["missing"] = [str(error), time.monotonic() - start]
print(json.dumps(results))
"""


@pytest.mark.parametrize("network", ["refused", "hanging"])
def test_cached_hf_preset_loads_in_seconds_without_network(tmp_path, network):
    put_in_hf_cache(tmp_path / "home", "someone/cached", preset_dir("roberta_1layer"))
    server = HangingServer() if network == "hanging" else None
    port = server.port if server else closed_port()
    env = {
        "HF_HOME": str(tmp_path / "home"),
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_ETAG_TIMEOUT": "1",  # huggingface_hub's own metadata timeout (default 10 s), shortened
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    try:
        start = time.monotonic()
        results = json.loads(run_python(HF_OFFLINE_SCRIPT, env, timeout=120).strip().splitlines()[-1])
        elapsed = time.monotonic() - start
    finally:
        if server:
            server.close()
    assert results["cached"][0] == "RobertaBackbone"
    # Every wait is bounded by huggingface_hub's (test-shortened) timeout: one metadata request
    # finds the hub unreachable, then every file comes from the cache.
    assert results["cached"][1] < 8 and results["missing"][1] < 8, results
    assert elapsed < 60
    message = results["missing"][0]
    assert "config.json" in message and "no network" in message and "not in the local huggingface_hub cache" in message


# -- configs that cannot exhaust memory ----------------------------------------------------------

HOSTILE_SCRIPT = """
import json, resource, sys, time
import roberta_torch
# Cap the address space 3 GiB above what the imports mapped (a CUDA build of torch maps far
# more virtual memory than a CPU build, so an absolute cap would fail the import itself).
mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + 3 * 2**30, mapped + 3 * 2**30))
start = time.monotonic()
try:
    roberta_torch.Backbone.from_preset(sys.argv[1], load_weights=sys.argv[2] == "1")
    outcome = "loaded"
except (ValueError, TypeError, FileNotFoundError) as error:
    outcome = type(error).__name__ + ": " + str(error)
print(json.dumps([outcome, time.monotonic() - start]))
"""


@pytest.mark.parametrize("num_layers", [20_000, 1_000_000])
@pytest.mark.parametrize("load_weights", [True, False])
def test_hostile_config_is_refused_fast_with_a_short_message(tmp_path, num_layers, load_weights):
    preset = tmp_path / "preset"
    shutil.copytree(preset_dir("roberta_1layer"), preset)
    config = json.loads((preset / "config.json").read_text())
    config["config"]["num_layers"] = num_layers
    config["config"]["hidden_dim"] = config["config"]["intermediate_dim"] = 4096 if not load_weights else config["config"]["hidden_dim"]
    (preset / "config.json").write_text(json.dumps(config))
    outcome, seconds = json.loads(
        run_python(HOSTILE_SCRIPT, {}, str(preset), "1" if load_weights else "0").strip().splitlines()[-1]
    )
    assert outcome.startswith("ValueError"), outcome
    assert seconds < 5 and len(outcome) < 2000
    expected = "do not belong together" if load_weights else "more than this machine's memory"
    assert expected in outcome


def test_error_messages_are_bounded(tmp_path):
    # A weights file with thousands of unexpected tensors: the message lists 20 and counts the rest.
    from safetensors.torch import save_file

    model = small_model()
    model.save_to_preset(tmp_path / "p", format="safetensors")
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"junk.{i}": torch.zeros(1) for i in range(3000)})
    save_file(tensors, str(tmp_path / "p" / "model.safetensors"))
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset(str(tmp_path / "p"))
    assert len(str(info.value)) < 4000 and "and 2980 more" in str(info.value)


def test_forged_h5_dataset_size_is_refused_before_allocation(tmp_path):
    import h5py

    preset = tmp_path / "preset"
    shutil.copytree(preset_dir("roberta_1layer"), preset)
    path = preset / "model.weights.h5"
    with h5py.File(path, "a") as f:
        name = "layers/token_and_position_embedding/token_embedding/vars/0"
        del f[name]
        f.create_dataset(name, shape=(2**20, 1024), dtype="float32")  # 4 GiB declared, never written
    assert path.stat().st_size < 10**6
    with pytest.raises(ValueError, match="declares .* bytes of data, more than the whole file"):
        roberta_torch.Backbone.from_preset(str(preset))


# -- flags, handles, shadowing -------------------------------------------------------------------


def test_flags_must_be_bools_and_long_handles_are_cut():
    with pytest.raises(TypeError, match="allow_pickle"):
        roberta_torch.Backbone.from_preset(str(preset_dir("roberta_1layer")), allow_pickle="false")
    with pytest.raises(TypeError, match="load_weights"):
        roberta_torch.Backbone.from_preset(str(preset_dir("roberta_1layer")), load_weights="no")
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset("x" * 1_000_000)
    assert len(str(info.value)) < 2000


def test_local_directory_named_like_a_builtin_is_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(preset_dir("roberta_1layer"), tmp_path / "roberta_tiny_random")
    with caplog.at_level("WARNING"):
        model = roberta_torch.Backbone.from_preset("roberta_tiny_random")
    assert model.hidden_dim == 32  # the builtin
    assert "also a local directory" in caplog.text and "./roberta_tiny_random" in caplog.text
    assert roberta_torch.Backbone.from_preset("./roberta_tiny_random").num_layers == 1


# -- CLI: one line and exit code 1 for every user error ------------------------------------------


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "roberta_torch", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_cli_user_errors_print_one_line(tmp_path):
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    cases = [
        ("info", str(nested)),
        # An unwritable place even for root (tests here may run as root, where chmod is moot).
        ("convert", str(preset_dir("roberta_1layer")), "/proc/roberta_torch_out", "--to", "safetensors"),
        ("info", str(tmp_path / "missing")),
    ]
    for args in cases:
        done = run_cli(*args)
        assert done.returncode == 1, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()  # log lines (INFO) may come first
        assert lines[-1].startswith(f"roberta-torch {args[0]}: error:"), done.stderr
        assert sum(line.startswith("roberta-torch") for line in lines) == 1, done.stderr
