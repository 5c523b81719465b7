"""Sentence embeddings for a file of lines, and the lines closest to a query.

    python examples/embed.py                                   # offline: tiny preset, shipped lines
    python examples/embed.py --preset roberta_base_en --query "a dog on the beach" --top-k 3
    python examples/embed.py --lines my_corpus.txt --pooling first --save embeddings.pt

A thin use of `roberta_torch.TextEmbedder`: each line is embedded by pooling the backbone's
sequence output ("mean" averages the valid tokens, "first" takes the `<s>` token), then
L2-normalized; similarity is the cosine. For a whole file use `roberta-torch embed`; for the
embedding presets (bge_m3, multilingual_e5_*) the preset's own pooling applies by default
through `TextEmbedder.from_preset(preset)`.
`roberta_tiny_random` has random weights: its rankings show the code path, not meaning.
"""

import argparse
import pathlib
import time

import torch

import roberta_torch

LINES = pathlib.Path(__file__).parent / "data" / "sentences.txt"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="roberta_tiny_random", help="builtin name, kaggle://, hf:// or a directory")
    p.add_argument("--lines", type=pathlib.Path, default=LINES, help="a text file, one sentence a line")
    p.add_argument("--query", default="A puppy is playing with a ball on the grass.", help="the text to search for")
    p.add_argument("--top-k", type=int, default=5, help="how many lines to print (default: %(default)s)")
    p.add_argument("--pooling", choices=("mean", "first"), default="mean", help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="lines per forward pass (default: %(default)s)")
    p.add_argument("--sequence-length", type=int, default=None, help="most tokens per line (default: the preset's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--save", type=pathlib.Path, metavar="FILE", help="torch.save the lines and their embeddings")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    lines = [line.strip() for line in args.lines.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"--lines {args.lines}: no non-empty lines to embed")
    # "first" is the <s> token: sentence-transformers calls that pooling "cls".
    embedder = roberta_torch.TextEmbedder.from_preset(
        args.preset, pooling="cls" if args.pooling == "first" else "mean", normalize=True,
        max_seq_length=args.sequence_length, device=args.device,
    )

    start = time.perf_counter()
    embeddings = embedder.encode(lines, batch_size=args.batch_size, convert_to="torch")  # (N, H) unit vectors
    seconds = time.perf_counter() - start
    scores = embedder.similarity(embedder.encode([args.query]), embeddings)[0]  # cosine similarities, (N,)
    print(f"{args.preset}: embedded {len(lines)} lines from {args.lines.name} in {seconds:.2f} s "
          f"({args.pooling} pooling, batches of {args.batch_size}) -> embeddings {tuple(embeddings.shape)}")
    if args.preset == "roberta_tiny_random":
        print("(random weights: the ranking only shows the code path; try --preset multilingual_e5_base)")
    print(f"query: {args.query!r}")
    top = torch.topk(scores, min(args.top_k, len(lines)))
    for rank, (score, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:3d}. cosine {score:+.4f}  {lines[index]}")
    if args.save:
        torch.save({"lines": lines, "embeddings": embeddings.cpu(), "pooling": args.pooling}, args.save)
        print(f"saved {tuple(embeddings.shape)} embeddings to {args.save}")


if __name__ == "__main__":
    main()
