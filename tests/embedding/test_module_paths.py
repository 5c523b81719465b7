"""sentence-transformers module paths resolve inside the preset, through the preset reader
(issue 22, S1): `..`, absolute paths and linked folders leading outside are refused before
anything outside is read, and the error never quotes an outside file; also from a
huggingface_hub cache snapshot (whose links may point into its own blob store only)."""

import json
import shutil

import pytest

import roberta_torch
from helpers.hub_caches import put_in_hf_cache
from helpers.paths import TOKENIZER_FIXTURES
from helpers.subprocesses import run_python
from helpers.task_fixtures import case_dir

SECRET = "TOP-SECRET-CONTENT"


def _modules(transformer: str = "", pooling: str = "1_Pooling") -> list:
    return [
        {"idx": 0, "name": "0", "path": transformer, "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": pooling, "type": "sentence_transformers.models.Pooling"},
    ]


def st_dir(root, name="st"):
    """A minimal sentence-transformers directory (classic layout) around a transformers fixture."""
    directory = root / name
    shutil.copytree(case_dir("transformers", "roberta_sequenceclassification"), directory)
    for file in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER_FIXTURES / "roberta_whitespace_hf" / file, directory / file)
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (directory / "modules.json").write_text(json.dumps(_modules()))
    return directory


@pytest.fixture
def outside(tmp_path):
    """A folder outside the preset holding a valid-looking Pooling config and model."""
    folder = tmp_path / "outside"
    shutil.copytree(case_dir("transformers", "roberta_sequenceclassification"), folder)
    (folder / "config_secret.json").write_text(json.dumps({"pooling_mode_max_tokens": True, "note": SECRET}))
    (folder / "pooling").mkdir()
    (folder / "pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True, "note": SECRET}))
    return folder


def test_the_plain_directory_loads(tmp_path):
    embedder = roberta_torch.TextEmbedder.from_preset(str(st_dir(tmp_path)))
    assert embedder.config.pooling == ("mean",)


@pytest.mark.parametrize("field", ["pooling", "transformer"])
@pytest.mark.parametrize("path", ["../outside/pooling", "..", "1_Pooling/../../outside", "ABSOLUTE", "./1_Pooling"])
def test_paths_leaving_the_preset_are_refused(tmp_path, outside, field, path):
    directory = st_dir(tmp_path)
    path = str(outside / "pooling") if path == "ABSOLUTE" else path
    modules = _modules(pooling=path) if field == "pooling" else _modules(transformer=path)
    (directory / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="not a path inside the preset") as info:
        roberta_torch.TextEmbedder.from_preset(str(directory))
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("field", ["pooling", "transformer"])
def test_linked_folders_leading_outside_are_refused(tmp_path, outside, field):
    directory = st_dir(tmp_path)
    (directory / "linked").symlink_to(outside / "pooling" if field == "pooling" else outside)
    modules = _modules(pooling="linked") if field == "pooling" else _modules(transformer="linked")
    (directory / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="leads outside the preset") as info:
        roberta_torch.TextEmbedder.from_preset(str(directory))
    assert SECRET not in str(info.value)


def test_a_linked_folder_inside_the_preset_is_fine(tmp_path):
    directory = st_dir(tmp_path)
    (directory / "pooling_link").symlink_to(directory / "1_Pooling")
    (directory / "modules.json").write_text(json.dumps(_modules(pooling="pooling_link")))
    assert roberta_torch.TextEmbedder.from_preset(str(directory)).config.pooling == ("mean",)


HF_SCRIPT = """
import json, sys, roberta_torch
results = {}
for repo in sys.argv[1:]:
    try:
        roberta_torch.TextEmbedder.from_preset("hf://someone/" + repo)
        results[repo] = "loaded"
    except (ValueError, FileNotFoundError) as error:
        results[repo] = type(error).__name__ + ": " + str(error)
print(json.dumps(results))
"""


def test_hf_cache_snapshots_stay_inside_their_repository(tmp_path, outside):
    home = tmp_path / "home"
    good = st_dir(tmp_path, "good")
    put_in_hf_cache(home, "someone/good", good)
    dotted = st_dir(tmp_path, "dotted")
    (dotted / "modules.json").write_text(json.dumps(_modules(pooling="../../../../outside/pooling")))
    put_in_hf_cache(home, "someone/dotted", dotted)
    # A snapshot whose Pooling config links outside the repository's cache folder.
    snapshot = put_in_hf_cache(home, "someone/linked", st_dir(tmp_path, "linked"))
    (snapshot / "1_Pooling" / "config.json").unlink()
    (snapshot / "1_Pooling" / "config.json").symlink_to(outside / "pooling" / "config.json")
    out = run_python(HF_SCRIPT, {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}, "good", "dotted", "linked")
    results = json.loads(out.strip().splitlines()[-1])
    assert results["good"] == "loaded"
    assert results["dotted"].startswith("ValueError") and "not a path inside the preset" in results["dotted"]
    assert results["linked"].startswith("ValueError") and "leads outside the preset" in results["linked"]
    assert SECRET not in out
