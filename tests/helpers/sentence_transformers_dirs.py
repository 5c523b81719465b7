"""Directories written by the real sentence-transformers from tiny random transformers models.

Each directory is what `SentenceTransformer.save` writes (modules.json, 1_Pooling/, ...),
around a RobertaModel / XLMRobertaModel whose every tensor is random (LayerNorm and biases
included) and the committed tokenizer fixtures' vocabularies.
"""

from __future__ import annotations

import pathlib

from .paths import TOKENIZER_FIXTURES
from .random_weights import randomize_

TOKENIZERS = {"roberta": TOKENIZER_FIXTURES / "roberta_whitespace_hf", "xlm-roberta": TOKENIZER_FIXTURES / "xlm_roberta_hf"}
HIDDEN = 16
MAX_POSITIONS = 40  # usable positions; transformers keeps 2 more rows for RoBERTa's offset

# Texts with every edge the encoder must get right: empty, whitespace, longer than any
# max_seq_length used here, non-ASCII, repeated words (sparse max per id).
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "  leading and trailing spaces  ",
    "a",
    "Snow covered the village and the river froze over night after night after night. " * 4,
    "Ünïcödé, émojis 🙂 and 漢字 mixed in.",
    "dog dog dog cat dog",
    "Heavy rain is expected tomorrow in the north.",
]


def hf_model_dir(root: pathlib.Path, model_type: str = "roberta", seed: int = 0) -> pathlib.Path:
    """A transformers checkpoint with random weights and the fixture tokenizer, saved in `root`."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(TOKENIZERS[model_type]))
    config_cls = transformers.RobertaConfig if model_type == "roberta" else transformers.XLMRobertaConfig
    model_cls = transformers.RobertaModel if model_type == "roberta" else transformers.XLMRobertaModel
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=24, max_position_embeddings=MAX_POSITIONS + 2, pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=1, layer_norm_eps=1e-5, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    model = model_cls(config, add_pooling_layer=False)
    randomize_(model, seed=seed, scale=0.3, norm_scale=0.1)
    directory = root / f"hf_{model_type}_{seed}"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def sentence_transformers_dir(root: pathlib.Path, model_type: str = "roberta", pooling="mean", normalize: bool = False,
                              prompts: dict | None = None, include_prompt: bool = True, max_seq_length: int | None = 24,
                              default_prompt_name: str | None = None, seed: int = 0) -> pathlib.Path:
    """Save a SentenceTransformer (Transformer [+ Pooling] [+ Normalize]) and return its directory."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(hf_model_dir(root, model_type, seed)), max_seq_length=max_seq_length)
    modules = [transformer, Pooling(HIDDEN, pooling_mode=pooling, include_prompt=include_prompt)]
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default_prompt_name, device="cpu")
    name = "_".join([model_type, "-".join([pooling] if isinstance(pooling, str) else pooling),
                     "norm" if normalize else "raw", "prompt" if prompts else "noprompt", str(seed)])
    directory = root / name
    model.save(str(directory))
    return directory
