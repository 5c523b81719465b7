"""Export round trips: torch -> Keras preset -> the real keras_hub (same outputs, same file
tree) and -> torch (identical tensors); Keras fixture -> torch -> Keras (identical
datasets); torch -> safetensors export -> torch."""

import json
import os

import h5py
import numpy as np
import pytest
import torch

import roberta_torch
from helpers.keras_fixtures import preset_dir
from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, XLMRobertaBackbone

CONFIG = dict(
    vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=10
)


def random_model(cls=RobertaBackbone, seed=0, **overrides):
    return randomize_(cls(**{**CONFIG, **overrides}), seed, scale=0.5, norm_scale=0.5).eval()


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, CONFIG["vocabulary_size"], size=(3, 10)).astype("int32")
    mask = np.ones((3, 10), dtype="int32")
    mask[1, 4:] = 0
    mask[2, 7:] = 0
    return token_ids, mask


def h5_tree(path):
    """path -> (kind, shape, dtype, attrs) for every object of an .h5 file."""
    tree = {}

    def visit(name, obj):
        shape = getattr(obj, "shape", None)
        dtype = str(obj.dtype) if shape is not None else None
        tree[name] = (type(obj).__name__, shape, dtype, dict(obj.attrs))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return tree


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("cls", [RobertaBackbone, XLMRobertaBackbone])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_keras_export_round_trip_to_torch_is_exact(tmp_path, cls, dtype):
    model = random_model(cls, dtype=dtype)
    model.save_to_preset(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "metadata.json", "model.weights.h5"]
    loaded = roberta_torch.Backbone.from_preset(str(tmp_path), dtype=dtype)
    assert type(loaded) is cls and loaded.get_config() == model.get_config()
    assert_same_state(model, loaded)
    # As keras_hub: the stored policy is not applied; without `dtype=` the model is float32.
    default = roberta_torch.Backbone.from_preset(str(tmp_path))
    assert default.dtype_policy.name == "float32"
    for key, value in model.state_dict().items():
        assert torch.equal(default.state_dict()[key], value.float()), key
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["parameter_count"] == model.num_parameters()


@pytest.mark.parametrize("case", ["roberta_3layer_oddhead", "roberta_sharded"])
def test_keras_fixture_resaved_has_identical_datasets(tmp_path, case):
    """keras-hub's file -> torch -> our file: same datasets, bit for bit, same config."""
    model = roberta_torch.Backbone.from_preset(str(preset_dir(case)))
    model.save_to_preset(tmp_path)
    original = {}
    for path in sorted(preset_dir(case).glob("*.h5")):
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, o: original.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    with h5py.File(tmp_path / "model.weights.h5", "r") as f:
        ours = {}
        f.visititems(lambda n, o: ours.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    assert sorted(ours) == sorted(original)
    for name in original:
        assert ours[name].dtype == original[name].dtype and np.array_equal(ours[name], original[name]), name
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        (preset_dir(case) / "config.json").read_text()
    )


def test_safetensors_export_round_trip(tmp_path):
    model = random_model(XLMRobertaBackbone, dtype="float16", dropout=0.0)
    model.save_to_preset(tmp_path, format="safetensors")
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    loaded = roberta_torch.Backbone.from_preset(str(tmp_path))
    assert type(loaded) is XLMRobertaBackbone and loaded.get_config() == model.get_config()
    assert_same_state(model, loaded)
    # kwargs still override an exported config.
    assert (
        roberta_torch.Backbone.from_preset(str(tmp_path), dtype="float32").token_embedding.weight.dtype
        == torch.float32
    )


def test_save_preset_argument_errors(tmp_path):
    from roberta_torch.presets.saving import save_preset

    model = random_model()
    with pytest.raises(ValueError, match=r"`format`='onnx' is not supported; use one of keras, safetensors"):
        model.save_to_preset(tmp_path, format="onnx")
    with pytest.raises(TypeError, match=r"`model` must be a roberta_torch RobertaBackbone"):
        save_preset(torch.nn.Linear(2, 2), tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"is a file"):
        model.save_to_preset(tmp_path / "file")


# -- the real keras_hub ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_hub():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    if keras.config.backend() != "torch":
        pytest.skip("these checks run keras on the torch backend")
    return keras_hub


def keras_output(keras_model, token_ids, mask):
    out = keras_model({"token_ids": token_ids, "padding_mask": mask}, training=False)
    out = out.detach().cpu() if hasattr(out, "detach") else out
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("cls", [RobertaBackbone, XLMRobertaBackbone])
def test_keras_hub_loads_our_export_with_the_same_outputs(tmp_path, keras_hub, cls):
    model = random_model(cls, num_heads=2)
    model.save_to_preset(tmp_path)
    keras_model = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert type(keras_model).__name__ == cls.keras_class_name
    token_ids, mask = inputs()
    with torch.no_grad():
        ours = model({"token_ids": token_ids, "padding_mask": mask}).numpy()
    theirs = keras_output(keras_model, token_ids, mask)
    valid = mask.astype(bool)
    error = np.abs(ours[valid] - theirs[valid]).max() / np.abs(theirs[valid]).max()
    assert error < 1e-5


def test_our_file_tree_equals_keras_hubs(tmp_path, keras_hub):
    """Same groups, datasets, shapes, dtypes and `name` attributes as keras_hub writes
    (except the auto-numbered softmax/dropout names, which depend on the Keras session)."""
    model = random_model(XLMRobertaBackbone, num_layers=3)
    model.save_to_preset(tmp_path / "ours")
    keras_model = keras_hub.models.XLMRobertaBackbone(**{**CONFIG, "num_layers": 3})
    keras_model.save_to_preset(str(tmp_path / "theirs"))
    ours, theirs = h5_tree(tmp_path / "ours" / "model.weights.h5"), h5_tree(
        tmp_path / "theirs" / "model.weights.h5"
    )
    assert sorted(ours) == sorted(theirs)
    auto_named = ("/_softmax/vars", "/_dropout_layer/vars")
    for name in theirs:
        if name.endswith(auto_named):
            assert ours[name][3]["name"].split("_")[0] == theirs[name][3]["name"].split("_")[0]
            continue
        assert ours[name] == theirs[name], name
    assert json.loads((tmp_path / "ours" / "config.json").read_text()) == json.loads(
        (tmp_path / "theirs" / "config.json").read_text()
    )
    ours_meta = json.loads((tmp_path / "ours" / "metadata.json").read_text())
    theirs_meta = json.loads((tmp_path / "theirs" / "metadata.json").read_text())
    assert set(ours_meta) == set(theirs_meta)
    assert ours_meta["tasks"] == theirs_meta["tasks"]
    assert ours_meta["parameter_count"] == theirs_meta["parameter_count"]


def test_keras_hub_loads_a_bfloat16_export(tmp_path, keras_hub):
    model = random_model(dtype="bfloat16")
    model.save_to_preset(tmp_path / "ours")
    keras_model = keras_hub.models.Backbone.from_preset(str(tmp_path / "ours"), dtype="bfloat16")
    assert keras_model.dtype_policy.name == "bfloat16"
    theirs = keras_model.token_embedding.embeddings
    theirs = theirs.value if hasattr(theirs, "value") else theirs
    assert torch.equal(torch.as_tensor(theirs.detach().cpu()), model.token_embedding.weight.detach())
    # Stored the way Keras stores bfloat16: 2-byte opaque data tagged dtype=bfloat16.
    keras_model.save_to_preset(str(tmp_path / "theirs"))
    ours, theirs = h5_tree(tmp_path / "ours" / "model.weights.h5"), h5_tree(
        tmp_path / "theirs" / "model.weights.h5"
    )
    name = "layers/token_and_position_embedding/token_embedding/vars/0"
    assert ours[name] == theirs[name] == ("Dataset", (50, 8), "|V2", {"dtype": "bfloat16"})
