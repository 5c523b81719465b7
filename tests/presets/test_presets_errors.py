"""Every error path of preset resolution and loading: each message names what was given,
what is allowed and the remedy; failed loads build nothing."""

import json
import shutil
import socket
import sys
import time

import h5py
import numpy as np
import pytest
import requests

import roberta_torch
from helpers.hub_caches import put_in_kagglehub_cache
from helpers.network import HangingServer
from helpers.keras_fixtures import preset_dir
from roberta_torch.presets import kaggle_download, sources
from roberta_torch.presets.preset import open_preset
from roberta_torch.presets.resolve import resolve_preset

WEIGHTS = "model.weights.h5"
QUERY_KERNEL = "layers/transformer_encoder/_self_attention_layer/query_dense/vars/0"


def copy_fixture(tmp_path, case="roberta_1layer"):
    directory = tmp_path / case
    shutil.copytree(preset_dir(case), directory)
    return directory


# -- resolution -------------------------------------------------------------------------------


def test_unknown_builtin_suggests_the_close_match_and_lists_forms():
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset("roberta_bse_en")
    message = str(info.value)
    assert "Unknown preset 'roberta_bse_en'" in message and "Did you mean 'roberta_base_en'?" in message
    for form in (
        "builtin name",
        "kaggle://<owner>/<model>/<framework>/<variation>[/<version>]",
        "hf://<owner>/<name>",
        "local preset directory",
    ):
        assert form in message


@pytest.mark.parametrize(
    "handle,expected",
    [
        ("kaggle://keras/roberta", "Expected kaggle://<owner>/<model>/<framework>/<variation>[/<version>]"),
        ("kaggle://keras/roberta/keras/roberta_base_en/latest", "the version must be a number"),
        ("kaggle://keras/roberta/keras/roberta_base_en/3/extra", "Expected kaggle://"),
        ("kaggle://keras//keras/roberta_base_en", "Expected kaggle://"),
        ("hf://roberta-base", "Expected hf://<owner>/<name>"),
        ("hf://FacebookAI/roberta-base/extra", "Expected hf://<owner>/<name>"),
        ("hf://FacebookAI/", "Expected hf://<owner>/<name>"),
    ],
)
def test_malformed_handles_show_the_expected_form(handle, expected):
    with pytest.raises(ValueError, match="Malformed") as info:
        resolve_preset(handle)
    assert expected in str(info.value)


def test_unknown_scheme_and_wrong_types():
    with pytest.raises(ValueError, match=r"(?s)Unknown preset scheme 's3://'.*Accepted preset forms"):
        resolve_preset("s3://bucket/preset")
    with pytest.raises(TypeError, match=r"`preset` must be a str or a path; got int"):
        resolve_preset(3)


def test_missing_directory_and_file_instead_of_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Preset directory '.*nope' does not exist"):
        roberta_torch.Backbone.from_preset(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        resolve_preset("./no/such/preset")
    config = preset_dir("roberta_1layer") / "config.json"
    with pytest.raises(ValueError, match=r"is a file; a local preset is the directory"):
        resolve_preset(str(config))


# -- missing, truncated, corrupt files ---------------------------------------------------------


def test_missing_config_names_file_and_directory(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=rf"config.json is missing from preset directory '{tmp_path}'"
    ):
        roberta_torch.Backbone.from_preset(str(tmp_path))


def test_missing_keras_weights_name_files_and_directory(tmp_path):
    directory = copy_fixture(tmp_path)
    (directory / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError) as info:
        roberta_torch.Backbone.from_preset(str(directory))
    assert (
        WEIGHTS in str(info.value)
        and "model.weights.json" in str(info.value)
        and str(directory) in str(info.value)
    )
    # No weights needed without load_weights.
    assert roberta_torch.Backbone.from_preset(str(directory), load_weights=False).num_layers == 1


def test_missing_and_unsafe_shards(tmp_path):
    directory = copy_fixture(tmp_path, "roberta_sharded")
    (directory / "model_00002.weights.h5").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"Shard model_00002.weights.h5 named by model.weights.json is missing"
    ):
        roberta_torch.Backbone.from_preset(str(directory))
    index = json.loads((directory / "model.weights.json").read_text())
    index["weight_map"]["/layers/layer_normalization/vars"] = "../model_00000.weights.h5"
    (directory / "model.weights.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"shards must be plain file names"):
        roberta_torch.Backbone.from_preset(str(directory))


def test_dataset_in_two_shards_is_refused(tmp_path):
    directory = copy_fixture(tmp_path, "roberta_sharded")
    with h5py.File(directory / "model_00000.weights.h5", "r") as f:
        data = f["layers/layer_normalization/vars/0"][()]
    with h5py.File(directory / "model_00004.weights.h5", "a") as f:
        f.create_dataset("layers/layer_normalization/vars/0", data=data)
    with pytest.raises(
        ValueError, match=r"appears in both model_00000.weights.h5 and model_00004.weights.h5"
    ):
        roberta_torch.Backbone.from_preset(str(directory))


@pytest.mark.parametrize("keep_bytes", [100, 4000, -1000])
def test_truncated_keras_weights_name_the_file(tmp_path, keep_bytes):
    directory = copy_fixture(tmp_path)
    data = (directory / WEIGHTS).read_bytes()
    (directory / WEIGHTS).write_bytes(data[:keep_bytes])
    with pytest.raises(ValueError, match=r"model.weights.h5") as info:
        roberta_torch.Backbone.from_preset(str(directory))
    assert "corrupt or truncated" in str(info.value)


def test_garbage_weights_and_invalid_json_name_the_file(tmp_path):
    directory = copy_fixture(tmp_path)
    (directory / WEIGHTS).write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(ValueError, match=rf"Cannot read Keras weights file {directory / WEIGHTS}"):
        roberta_torch.Backbone.from_preset(str(directory))
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"{directory / 'config.json'} is not valid JSON"):
        roberta_torch.Backbone.from_preset(str(directory))
    (directory / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match=r"is neither a Keras preset config"):
        roberta_torch.Backbone.from_preset(str(directory))


def test_truncated_and_missing_safetensors_name_the_file(tmp_path):
    model = roberta_torch.RobertaBackbone(
        vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=8
    )
    model.save_to_preset(tmp_path, format="safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) - 50])
    with pytest.raises(
        ValueError, match=r"Cannot read safetensors file .*model.safetensors: corrupt or truncated"
    ):
        roberta_torch.Backbone.from_preset(str(tmp_path))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"model.safetensors is missing from preset directory '{tmp_path}'"
    ):
        roberta_torch.Backbone.from_preset(str(tmp_path))


def test_transformers_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "roberta",
                "vocab_size": 10,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "hidden_size": 8,
                "intermediate_size": 8,
                "max_position_embeddings": 10,
                "layer_norm_eps": 1e-5,
                "pad_token_id": 1,
            }
        )
    )
    with pytest.raises(FileNotFoundError, match=rf"No transformers weights in directory '{tmp_path}'"):
        roberta_torch.Backbone.from_preset(str(tmp_path))


# -- strictness ---------------------------------------------------------------------------------


def test_misshaped_and_non_float_datasets_are_all_listed_and_nothing_is_built(tmp_path, monkeypatch):
    directory = copy_fixture(tmp_path)
    with h5py.File(directory / WEIGHTS, "a") as f:
        del f[QUERY_KERNEL]
        f.create_dataset(QUERY_KERNEL, data=np.zeros((8, 2, 3), "float32"))
        del f["layers/layer_normalization/vars/1"]
        f.create_dataset("layers/layer_normalization/vars/1", data=np.zeros(8, "int32"))
        del f["layers/token_and_position_embedding/position_embedding/vars/0"]
    calls = []
    monkeypatch.setattr(roberta_torch.RobertaBackbone, "load_state_dict", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset(str(directory))
    message = str(info.value)
    assert "3 problem(s)" in message and str(directory / WEIGHTS) in message
    assert f"{QUERY_KERNEL} (in model.weights.h5): shape (8, 2, 3) in the file, expected (8, 2, 4)" in message
    assert "layers/layer_normalization/vars/1 (in model.weights.h5): dtype int32 (not a float)" in message
    assert "position_embedding/vars/0: missing (expected shape (12, 8)" in message
    assert calls == []  # validation failed before any tensor was assigned


def _poison(path, kind):
    with h5py.File(path, "a") as f:
        if kind == "external link":
            f["layers/evil"] = h5py.ExternalLink("/etc/passwd", "/x")
        elif kind == "soft link":
            f["layers/evil"] = h5py.SoftLink("/layers/dropout")
        elif kind == "virtual dataset":
            layout = h5py.VirtualLayout(shape=(8,), dtype="f4")
            layout[:] = h5py.VirtualSource("/tmp/elsewhere.h5", "x", shape=(8,))
            del f["layers/layer_normalization/vars/1"]
            f.create_virtual_dataset("layers/layer_normalization/vars/1", layout)
        elif kind == "external storage":
            del f["layers/layer_normalization/vars/1"]
            f.create_dataset(
                "layers/layer_normalization/vars/1",
                shape=(8,),
                dtype="f4",
                external=[("/etc/hostname", 0, 32)],
            )


@pytest.mark.parametrize("kind", ["external link", "soft link", "virtual dataset", "external storage"])
def test_unsafe_hdf5_is_refused(tmp_path, kind):
    directory = copy_fixture(tmp_path)
    _poison(directory / WEIGHTS, kind)
    with pytest.raises(ValueError, match=r"Refusing unsafe HDF5 file .*model.weights.h5"):
        roberta_torch.Backbone.from_preset(str(directory))


# -- optional clients ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module,preset,package",
    [
        ("kagglehub", "kaggle://keras/roberta/keras/roberta_base_en/3", "pip install kagglehub"),
        ("huggingface_hub", "hf://FacebookAI/roberta-base", "pip install huggingface_hub"),
    ],
)
def test_missing_hub_client_is_named_only_when_used(monkeypatch, module, preset, package):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImportError, match=package):
        roberta_torch.Backbone.from_preset(preset)
    assert roberta_torch.Backbone.from_preset(str(preset_dir("roberta_1layer"))).num_layers == 1


def test_missing_h5py_is_named_only_for_keras_files(monkeypatch, tmp_path):
    model = roberta_torch.RobertaBackbone(
        vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=8
    )
    model.save_to_preset(tmp_path, format="safetensors")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"pip install h5py"):
        roberta_torch.Backbone.from_preset(str(preset_dir("roberta_1layer")))
    with pytest.raises(ImportError, match=r"pip install h5py"):
        model.save_to_preset(tmp_path / "keras")
    assert roberta_torch.Backbone.from_preset(str(tmp_path)).num_layers == 1


def test_missing_safetensors_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ImportError, match=r"pip install safetensors"):
        roberta_torch.RobertaBackbone(
            vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=8
        ).save_to_preset(tmp_path, format="safetensors")


# -- kagglehub offline and timeouts --------------------------------------------------------------

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def offline(monkeypatch):
    """No network for requests: every call goes to a proxy on a closed local port."""
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in _PROXY_VARIABLES:
        monkeypatch.setenv(name, f"http://127.0.0.1:{_closed_port()}")


@pytest.fixture
def direct_connections(monkeypatch):
    """requests talks to local test servers directly, whatever proxy the machine sets."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")


def test_unversioned_kaggle_handle_offline_says_to_pin_a_version(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    put_in_kagglehub_cache(tmp_path, "keras/roberta/keras/roberta_base_en/3", preset_dir("roberta_1layer"))
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset("kaggle://keras/roberta/keras/roberta_base_en")
    message = str(info.value)
    assert "without network access" in message and "Pin a version" in message
    assert "'kaggle://keras/roberta/keras/roberta_base_en/3'" in message  # the cached version
    # The pinned handle then loads from the cache.
    assert (
        roberta_torch.Backbone.from_preset("kaggle://keras/roberta/keras/roberta_base_en/3").num_layers == 1
    )


def test_kaggle_downloads_patch_nothing_in_this_process(tmp_path, monkeypatch, offline):
    """kagglehub's network calls run in a child process (the only place `requests` gets a
    default timeout): this process's `requests` is never patched."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    send = requests.adapters.HTTPAdapter.send
    with pytest.raises(ConnectionError):
        open_preset("kaggle://keras/roberta/keras/roberta_base_en/3")
    assert requests.adapters.HTTPAdapter.send is send


def test_kagglehub_api_call_to_a_hanging_server_times_out(tmp_path, monkeypatch, direct_connections):
    try:
        server = HangingServer(7777)  # kagglesdk's KAGGLE_API_ENVIRONMENT=TEST endpoint
    except OSError:
        pytest.skip("port 7777 is busy")
    try:
        monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
        monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
        monkeypatch.setattr(kaggle_download, "READ_TIMEOUT_S", 0.3)
        start = time.monotonic()
        with pytest.raises(ValueError, match=r"Pin a version") as info:
            open_preset("kaggle://keras/roberta/keras/roberta_base_en")
        assert "Timeout" in str(info.value)  # the child's requests timed out
        assert time.monotonic() - start < 20
    finally:
        server.close()


def test_hf_files_use_huggingface_hubs_own_timeout_and_offline_switch(monkeypatch, tmp_path):
    """One metadata request with huggingface_hub's HF_HUB_ETAG_TIMEOUT tells whether the hub
    answers; after a network error every file comes from the cache (local_files_only)."""
    import httpx2
    from huggingface_hub import constants

    calls = []

    class FakeHub:
        @staticmethod
        def hf_hub_url(repo_id, filename):
            return f"https://hub/{repo_id}/{filename}"

        @staticmethod
        def get_hf_file_metadata(url, **kwargs):
            calls.append(("metadata", kwargs))

        @staticmethod
        def hf_hub_download(repo_id, filename, **kwargs):
            calls.append((filename, kwargs))
            if filename == "b.json" and not kwargs["local_files_only"]:
                raise httpx2.ConnectError("down")
            path = tmp_path / "snapshots" / "0" / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            return str(path)

    monkeypatch.setattr(sources, "import_huggingface_hub", lambda: FakeHub)
    source = sources.HuggingFaceSource("hf://a/b", "a/b")
    assert source.fetch("a.json").name == "a.json"
    assert source.fetch("b.json") is None  # the network failed: not in the cache either
    assert source.fetch("c.json").name == "c.json"
    assert calls == [
        ("metadata", {"timeout": constants.HF_HUB_ETAG_TIMEOUT}),
        ("a.json", {"local_files_only": False}),
        ("b.json", {"local_files_only": False}),
        ("c.json", {"local_files_only": True}),
    ]
    assert "no network" in source.missing("b.json")


def test_pinned_kaggle_handle_not_cached_offline_is_a_connection_error(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    with pytest.raises(
        ConnectionError, match=r"Cannot download 'kaggle://keras/roberta/keras/roberta_base_en/3'"
    ):
        open_preset("roberta_base_en")


def test_package_handle_of_the_shipped_preset(monkeypatch):
    from roberta_torch.presets import registry

    handle = registry.BUILTIN_PRESETS["roberta_tiny_random"]["handle"]
    assert resolve_preset(handle).directory == registry.package_preset_dir(handle)
    with pytest.raises(FileNotFoundError, match=r"missing from this installation.*Reinstall roberta_torch"):
        resolve_preset(registry.PACKAGE_HANDLE_PREFIX + "assets/presets/no_such_preset")
    with pytest.raises(ValueError, match=r"points outside the roberta_torch package"):
        resolve_preset(registry.PACKAGE_HANDLE_PREFIX + "../../etc")
