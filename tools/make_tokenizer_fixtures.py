"""Regenerate the tokenizer / preprocessor reference fixtures in tests/fixtures/tokenizers/.

Run from the repository root (after tools/make_tiny_preset.py, whose vocabulary it uses):

    KERAS_BACKEND=torch python tools/make_tokenizer_fixtures.py

It runs the REAL keras_hub tokenizers and preprocessors (and transformers' tokenizers,
as a second reference) on `TRICKY_STRINGS` and writes what they return:

  roberta_whitespace/        keras_hub RobertaTokenizer.save_to_preset (tokenizer.json,
                             assets/tokenizer/vocabulary.json + merges.txt): a byte-level BPE
                             vocabulary trained with `tokenizers` on the shipped text plus
                             whitespace-heavy lines, so that merges such as "Ġ Ġ" and "Ċ Ċ"
                             exist (the shipped tiny preset has none)
  roberta_whitespace_hf/     the same vocabulary as a transformers repository: vocab.json,
                             merges.txt (with its "#version" header), tokenizer.json written by
                             transformers' RobertaTokenizer.save_pretrained, config.json
  xlm_roberta/               keras_hub XLMRobertaTokenizer.save_to_preset (tokenizer.json,
                             assets/tokenizer/vocabulary.spm): a unigram sentencepiece model
                             trained with `sentencepiece` (XLM-R's <unk>=0 <s>=1 </s>=2 layout,
                             nmt_nfkc normalization) on the shipped text plus a few sentences
                             in other scripts, as keras_hub's own tests do
  xlm_roberta_hf/            transformers' XLMRobertaTokenizer.save_pretrained of that model
                             (tokenizer.json only) and a config.json
  expected_tokenizers.json   per vocabulary: ids from keras_hub's default (Python) path, from
                             its tf.data path, from transformers; keras_hub's detokenization;
                             special ids, vocabulary size and sample vocabulary entries
  expected_preprocessors.json  keras_hub Roberta/XLMRobertaTextClassifierPreprocessor outputs

See tests/fixtures/tokenizers/README.md for what the tests assert.
"""

import os

# keras picks its backend once, at first import: set it before importing keras.
os.environ["KERAS_BACKEND"] = "torch"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "tokenizers"
TINY_PRESET_DIR = REPO_ROOT / "roberta_torch" / "assets" / "presets" / "roberta_tiny_random"

TRICKY_STRINGS = [
    "",
    " ",
    "   ",
    "a",
    "Hello world!",
    " leading space",
    "   leading spaces",
    "trailing space ",
    "trailing spaces  ",
    "multiple   spaces  inside",
    "new\nline",
    "two\n\nnewlines and three\n\n\nnewlines",
    "\n",
    "trailing newline\n",
    "ab\n \nc",
    "x  \n y",
    "tabs\tand\t\ttabs",
    "windows\r\nline end",
    "It's I'M we'll DON'T they've",
    "'quoted' and \"double quoted\" words, 's 's",
    "numbers 1234567 3.14159 2024-06-11 50%",
    "café naïve résumé façade",
    "日本語のテキストと中文",
    "Ελληνικά και русский текст",
    "emoji 😀 👍🏽 👨‍👩‍👧 🇫🇷",
    "non\u00a0breaking\u00a0spaces",
    "ideographic\u3000space and thin\u2009space",
    "zero\u200bwidth joiner",
    "combining e\u0301 and precomposed é",
    "ligature ﬁ and full-width Ｈｅｌｌｏ １２３",
    "<s> special </s> <mask> <pad> <unk>",
    "a<mask>b<s>c",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 4,
    "!!! ??? ... --- ***",
    "https://example.com/path?query=1&x=y email@example.com",
    "C++ & Python: foo(bar)[0] = {'k': v};",
    "ALL CAPS SHOUTING",
    "The quick brown fox jumps over the lazy dog.",
]

# Extra training lines for the whitespace vocabulary (runs of spaces, newlines, tabs).
WHITESPACE_LINES = [
    "line one\nline two\n\nline three\n\n\nend of block",
    "a  b   c    d     e",
    "indented\n    code block\n        deeper\n",
    "tab\tseparated\t\tvalues\n",
    "windows\r\nline\r\nendings\r\n",
    "sentence one.  Sentence two.   Sentence three.",
]

# Short sentences in other scripts for the sentencepiece model (written for this project).
MULTILINGUAL_LINES = [
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "Nous allons au marché demain matin avec nos amis.",
    "Die Straßenbahn fährt heute früher als gewöhnlich.",
    "Ich trinke jeden Morgen einen Kaffee mit Milch.",
    "¿Dónde está la estación de tren más cercana?",
    "Mañana vamos a la playa si hace buen tiempo.",
    "Сегодня хорошая погода, и мы идём гулять в парк.",
    "Книга лежит на столе рядом с окном.",
    "今日は天気がいいので、公園を散歩します。",
    "我们明天早上在图书馆见面。",
    "الكتاب على الطاولة بجانب النافذة.",
    "मैं हर सुबह चाय पीता हूँ।",
    "Η θάλασσα είναι ήρεμη σήμερα.",
    "저는 주말에 친구들과 영화를 봅니다.",
]

# Ordinary text for the preprocessor cases (keras_hub's two tokenizer paths agree on it).
PREPROCESSOR_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A river does not hurry, yet it always reaches the sea.",
    "Bread needs only flour, water, salt and time.",
    "Hi.",
]
PREPROCESSOR_PAIRS = [
    "Is the fox quick?",
    "Where does the river go? It carves valleys, feeds forests and carries sand to the beach.",
    "Yes.",
    "Which ingredients make bread rise slowly in a warm kitchen?",
]


def load_tiny_preset_module():
    spec = importlib.util.spec_from_file_location("make_tiny_preset", REPO_ROOT / "tools" / "make_tiny_preset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_whitespace_bpe(paragraphs):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=799,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(paragraphs + WHITESPACE_LINES * 20, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocabulary = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    vocabulary["<mask>"] = len(vocabulary)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    for required in ("Ġ Ġ", "Ċ Ċ"):
        if required not in merges:
            raise RuntimeError(f"whitespace vocabulary lacks the merge {required!r}")
    return vocabulary, merges


def train_sentencepiece(paragraphs) -> bytes:
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(paragraphs + MULTILINGUAL_LINES * 3),
        model_writer=model,
        vocab_size=400,
        model_type="unigram",
        # XLM-R's sentencepiece layout; fairseq then remaps these ids.
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def as_list(ids):
    return [int(i) for i in np.asarray(ids).reshape(-1)]


def record_tokenizer(keras_python, keras_tf, transformers_tokenizer, strings):
    """Ids of every string from the three references, and keras_hub's detokenization."""
    result = {"keras_python": [], "keras_tf": [], "transformers": [], "keras_detokenized": []}
    for text in strings:
        python_ids = as_list(keras_python(text))
        result["keras_python"].append(python_ids)
        result["keras_tf"].append(as_list(keras_tf(text)))
        result["transformers"].append(transformers_tokenizer(text, add_special_tokens=False)["input_ids"])
        result["keras_detokenized"].append(str(keras_python.detokenize(result["keras_tf"][-1])))
    batch = [as_list(row) for row in keras_python(strings)]
    if batch != result["keras_python"]:
        raise RuntimeError("keras_hub's batched and per-string ids differ")
    return result


def vocabulary_facts(tokenizer, sample_ids, sample_tokens):
    return {
        "vocabulary_size": int(tokenizer.vocabulary_size()),
        "start_token_id": int(tokenizer.start_token_id),
        "end_token_id": int(tokenizer.end_token_id),
        "pad_token_id": int(tokenizer.pad_token_id),
        "mask_token_id": int(tokenizer.mask_token_id),
        "id_to_token": {str(i): tokenizer.id_to_token(i) for i in sample_ids},
        "token_to_id": {t: int(tokenizer.token_to_id(t)) for t in sample_tokens},
    }


def write_transformers_bpe_repo(directory, vocabulary, merges, transformers):
    directory.mkdir(parents=True)
    (directory / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    hf = transformers.RobertaTokenizer(vocab=vocabulary, merges=[tuple(m.split(" ")) for m in merges])
    with_saved = directory / "_saved"
    hf.save_pretrained(str(with_saved))
    shutil.move(str(with_saved / "tokenizer.json"), str(directory / "tokenizer.json"))
    shutil.rmtree(with_saved)
    config = {"model_type": "roberta", "max_position_embeddings": 130, "vocab_size": len(vocabulary)}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return hf


def roberta_fixtures(keras_hub, transformers, paragraphs):
    # Shipped tiny preset vocabulary.
    assets = TINY_PRESET_DIR / "assets" / "tokenizer"
    vocabulary = json.loads((assets / "vocabulary.json").read_text(encoding="utf-8"))
    merges = (assets / "merges.txt").read_text(encoding="utf-8").splitlines()
    results = {}
    cases = {"roberta_tiny_random": (vocabulary, merges)}
    cases["roberta_whitespace"] = train_whitespace_bpe(paragraphs)
    for name, (vocabulary, merges) in cases.items():
        unsplittable = ["<s>", "<pad>", "</s>", "<mask>"]
        python = keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges, unsplittable_tokens=unsplittable)
        tf_path = keras_hub.models.RobertaTokenizer(
            vocabulary=vocabulary, merges=merges, unsplittable_tokens=unsplittable, _allow_python_workflow=False
        )
        hf = transformers.RobertaTokenizer(vocab=vocabulary, merges=[tuple(m.split(" ")) for m in merges])
        if name == "roberta_whitespace":
            python.save_to_preset(str(FIXTURES_DIR / name))
            write_transformers_bpe_repo(FIXTURES_DIR / f"{name}_hf", vocabulary, merges, transformers)
        entry = record_tokenizer(python, tf_path, hf, TRICKY_STRINGS)
        entry.update(vocabulary_facts(python, [0, 1, 2, 3, 4, 100, 250, len(vocabulary) - 1], ["<s>", "Ġthe", "Ġ", "<mask>"]))
        results[name] = entry
    return results


def xlm_roberta_fixtures(keras_hub, transformers, paragraphs):
    proto = train_sentencepiece(paragraphs)
    name = "xlm_roberta"
    python = keras_hub.models.XLMRobertaTokenizer(proto=proto)
    tf_path = keras_hub.models.XLMRobertaTokenizer(proto=proto, _allow_python_workflow=False)
    python.save_to_preset(str(FIXTURES_DIR / name))

    # transformers converts sentencepiece.bpe.model to its tokenizer.json on load.
    hf_dir = FIXTURES_DIR / f"{name}_hf"
    source = hf_dir / "_source"
    source.mkdir(parents=True)
    (source / "sentencepiece.bpe.model").write_bytes(proto)
    hf = transformers.XLMRobertaTokenizer.from_pretrained(str(source))
    shutil.rmtree(source)
    saved = hf_dir / "_saved"
    hf.save_pretrained(str(saved))
    shutil.move(str(saved / "tokenizer.json"), str(hf_dir / "tokenizer.json"))
    shutil.rmtree(saved)
    config = {"model_type": "xlm-roberta", "max_position_embeddings": 66, "vocab_size": python.vocabulary_size()}
    (hf_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    strings = TRICKY_STRINGS + MULTILINGUAL_LINES[:4]
    entry = record_tokenizer(python, tf_path, hf, strings)
    size = python.vocabulary_size()
    entry.update(vocabulary_facts(python, [0, 1, 2, 3, 4, 5, 50, size - 2, size - 1], ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "▁the", "not-a-piece"]))
    # keras_hub's special-id detokenization: <mask> dropped, <s> </s> silent, <pad> <unk> as " ⁇ ".
    special_rows = [[0, 10, 11, 2], [0, 10, 1, 1], [10, 3, 11], [size - 1, 10, size - 1], [4, 5, 6, 7, 8]]
    entry["special_detokenize"] = {
        "ids": special_rows,
        "keras": [str(s) for s in python.detokenize(special_rows)],
    }
    return {name: entry}, strings


def preprocessor_fixtures(keras_hub, tokenizers):
    """keras_hub's *TextClassifierPreprocessor outputs (rows padded to sequence_length)."""
    cases = [
        dict(name="single_batch", x=PREPROCESSOR_TEXTS, sequence_length=12),
        dict(name="single_str", x=PREPROCESSOR_TEXTS[1], sequence_length=10),
        dict(name="single_long", x=PREPROCESSOR_TEXTS, sequence_length=64),
        dict(name="pairs_round_robin", x=(PREPROCESSOR_TEXTS, PREPROCESSOR_PAIRS), sequence_length=16),
        dict(name="pairs_waterfall", x=(PREPROCESSOR_TEXTS, PREPROCESSOR_PAIRS), sequence_length=16, truncate="waterfall"),
        dict(name="pairs_no_truncation", x=(PREPROCESSOR_TEXTS, PREPROCESSOR_PAIRS), sequence_length=64),
        dict(name="pair_str", x=(PREPROCESSOR_TEXTS[0], PREPROCESSOR_PAIRS[1]), sequence_length=12),
        dict(name="pairs_budget_zero", x=(PREPROCESSOR_TEXTS, PREPROCESSOR_PAIRS), sequence_length=4),
        dict(name="three_segments", x=(PREPROCESSOR_TEXTS, PREPROCESSOR_PAIRS, PREPROCESSOR_TEXTS[::-1]), sequence_length=20),
    ]
    classes = {
        "roberta_tiny_random": keras_hub.models.RobertaTextClassifierPreprocessor,
        "xlm_roberta": keras_hub.models.XLMRobertaTextClassifierPreprocessor,
    }
    results = {}
    for vocab_name, preprocessor_cls in classes.items():
        tokenizer, tf_tokenizer = tokenizers[vocab_name]
        for text in PREPROCESSOR_TEXTS + PREPROCESSOR_PAIRS:
            if as_list(tokenizer(text)) != as_list(tf_tokenizer(text)):
                raise RuntimeError(f"keras_hub's tokenizer paths disagree on preprocessor text {text!r}")
        entries = []
        for case in cases:
            preprocessor = preprocessor_cls(
                tokenizer=tokenizer, sequence_length=case["sequence_length"], truncate=case.get("truncate", "round_robin")
            )
            # keyword: a positional 2-tuple would be unpacked as (x, y) by keras_hub.
            out = preprocessor(x=case["x"])
            token_ids = np.asarray(out["token_ids"])
            entries.append(
                {
                    "name": case["name"],
                    "x": list(case["x"]) if isinstance(case["x"], tuple) else case["x"],
                    "x_is_tuple": isinstance(case["x"], tuple),
                    "sequence_length": case["sequence_length"],
                    "truncate": case.get("truncate", "round_robin"),
                    "token_ids": token_ids.tolist(),
                    "padding_mask": np.asarray(out["padding_mask"]).astype(bool).tolist(),
                }
            )
        results[vocab_name] = entries
    return results


def main() -> None:
    import keras_hub
    import transformers

    paragraphs = load_tiny_preset_module().training_text()
    for child in FIXTURES_DIR.glob("*"):
        if child.is_dir():
            shutil.rmtree(child)
    FIXTURES_DIR.mkdir(parents=True, exist_ok=True)

    expected = {"strings": TRICKY_STRINGS}
    expected.update(roberta_fixtures(keras_hub, transformers, paragraphs))
    xlm, xlm_strings = xlm_roberta_fixtures(keras_hub, transformers, paragraphs)
    expected.update(xlm)
    expected["xlm_roberta_strings"] = xlm_strings

    vocabulary = json.loads((TINY_PRESET_DIR / "assets/tokenizer/vocabulary.json").read_text(encoding="utf-8"))
    merges = (TINY_PRESET_DIR / "assets/tokenizer/merges.txt").read_text(encoding="utf-8").splitlines()
    proto = (FIXTURES_DIR / "xlm_roberta/assets/tokenizer/vocabulary.spm").read_bytes()
    tokenizers = {
        "roberta_tiny_random": (
            keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges),
            keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges, _allow_python_workflow=False),
        ),
        "xlm_roberta": (
            keras_hub.models.XLMRobertaTokenizer(proto=proto),
            keras_hub.models.XLMRobertaTokenizer(proto=proto, _allow_python_workflow=False),
        ),
    }
    preprocessors = preprocessor_fixtures(keras_hub, tokenizers)

    def dump(name, value):
        text = json.dumps(value, ensure_ascii=False, indent=1)
        (FIXTURES_DIR / name).write_text(text + "\n", encoding="utf-8")

    dump("expected_tokenizers.json", expected)
    dump("expected_preprocessors.json", preprocessors)

    for name in ("roberta_tiny_random", "roberta_whitespace", "xlm_roberta"):
        entry = expected[name]
        strings = expected["xlm_roberta_strings"] if name == "xlm_roberta" else TRICKY_STRINGS
        differ_tf = [s for s, a, b in zip(strings, entry["keras_python"], entry["keras_tf"]) if a != b]
        differ_hf = [s for s, a, b in zip(strings, entry["keras_tf"], entry["transformers"]) if a != b]
        print(f"{name}: {len(strings)} strings; keras python != keras tf.data on {differ_tf!r}")
        print(f"{name}: keras tf.data != transformers on {differ_hf!r}")
    for path in sorted(FIXTURES_DIR.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(REPO_ROOT)}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
