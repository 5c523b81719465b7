"""Regenerate the shipped tiny preset ``roberta_torch/assets/presets/roberta_tiny_random/``.

Run from the repository root:

    KERAS_BACKEND=torch python tools/make_tiny_preset.py

What it does, deterministically:

1. trains a byte-level BPE vocabulary with the Hugging Face ``tokenizers``
   library on ``TRAINING_PARAGRAPHS`` below (English text written for this
   project, free to ship), with RoBERTa's special tokens in RoBERTa's order:
   ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>`` last;
2. builds a real ``keras_hub.models.RobertaBackbone`` (2 layers, 2 heads,
   hidden 32, intermediate 64, max length 128) and gives every variable
   (embeddings, kernels, biases, LayerNorm gamma/beta) seeded random values;
3. builds a real ``keras_hub.models.RobertaTokenizer`` on that vocabulary and
   saves backbone and tokenizer with keras_hub's ``save_to_preset``, so the
   directory is a genuine Keras preset;
4. pins the non-deterministic bits (``date_saved``) and adds a description to
   ``metadata.json``, then checks that keras_hub loads the preset back and
   reproduces the backbone outputs and the token ids.

The weights are RANDOM: the preset exists so that tests, examples and the
README run offline, not to produce meaningful embeddings.
"""

import os

# keras picks its backend once, at first import: set it before importing keras.
os.environ["KERAS_BACKEND"] = "torch"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hashlib  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESET_DIR = REPO_ROOT / "roberta_torch" / "assets" / "presets" / "roberta_tiny_random"

SEED = 20240611
# 1024 ids in all: 4 leading specials + 256 byte symbols + merges + <mask> last.
VOCABULARY_SIZE = 1024
BACKBONE_CONFIG = dict(
    vocabulary_size=VOCABULARY_SIZE,
    num_layers=2,
    num_heads=2,
    hidden_dim=32,
    intermediate_dim=64,
    dropout=0.1,
    max_sequence_length=128,
)
DESCRIPTION = (
    "tiny RoBERTa with RANDOM weights for offline tests and examples "
    "(2 layers, 2 heads, hidden 32, byte-level BPE vocabulary of 1024 tokens "
    "trained on text shipped in tools/make_tiny_preset.py); its outputs mean nothing"
)
# A fixed date keeps the regenerated metadata.json byte-identical.
DATE_SAVED = "2024-06-11@00:00:00"

# Original English text written for this project (no third-party text), varied
# enough to give a BPE vocabulary of ~1000 tokens with real word pieces.
TRAINING_PARAGRAPHS = [
    "The small library on the corner opens at nine in the morning. Most days the "
    "first visitor is an old man who reads the weather report, folds the paper "
    "neatly, and leaves before the children arrive.",
    "A river does not hurry, yet it always reaches the sea. Along the way it "
    "carves valleys, feeds forests, and carries the sand that later becomes a "
    "beach where people walk without thinking about mountains.",
    "She opened the window to let the evening air in. Somewhere below, a dog was "
    "barking at nothing, and a neighbour was practising the same three notes on a "
    "trumpet, over and over again.",
    "Bread needs only flour, water, salt and time. The yeast does the patient "
    "work: it eats a little sugar, breathes out gas, and the dough slowly rises "
    "while the kitchen grows warm.",
    "Our train was forty minutes late because of a fallen tree on the line. "
    "Nobody complained very much; the conductor walked through the carriages "
    "handing out free coffee and apologising with a tired smile.",
    "Learning a language is like building a house one brick at a time. At first "
    "you can only say hello and thank you, but after a year you can argue about "
    "politics, tell jokes, and dream in new words.",
    "The engineers tested the bridge with trucks full of gravel before it opened "
    "to the public. Sensors measured how much the steel bent, and the numbers "
    "stayed well inside the limits they had calculated.",
    "In the garden, tomatoes ripen in late summer, beans climb the fence, and the "
    "pumpkins spread their leaves across every path. Weeding is endless, but the "
    "harvest makes it worth the sore back.",
    "When the power went out, the whole street became quiet. People lit candles, "
    "found old board games in cupboards, and talked to each other on their "
    "doorsteps until the lights came back around midnight.",
    "A good teacher asks questions more often than she gives answers. She waits, "
    "lets the silence stretch, and trusts that someone in the room will find the "
    "idea on their own.",
    "Computers store numbers as patterns of bits. A single byte holds eight bits, "
    "which is enough for two hundred and fifty six different values, from zero "
    "to two hundred and fifty five.",
    "The recipe said to bake the cake for thirty minutes, but the oven was old "
    "and unreliable. After twenty five minutes the edges were brown, the middle "
    "was still soft, and the whole house smelled of lemon.",
    "Every spring the birds return to the same trees. They rebuild their nests "
    "from twigs, moss and bits of string, and by early June the branches are full "
    "of hungry chicks calling for food.",
    "He kept a notebook in his pocket and wrote down anything that surprised him: "
    "a strange cloud, an overheard sentence, the price of apples, the colour of a "
    "door he had never noticed before.",
    "The museum has a room full of clocks, none of which show the same time. "
    "Visitors laugh when they realise it, and then they stand still for a while, "
    "listening to the ticking.",
    "Running a marathon is mostly about pacing. Start too fast and your legs give "
    "up before the finish; start too slowly and you waste the training of many "
    "cold mornings.",
    "The city council voted to plant a thousand new trees along the main roads. "
    "Shade in summer, cleaner air, and fewer floods after heavy rain were the "
    "reasons given in the report.",
    "Mathematics is the study of patterns. Counting, measuring, and comparing "
    "shapes are old human habits, and modern science still depends on them every "
    "single day.",
    "A neural network learns by adjusting millions of small numbers called "
    "weights. Training shows it many examples, measures how wrong it is, and "
    "nudges each weight in the direction that reduces the error.",
    "Language models read text as tokens, which are pieces of words. A common "
    "word may be a single token, while a rare word is split into several smaller "
    "pieces that the model has seen before.",
    "The storm arrived in the afternoon. Thunder rolled across the hills, the "
    "rain came down in sheets, and the little stream behind the school turned "
    "brown and loud within an hour.",
    "Grandmother's soup had no written recipe. She added what was in the fridge, "
    "tasted it, added a little more pepper, and somehow it was always better than "
    "anything we ever made ourselves.",
    "Astronomers measure distances to nearby stars by watching how they appear to "
    "move as the Earth travels around the Sun. The smaller the movement, the "
    "farther away the star must be.",
    "The meeting started late, ran long, and ended without a decision. Everyone "
    "agreed to meet again next week, which is what they had agreed the week "
    "before as well.",
    "A bicycle is a wonderfully efficient machine. With two wheels, a chain and a "
    "few gears, a person can travel four times faster than walking while using "
    "less energy.",
    "The harbour was full of fishing boats painted blue, red and yellow. At dawn "
    "they sailed out past the lighthouse, and in the evening they returned with "
    "nets full of silver fish.",
    "Good software is written for people as much as for machines. Clear names, "
    "small functions and honest error messages help the next reader understand "
    "what the code does and why.",
    "They climbed the mountain in three days, sleeping in tents and melting snow "
    "for water. From the top they could see five lakes, two villages, and the "
    "long shadow of the peak itself.",
    "The children built a robot out of cardboard boxes, bottle caps and an old "
    "radio. It could not move, but it had a name, a birthday, and a very serious "
    "expression.",
    "Coffee beans grow inside red fruit on small trees. After picking, the fruit "
    "is removed, the beans are dried in the sun, and later they are roasted until "
    "they turn dark and fragrant.",
    "On Monday it rained, on Tuesday it snowed, and on Wednesday the sun came "
    "out as if nothing had happened. Thursday and Friday were grey, and the "
    "weekend was surprisingly warm.",
    "Reading aloud is slower than reading silently, but it helps you notice the "
    "rhythm of a sentence. Writers often read their drafts out loud to find the "
    "places where the words stumble.",
    "The farmer checked the sky, then the soil, then the sky again. Planting too "
    "early risks frost; planting too late shortens the season. Every year the "
    "choice feels like a small bet.",
    "Volunteers cleaned the beach on Saturday and collected twelve bags of "
    "plastic, three shoes, a broken umbrella and a message in a bottle that "
    "nobody could read.",
    "Music students practise scales for hours. It is not exciting, but it trains "
    "the fingers and the ear, so that later, when the real piece begins, the "
    "hands already know the way.",
    "A map is a simplification. It leaves out almost everything about a place so "
    "that the few things that matter for a journey, such as roads, rivers and "
    "towns, are easy to see.",
    "The new hospital wing has bright corridors, quiet rooms and large windows "
    "facing the park. Patients say the view of the trees makes the long days "
    "pass a little faster.",
    "Questions and answers: What time is it? Where are we going? Why did the "
    "lights turn red? How many people live here? Who wrote this letter? Which "
    "road leads to the station?",
    "Numbers and dates: 1, 2, 3, 10, 42, 100, 2024, 3.14, 1,000,000 and 50% were "
    "written on the board next to January, February, March, April, May and June.",
    "Contractions are common in speech: I'm tired, you're right, it's late, "
    "we've finished, they'll come, she'd know, don't worry, can't stop, won't "
    "wait, isn't it?",
    "The quick brown fox jumps over the lazy dog, and the lazy dog does not seem "
    "to mind at all. Foxes, dogs, cats and horses all appear in old stories told "
    "to children.",
    "Scientists repeat experiments to make sure a result is real. One surprising "
    "measurement might be luck or a mistake; the same measurement ten times in "
    "ten laboratories is evidence.",
    "The bakery on Elm Street sells croissants, muffins, sourdough loaves and "
    "cinnamon rolls. By eight o'clock the queue reaches the door, and by ten the "
    "shelves are almost empty.",
    "Winter evenings are long in the north. Families gather in warm kitchens, "
    "tell stories, play cards, and wait for the short days to slowly grow longer "
    "again after the solstice.",
    "Electric cars are quiet, but their tyres still make noise on the road. "
    "Cities are beginning to notice that traffic sounds different, and some "
    "streets feel calmer than before.",
    "She taught herself to program by building small games: a maze, a snake that "
    "grows, a spaceship that dodges asteroids. Each game was a little harder "
    "than the one before.",
    "The orchestra tuned their instruments, the lights dimmed, and the conductor "
    "raised her hands. For a moment the hall was completely silent, and then the "
    "first violins began.",
    "History is written from many points of view. Letters, diaries, receipts and "
    "photographs help historians understand how ordinary people lived, worked "
    "and spoke to each other.",
    "Please remember to water the plants, feed the cat, lock the back door, and "
    "turn off the heating before you leave for the airport on Thursday morning.",
    "Kindness is contagious. A stranger holds a door, someone smiles back, and "
    "that person helps a neighbour carry shopping up the stairs later the same "
    "afternoon.",
]


def training_text() -> list[str]:
    """The shipped training text, one paragraph per item."""
    return list(TRAINING_PARAGRAPHS)


def train_vocabulary() -> tuple[dict, list[str]]:
    """Train the byte-level BPE vocabulary; return (token -> id, merge rules "a b")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    # RoBERTa's pre-tokenization: GPT-2's regex split, then bytes -> unicode symbols.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCABULARY_SIZE - 1,  # <mask> is appended last, as in roberta-base.
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        # All 256 byte symbols, so any UTF-8 text (emojis included) is encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(training_text(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocabulary = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    if len(vocabulary) != VOCABULARY_SIZE - 1:
        raise RuntimeError(
            f"BPE training gave {len(vocabulary)} tokens, expected {VOCABULARY_SIZE - 1}; "
            "add training text or lower VOCABULARY_SIZE."
        )
    vocabulary["<mask>"] = len(vocabulary)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return vocabulary, merges


def randomize_all_weights(backbone, rng: np.random.Generator) -> None:
    """Give every variable a seeded random value, biases and LayerNorm included.

    Zero biases and unit LayerNorm gammas would let a loader that drops or
    swaps them pass unnoticed, so nothing keeps its initializer value.
    """
    for variable in backbone.weights:
        shape = tuple(variable.shape)
        path = variable.path
        if path.endswith("gamma"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif path.endswith(("beta", "bias")):
            value = 0.05 * rng.standard_normal(shape)
        else:
            value = 0.05 * rng.standard_normal(shape)
        variable.assign(value.astype("float32"))


def finalize_metadata(preset_dir: pathlib.Path) -> None:
    metadata_path = preset_dir / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["date_saved"] = DATE_SAVED
    metadata["description"] = DESCRIPTION
    metadata_path.write_text(json.dumps(metadata, indent=4) + "\n")


def write_readme(preset_dir: pathlib.Path, parameter_count: int) -> None:
    text = f"""# roberta_tiny_random

{DESCRIPTION}.

- Architecture: `RobertaBackbone` with {BACKBONE_CONFIG['num_layers']} layers,
  {BACKBONE_CONFIG['num_heads']} heads, hidden {BACKBONE_CONFIG['hidden_dim']},
  intermediate {BACKBONE_CONFIG['intermediate_dim']}, max sequence length
  {BACKBONE_CONFIG['max_sequence_length']}, vocabulary {VOCABULARY_SIZE}
  ({parameter_count:,} parameters).
- Tokenizer: byte-level BPE (RoBERTa's), `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3,
  `<mask>`={VOCABULARY_SIZE - 1}.
- Format: a genuine Keras preset written by keras_hub's `save_to_preset`
  (config.json, metadata.json, model.weights.h5, tokenizer.json,
  assets/tokenizer/vocabulary.json + merges.txt); keras_hub loads it too.
- Regenerate with `KERAS_BACKEND=torch python tools/make_tiny_preset.py`.
"""
    (preset_dir / "README.md").write_text(text)


def check_round_trip(preset_dir: pathlib.Path, backbone, tokenizer) -> None:
    """keras_hub must load the preset back with the same outputs and ids."""
    import keras_hub

    loaded = keras_hub.models.Backbone.from_preset(str(preset_dir))
    loaded_tokenizer = keras_hub.models.Tokenizer.from_preset(str(preset_dir))
    text = "The quick brown fox jumps over the lazy dog."
    ids = np.asarray(tokenizer(text))
    if not np.array_equal(np.asarray(loaded_tokenizer(text)), ids):
        raise RuntimeError("keras_hub tokenizer loaded from the preset gives other ids")
    token_ids = np.concatenate([[0], ids, [2]])[None].astype("int32")
    inputs = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
    expected = np.asarray(backbone(inputs).detach().cpu())
    got = np.asarray(loaded(inputs).detach().cpu())
    if not np.allclose(expected, got, atol=1e-6):
        raise RuntimeError("keras_hub backbone loaded from the preset gives other outputs")


def main() -> None:
    import keras
    import keras_hub

    vocabulary, merges = train_vocabulary()
    keras.utils.set_random_seed(SEED)
    backbone = keras_hub.models.RobertaBackbone(**BACKBONE_CONFIG)
    randomize_all_weights(backbone, np.random.default_rng(SEED))
    tokenizer = keras_hub.models.RobertaTokenizer(
        vocabulary=vocabulary,
        merges=merges,
        # keras_hub's default is list(set(...)): its order (and so tokenizer.json)
        # would change between runs.
        unsplittable_tokens=["<s>", "<pad>", "</s>", "<mask>"],
    )

    with tempfile.TemporaryDirectory() as scratch:
        staging = pathlib.Path(scratch) / "roberta_tiny_random"
        backbone.save_to_preset(str(staging))
        tokenizer.save_to_preset(str(staging))
        finalize_metadata(staging)
        write_readme(staging, backbone.count_params())
        check_round_trip(staging, backbone, tokenizer)
        if PRESET_DIR.exists():
            shutil.rmtree(PRESET_DIR)
        PRESET_DIR.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, PRESET_DIR)

    total = 0
    for path in sorted(PRESET_DIR.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            total += len(data)
            digest = hashlib.sha256(data).hexdigest()[:16]
            print(f"{path.relative_to(REPO_ROOT)}  {len(data):>8} bytes  sha256 {digest}")
    print(f"total {total} bytes, {backbone.count_params()} parameters")


if __name__ == "__main__":
    main()
