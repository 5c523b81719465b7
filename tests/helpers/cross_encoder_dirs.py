"""Rerankers written by the real libraries from tiny random models: transformers
`*ForSequenceClassification` checkpoints and sentence-transformers CrossEncoder directories.

Every tensor is random (LayerNorm and biases included); tokenizers are the committed fixtures.
"""

from __future__ import annotations

import json
import pathlib

from .random_weights import randomize_
from .sentence_transformers_dirs import HIDDEN, MAX_POSITIONS, TOKENIZERS

# Pairs with every edge a reranker must get right: empty texts on either side, a document
# far over any max length used here, non-ASCII, equal texts, the same query many times.
QUERY = "how do plants grow?"
DOCUMENTS = [
    "Plants grow from seeds, using light, water and nutrients.",
    "",
    "The stock market fell sharply on Tuesday.",
    "Snow covered the village and the river froze over night after night after night. " * 6,
    "Ünïcödé, émojis 🙂 and 漢字 mixed in.",
    "how do plants grow?",
    "a",
    "Photosynthesis turns light into chemical energy in the leaves of green plants.",
]
PAIRS = [(QUERY, d) for d in DOCUMENTS] + [
    ("", "an empty query"),
    ("", ""),
    ("a long question that goes on and on about many things, " * 5, "short answer"),
    ("six words are in this one", "five words in this one"),
]


def classifier_dir(root: pathlib.Path, model_type: str = "roberta", num_labels: int = 1, seed: int = 0,
                   config_extra: dict | None = None) -> pathlib.Path:
    """A transformers (XLM)RobertaForSequenceClassification with the fixture tokenizer, saved in `root`;
    `config_extra` entries are written into its config.json afterwards."""
    import transformers

    # Real checkpoints record their usable length (512); without it sentence-transformers caps at
    # max_position_embeddings, 2 rows more than RoBERTa can use, and transformers fails there.
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(TOKENIZERS[model_type]), model_max_length=MAX_POSITIONS)
    roberta = model_type == "roberta"
    config_cls = transformers.RobertaConfig if roberta else transformers.XLMRobertaConfig
    model_cls = transformers.RobertaForSequenceClassification if roberta else transformers.XLMRobertaForSequenceClassification
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=24, max_position_embeddings=MAX_POSITIONS + 2, pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=1, layer_norm_eps=1e-5, num_labels=num_labels,
    )
    model = model_cls(config)
    randomize_(model, seed=seed, scale=0.3, norm_scale=0.1)
    directory = root / f"classifier_{model_type}_{num_labels}_{seed}"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if config_extra:
        path = directory / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config_extra}, indent=2))
    return directory


def cross_encoder_dir(root: pathlib.Path, model_type: str = "roberta", num_labels: int = 1, activation_fn=None,
                      max_length: int | None = None, prompts: dict | None = None,
                      default_prompt_name: str | None = None, seed: int = 0) -> pathlib.Path:
    """What `sentence_transformers.CrossEncoder(...).save(directory)` writes, around a random classifier."""
    from sentence_transformers import CrossEncoder

    source = classifier_dir(root, model_type, num_labels, seed)
    model = CrossEncoder(str(source), device="cpu", max_length=max_length, activation_fn=activation_fn,
                         prompts=prompts, default_prompt_name=default_prompt_name)
    name = activation_fn.__class__.__name__ if activation_fn is not None else "default"
    directory = root / f"cross_encoder_{model_type}_{num_labels}_{name}_{max_length}_{seed}"
    model.save(str(directory))
    return directory
