"""Every path the tests need, defined once."""

import pathlib

TESTS_DIR = pathlib.Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
FIXTURES = TESTS_DIR / "fixtures"
TOKENIZER_FIXTURES = FIXTURES / "tokenizers"
KERAS_PRESETS = FIXTURES / "keras_presets"
KERAS_OUTPUTS = FIXTURES / "keras_outputs"
NATIVE_V1 = FIXTURES / "native_v1"  # a native preset written by format_version 1 (fused qkv)
TINY_PRESET = REPO_ROOT / "roberta_torch" / "assets" / "presets" / "roberta_tiny_random"
EXAMPLES = REPO_ROOT / "examples"
