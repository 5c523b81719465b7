"""roberta_torch in one minute: a custom backbone, a preset, then text -> embeddings.

    python examples/quickstart.py                             # offline, the shipped tiny preset
    python examples/quickstart.py --preset roberta_base_en    # real weights (downloads ~0.5 GB)

Runs on CPU in a few seconds with the defaults. `roberta_tiny_random` has RANDOM weights:
its shapes and code paths are real, its numbers mean nothing.
"""

import argparse
import time

import numpy as np
import torch

import roberta_torch

DEFAULT_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast brown fox leaps over a sleepy dog.",
    "Heavy rain is expected tomorrow afternoon.",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="roberta_tiny_random",
                        help="builtin name, kaggle://..., hf://... or a local directory (default: %(default)s)")
    parser.add_argument("--text", action="append", dest="texts", metavar="TEXT",
                        help="a sentence to embed; repeat for several (default: three sample sentences)")
    parser.add_argument("--sequence-length", type=int, default=None,
                        help="most tokens per text (default: the preset's, at most 512)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: %(default)s)")
    return parser.parse_args()


def custom_backbone() -> None:
    """keras_hub's docstring example, unchanged: the same constructor and numpy inputs."""
    torch.manual_seed(0)
    model = roberta_torch.RobertaBackbone(
        vocabulary_size=50265,
        num_layers=4,
        num_heads=4,
        hidden_dim=256,
        intermediate_dim=512,
        max_sequence_length=128,
    ).eval()  # nn.Modules start in training mode (dropout on); Keras's call defaults to inference
    input_data = {
        "token_ids": np.ones(shape=(1, 12), dtype="int32"),
        "padding_mask": np.array([[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]]),
    }
    with torch.no_grad():
        output = model(input_data)
    print("1. Custom RobertaBackbone")
    print(f"   config: {model.get_config()}")
    print(f"   parameters: {model.num_parameters():,}")
    print(f"   output: shape {tuple(output.shape)}, dtype {output.dtype}")


def preset_embeddings(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    backbone = roberta_torch.Backbone.from_preset(args.preset).to(args.device)  # in eval mode
    preprocessor = roberta_torch.Preprocessor.from_preset(args.preset, sequence_length=args.sequence_length)
    config = backbone.get_config()
    print(f"\n2. Preset {args.preset!r}: {type(backbone).__name__} with {config['num_layers']} layers, "
          f"hidden {config['hidden_dim']}, {backbone.num_parameters():,} parameters "
          f"(loaded in {time.perf_counter() - start:.2f} s)")
    if args.preset == "roberta_tiny_random":
        print("   (random weights: the numbers below only show the API; try --preset roberta_base_en)")

    texts = args.texts or DEFAULT_TEXTS
    tokenizer = preprocessor.tokenizer
    ids = tokenizer(texts[0])
    print(f"   tokens of {texts[0]!r}: {[tokenizer.id_to_token(i) for i in ids][:12]}")
    print(f"   detokenized: {tokenizer.detokenize(ids)!r}")

    batch = preprocessor(texts)  # {"token_ids": (B, T) int64, "padding_mask": (B, T) bool}
    with torch.no_grad():
        sequence_output = backbone(batch)  # (B, T, hidden_dim)
    mask = batch["padding_mask"].to(sequence_output.device).unsqueeze(-1).to(sequence_output.dtype)
    embeddings = (sequence_output * mask).sum(1) / mask.sum(1)  # masked mean: (B, hidden_dim)
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    similarity = embeddings @ embeddings.T  # (B, B) cosine similarities

    print("\n3. Text -> embeddings")
    print(f"   token_ids: shape {tuple(batch['token_ids'].shape)}; "
          f"valid tokens per text: {batch['padding_mask'].sum(1).tolist()}")
    print(f"   sequence output: shape {tuple(sequence_output.shape)}; "
          f"mean-pooled embeddings: shape {tuple(embeddings.shape)}")
    print("   cosine similarity:")
    for i, text in enumerate(texts):
        row = " ".join(f"{value:6.3f}" for value in similarity[i].tolist())
        print(f"   [{row}]  {text[:60]}")


def main() -> None:
    args = parse_args()
    custom_backbone()
    preset_embeddings(args)


if __name__ == "__main__":
    main()
