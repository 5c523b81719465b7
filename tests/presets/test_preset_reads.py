"""Every preset file is read through `Preset.file`: the only place that fetches files on
demand and refuses names and links that leave the preset.

At run time: loading every component of every format in a fresh interpreter, every file of
a preset that is opened (Python's `open` audit event, h5py and safetensors, which open files
in C) was first returned by `Preset.file`. In the source: only the modules that read the
paths a Preset hands them open files at all."""

import ast
import json
import shutil

from helpers.paths import REPO_ROOT, TINY_PRESET, TOKENIZER_FIXTURES
from helpers.subprocesses import run_python
from helpers.task_fixtures import case_dir

PACKAGE = REPO_ROOT / "roberta_torch"

SPY_SCRIPT = r"""
import json, os, pathlib, sys
import h5py, safetensors, safetensors.torch
import roberta_torch
from roberta_torch.presets import preset as preset_module

roots = [pathlib.Path(p).resolve() for p in json.loads(sys.argv[1])]
served, opened = set(), set()


def record(path):
    try:
        path = pathlib.Path(os.fsdecode(path)).resolve()
    except (TypeError, ValueError, OSError):
        return
    if any(root == path or root in path.parents for root in roots):
        opened.add(str(path))


sys.addaudithook(lambda event, args: record(args[0]) if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) else None)
original_file = preset_module.Preset.file


def file(self, name, **kwargs):
    path = original_file(self, name, **kwargs)
    if path is not None:
        served.add(str(path.resolve()))
    return path


preset_module.Preset.file = file
original_h5 = h5py.File.__init__


def h5_init(self, name, *args, **kwargs):
    record(name)
    return original_h5(self, name, *args, **kwargs)


h5py.File.__init__ = h5_init
original_safe_open = safetensors.safe_open


def safe_open(path, *args, **kwargs):
    record(path)
    return original_safe_open(path, *args, **kwargs)


safetensors.safe_open = safetensors.torch.safe_open = safe_open

keras, keras_task, hf_task, native, st, tokenizer_only = json.loads(sys.argv[1])
for preset in (keras, native, hf_task, st):
    roberta_torch.Backbone.from_preset(preset)
    roberta_torch.Tokenizer.from_preset(preset)
    roberta_torch.Preprocessor.from_preset(preset)
    roberta_torch.TextEmbedder.from_preset(preset)
for preset in (keras_task, hf_task):
    roberta_torch.tasks.Task.from_preset(preset)
roberta_torch.CrossEncoder.from_preset(hf_task)  # its settings: PresetLoader.cross_encoder_config()
roberta_torch.RobertaTextClassifier.from_preset(keras, num_classes=2)
roberta_torch.Tokenizer.from_preset(tokenizer_only)
roberta_torch.Preprocessor.from_preset(tokenizer_only)
print(json.dumps({"opened": sorted(opened), "served": sorted(served)}))
"""


def _presets(tmp_path) -> list:
    hf_task = tmp_path / "hf_task"
    shutil.copytree(case_dir("transformers", "roberta_sequenceclassification"), hf_task)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER_FIXTURES / "roberta_whitespace_hf" / name, hf_task / name)
    st = tmp_path / "st"
    shutil.copytree(hf_task, st)
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12}))
    native = tmp_path / "native"
    import roberta_torch

    roberta_torch.Backbone.from_preset("roberta_tiny_random").save_to_preset(native, format="safetensors")
    roberta_torch.Tokenizer.from_preset("roberta_tiny_random").save_to_preset(native)
    tokenizer_only = tmp_path / "tokenizer_only"
    roberta_torch.Preprocessor.from_preset("roberta_tiny_random").save_to_preset(tokenizer_only)
    return [TINY_PRESET, case_dir("keras", "roberta_text_classifier"), hf_task, native, st, tokenizer_only]


def test_every_file_a_load_opens_came_from_preset_file(tmp_path):
    presets = [str(p) for p in _presets(tmp_path)]
    result = json.loads(run_python(SPY_SCRIPT, {}, json.dumps(presets), timeout=600).strip().splitlines()[-1])
    opened, served = set(result["opened"]), set(result["served"])
    # Every kind of file was opened: the spy sees them (the test can fail).
    for suffix in ("config.json", "model.weights.h5", "task.weights.h5", "model.safetensors", "vocab.json",
                   "vocabulary.json", "modules.json", "preprocessor.json"):
        assert any(path.endswith(suffix) for path in opened), suffix
    assert opened <= served, sorted(opened - served)


# -- the source ---------------------------------------------------------------------------------

# Calls that open, list or load files, and the modules allowed to make them: the preset
# readers (on paths Preset.file returned), the tokenizers (on the paths of their TokenizerSpec,
# which Preset.file returned, or on a user's own files), the embed CLI (the user's input and
# output files, not presets) and the kagglehub child's result file.
OPENING_CALLS = {"open", "read_text", "read_bytes", "safe_open", "load_file", "rglob", "glob", "iterdir",
                 "listdir", "scandir", "walk"}
# Calls opening files only on these modules (`tl.load`, `SourceTensor.load()` read no file).
MODULE_CALLS = {("torch", "load"), ("json", "load"), ("pickle", "load"), ("np", "load"), ("numpy", "load"),
                ("h5py", "File")}
ALLOWED = {
    "presets/files.py",  # read_json, read_safetensors, read_pickle, staged directories
    "presets/keras_format.py",  # h5py on the weight files Preset.file returned
    "presets/bge_m3_files.py",  # safetensors' load_file on a head Preset.file returned
    "presets/preset.py",  # Preset.local_files (the CLI's listing of fetched files)
    "presets/kaggle_download.py",  # the child's result file, kagglehub's cache listing
    "tokenizers/roberta_tokenizer.py",
    "tokenizers/xlm_roberta_tokenizer.py",
    "cli/embed.py",
    "cpu_choice.py",  # its own cache of CPU timings (not a preset)
    "cpu_features.py",  # /proc/cpuinfo
}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            receiver = getattr(function.value, "id", None) if isinstance(function, ast.Attribute) else None
            if name in OPENING_CALLS or (receiver, name) in MODULE_CALLS:
                yield node.lineno, name


def test_only_the_preset_readers_open_files():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if relative in ALLOWED:
            continue
        for line, name in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{relative}:{line} {name}(...)")
    assert offenders == []
