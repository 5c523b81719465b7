"""TextEmbedder.encode against sentence-transformers' SentenceTransformer.encode: texts per second.

Same directory (a sentence-transformers model written by sentence-transformers itself around a
random-weight RoBERTa: mean pooling + Normalize, max_seq_length 512), same texts, same batch
size, same dtype, one process, interleaved runs, best of --repeats. Text lengths are
log-normal (mean about 100 tokens, clipped to 512), built from the tokenizer fixture's
vocabulary. Both sides include tokenization, sorting, batching and pooling: what a user
times. The embeddings of the two are compared too (max |difference|).

    python benchmarks/bench_embed.py --device cpu --dtypes float32,bfloat16 --texts 256 --layers 6
    python benchmarks/bench_embed.py --device cuda --dtypes bfloat16 --texts 4096 --layers 12
    python benchmarks/bench_embed.py --size tiny --texts 32          # smoke test of the script

Writes <out>/embed_<device>.json when --out is given and prints a table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np
import torch

import roberta_torch

REPO = pathlib.Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests" / "fixtures" / "tokenizers" / "roberta_whitespace_hf"
SIZES = {"base": (12, 768, 3072), "tiny": (4, 64, 128)}  # heads, hidden, intermediate
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_texts(count: int, mean_tokens: float, seed: int) -> list[str]:
    """Log-normal token counts (sigma 0.8, mean `mean_tokens`), texts of random vocabulary words."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER))
    rng = np.random.default_rng(seed)
    sigma = 0.8
    lengths = np.clip(rng.lognormal(np.log(mean_tokens) - sigma**2 / 2, sigma, count), 3, 510).astype(int)
    words = [w for w in tokenizer.get_vocab() if w.startswith("Ġ") and w[1:].isalpha()]
    return ["".join(rng.choice(words, n)).replace("Ġ", " ").strip() for n in lengths]


def build_directory(root: pathlib.Path, layers: int, size: str) -> pathlib.Path:
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    heads, hidden, intermediate = SIZES[size]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = transformers.RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1,
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    model = transformers.RobertaModel(config, add_pooling_layer=False)
    hf_dir = root / "hf"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    modules = [Transformer(str(hf_dir), max_seq_length=512), Pooling(hidden, "mean"), Normalize()]
    directory = root / "st"
    SentenceTransformer(modules=modules, device="cpu").save(str(directory))
    return directory


def timed(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--mean-tokens", type=float, default=100)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens-per-batch", type=int, default=None, help="ours only (default: none)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = make_texts(args.texts, args.mean_tokens, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        directory = build_directory(pathlib.Path(root), args.layers, args.size)
        for name in args.dtypes.split(","):
            dtype = DTYPES[name]
            reference = SentenceTransformer(str(directory), device=args.device, model_kwargs={"dtype": dtype})
            ours = roberta_torch.TextEmbedder.from_preset(str(directory), dtype=name, device=args.device)
            tokens = sum(len(r) for r in ours.tokenize(texts)[0])
            warm = texts[:8]
            reference.encode(warm, batch_size=args.batch_size)
            ours.encode(warm, batch_size=args.batch_size)
            st_times, our_times = [], []
            for _ in range(args.repeats):  # interleaved: machine noise hits both sides
                t, expected = timed(lambda: reference.encode(texts, batch_size=args.batch_size), 1)
                st_times.append(t)
                t, actual = timed(lambda: ours.encode(texts, batch_size=args.batch_size,
                                                      max_tokens_per_batch=args.max_tokens_per_batch), 1)
                our_times.append(t)
            difference = float(np.abs(np.asarray(actual, dtype=np.float32) - np.asarray(expected, dtype=np.float32)).max())
            row = {"dtype": name, "texts": len(texts), "tokens": tokens,
                   "sentence_transformers_texts_per_s": len(texts) / min(st_times),
                   "roberta_torch_texts_per_s": len(texts) / min(our_times),
                   "speedup": min(st_times) / min(our_times), "max_abs_difference": difference}
            rows.append(row)
            print(f"{args.device} {name:9s} {len(texts)} texts, {tokens} tokens: sentence-transformers "
                  f"{row['sentence_transformers_texts_per_s']:.1f} texts/s, roberta_torch "
                  f"{row['roberta_torch_texts_per_s']:.1f} texts/s -> {row['speedup']:.2f}x "
                  f"(max |difference| {difference:.2e})", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"device": args.device, "cpu": platform.processor() or platform.machine(),
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "layers": args.layers,
                  "size": args.size, "batch_size": args.batch_size, "rows": rows, "argv": sys.argv[1:]}
        (args.out / f"embed_{args.device}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
