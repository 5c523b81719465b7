"""Sentence embeddings for a file of lines, and the lines closest to a query.

    python examples/embed.py                                   # offline: tiny preset, shipped lines
    python examples/embed.py --preset roberta_base_en --query "a dog on the beach" --top-k 3
    python examples/embed.py --lines my_corpus.txt --pooling first --save embeddings.pt

Each line is embedded by pooling the backbone's sequence output: "mean" averages the valid
tokens (padding excluded), "first" takes the `<s>` token. Similarity is the cosine.
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


def pool(sequence_output: torch.Tensor, padding_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) outputs, (B, T) mask -> (B, H) float32, L2-normalized embeddings."""
    if pooling == "first":
        pooled = sequence_output[:, 0]  # the <s> token
    else:
        mask = padding_mask.unsqueeze(-1).to(sequence_output.dtype)  # (B, T, 1)
        pooled = (sequence_output * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


@torch.no_grad()
def embed(texts: list[str], backbone, preprocessor, pooling: str, batch_size: int) -> torch.Tensor:
    """texts -> (len(texts), hidden_dim) unit vectors, `batch_size` texts per forward pass."""
    device = next(backbone.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        inputs = {k: v.to(device) for k, v in preprocessor(texts[start : start + batch_size]).items()}
        chunks.append(pool(backbone(inputs), inputs["padding_mask"], pooling))
    return torch.cat(chunks)


def main() -> None:
    args = parse_args()
    lines = [line.strip() for line in args.lines.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"--lines {args.lines}: no non-empty lines to embed")
    backbone = roberta_torch.Backbone.from_preset(args.preset).to(args.device).eval()
    preprocessor = roberta_torch.Preprocessor.from_preset(args.preset, sequence_length=args.sequence_length)

    start = time.perf_counter()
    embeddings = embed(lines, backbone, preprocessor, args.pooling, args.batch_size)  # (N, H)
    seconds = time.perf_counter() - start
    query = embed([args.query], backbone, preprocessor, args.pooling, 1)[0]  # (H,)
    scores = embeddings @ query  # cosine similarities, (N,)
    print(f"{args.preset}: embedded {len(lines)} lines from {args.lines.name} in {seconds:.2f} s "
          f"({args.pooling} pooling, batches of {args.batch_size}) -> embeddings {tuple(embeddings.shape)}")
    if args.preset == "roberta_tiny_random":
        print("(random weights: the ranking only shows the code path; try --preset roberta_base_en)")
    print(f"query: {args.query!r}")
    top = torch.topk(scores, min(args.top_k, len(lines)))
    for rank, (score, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:3d}. cosine {score:+.4f}  {lines[index]}")
    if args.save:
        torch.save({"lines": lines, "embeddings": embeddings.cpu(), "pooling": args.pooling}, args.save)
        print(f"saved {tuple(embeddings.shape)} embeddings to {args.save}")


if __name__ == "__main__":
    main()
