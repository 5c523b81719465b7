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
    python benchmarks/bench_embed.py --dtypes float32 --layers 6 --texts 384 --max-seq-length 128 --onnx --int8

--onnx adds ONNX Runtime float32 and dynamic-int8 rows (the transformers model exported to ONNX,
quantized as sentence-transformers' onnx-qint8 files are; see onnx_peers.py) run through
sentence-transformers' own pipeline; --int8 adds `TextEmbedder.quantize("int8")`. Results
record the CPU model and its kernel flags.

Writes <out>/embed_<device>[_peers].json when --out is given and prints a table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch

import roberta_torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cpu_info  # noqa: E402

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


def build_directory(root: pathlib.Path, layers: int, size: str, max_seq_length: int = 512) -> pathlib.Path:
    import transformers
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.base.modules import Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # 5.x (the --st-onnx environment, see st_onnx_encoders)
        from sentence_transformers.models import Normalize, Pooling, Transformer

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
    modules = [Transformer(str(hf_dir), max_seq_length=max_seq_length), Pooling(hidden, "mean"), Normalize()]
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


def onnx_encoder(reference, run):
    """SentenceTransformer.encode's pipeline (length-sorted batches, its tokenizer, mean
    pooling, Normalize) around an ONNX Runtime session: what `SentenceTransformer(...,
    backend="onnx")` runs (its optimum backend needs transformers < 4.58, see onnx_peers.py)."""

    def encode(texts, batch_size):
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), reference[0].auto_model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            index = order[start:start + batch_size]
            features = reference.tokenize([texts[i] for i in index])
            ids, mask = features["input_ids"], features["attention_mask"]
            hidden = run(ids, mask)  # (B, T, H)
            weights = mask[..., None].to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
            out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    return encode


def st_onnx_encoders(directory: pathlib.Path, batch_size: int) -> dict:
    """sentence-transformers' own ONNX backend: `SentenceTransformer(directory, backend="onnx")`
    (optimum exports the model) and its dynamic int8 file from
    `export_dynamic_quantized_onnx_model` with the config for this CPU (avx512_vnni, avx512 or
    avx2). optimum-onnx needs transformers < 4.58 while sentence-transformers 6 needs >= 5, so
    this runs in a separate environment with sentence-transformers 5.x (benchmarks/README.md)."""
    import onnxruntime
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    flags = cpu_info.cpu_flags() if cpu_info.active_isa_cap() is None else ["avx2"]
    config = "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"

    def options():
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = torch.get_num_threads()
        session_options.inter_op_num_threads = 1
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return session_options

    fp32 = SentenceTransformer(str(directory), device="cpu", backend="onnx", model_kwargs={"session_options": options()})
    fp32.save(str(directory))  # writes onnx/model.onnx beside the torch weights
    export_dynamic_quantized_onnx_model(fp32, config, str(directory))
    int8 = SentenceTransformer(str(directory), device="cpu", backend="onnx", model_kwargs={
        "file_name": f"onnx/model_qint8_{config}.onnx", "session_options": options()})
    return {"st_onnx_fp32": lambda batch: fp32.encode(batch, batch_size=batch_size),
            f"st_onnx_qint8_{config}": lambda batch: int8.encode(batch, batch_size=batch_size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--mean-tokens", type=float, default=100)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens-per-batch", type=int, default=None, help="ours only (default: none)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--onnx", action="store_true",
                        help="CPU, float32: add ONNX Runtime fp32 / dynamic-int8 rows (sentence-transformers' pipeline)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch (and ONNX Runtime) threads; default: torch's choice. On a shared machine one "
                             "thread per process keeps ratios stable: a parallel region waits for its slowest thread")
    parser.add_argument("--int8", action="store_true", help="CPU, float32: add TextEmbedder.quantize('int8') rows")
    parser.add_argument("--st-onnx", action="store_true",
                        help="CPU, float32: add sentence-transformers backend='onnx' rows (needs optimum-onnx)")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    texts = make_texts(args.texts, args.mean_tokens, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        directory = build_directory(pathlib.Path(root), args.layers, args.size, args.max_seq_length)
        for name in args.dtypes.split(","):
            dtype = DTYPES[name]
            reference = SentenceTransformer(str(directory), device=args.device, model_kwargs={"dtype": dtype})
            ours = roberta_torch.TextEmbedder.from_preset(str(directory), dtype=name, device=args.device)
            tokens = sum(len(r) for r in ours.tokenize(texts)[0])
            encoders = {  # name -> f(texts) -> embeddings
                "sentence_transformers": lambda batch: reference.encode(batch, batch_size=args.batch_size),
                "roberta_torch": lambda batch: ours.encode(batch, batch_size=args.batch_size,
                                                           max_tokens_per_batch=args.max_tokens_per_batch),
            }
            if args.device == "cpu" and name == "float32":
                if args.onnx:
                    from onnx_peers import onnx_peers

                    peers = onnx_peers(reference[0].auto_model, pathlib.Path(root) / "onnx")
                    for peer_name, run in peers.items():
                        encode = onnx_encoder(reference, run)
                        encoders[peer_name] = lambda batch, encode=encode: encode(batch, args.batch_size)
                if args.st_onnx:
                    encoders.update(st_onnx_encoders(directory, args.batch_size))
                if args.int8:
                    quantized = roberta_torch.TextEmbedder.from_preset(str(directory), device="cpu").quantize("int8")
                    encoders["roberta_torch_int8"] = lambda batch: quantized.encode(
                        batch, batch_size=args.batch_size, max_tokens_per_batch=args.max_tokens_per_batch)
            warm = texts[:8]
            for encoder in encoders.values():
                encoder(warm)
            times = {key: [] for key in encoders}
            outputs = {}
            for _ in range(args.repeats):  # interleaved: machine noise hits every side
                for key, encoder in encoders.items():
                    t, outputs[key] = timed(lambda: encoder(texts), 1)
                    times[key].append(t)
            expected = np.asarray(outputs["sentence_transformers"], dtype=np.float32)
            difference = float(np.abs(np.asarray(outputs["roberta_torch"], dtype=np.float32) - expected).max())
            best = {key: min(t) for key, t in times.items()}
            row = {"dtype": name, "texts": len(texts), "tokens": tokens,
                   "sentence_transformers_texts_per_s": len(texts) / best["sentence_transformers"],
                   "roberta_torch_texts_per_s": len(texts) / best["roberta_torch"],
                   "speedup": best["sentence_transformers"] / best["roberta_torch"], "max_abs_difference": difference}
            for key in encoders:
                if key in ("sentence_transformers", "roberta_torch"):
                    continue
                actual = np.asarray(outputs[key], dtype=np.float32)
                row[f"{key}_texts_per_s"] = len(texts) / best[key]
                row[f"{key}_min_cosine_vs_sentence_transformers"] = float(
                    ((actual * expected).sum(1) / (np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1))).min())
            if "onnxruntime_fp32" in best:
                row["roberta_torch_vs_onnxruntime_fp32"] = best["onnxruntime_fp32"] / best["roberta_torch"]
            if "roberta_torch_int8" in best:
                row["int8_vs_float32"] = best["roberta_torch"] / best["roberta_torch_int8"]
                if "onnxruntime_int8" in best:
                    row["int8_vs_onnxruntime_int8"] = best["onnxruntime_int8"] / best["roberta_torch_int8"]
            for key in best:
                if key.startswith("st_onnx_fp32"):
                    row["roberta_torch_vs_st_onnx_fp32"] = best[key] / best["roberta_torch"]
                if key.startswith("st_onnx_qint8") and "roberta_torch_int8" in best:
                    row["int8_vs_st_onnx_qint8"] = best[key] / best["roberta_torch_int8"]
            rows.append(row)
            print(f"{args.device} {name:9s} {len(texts)} texts, {tokens} tokens: "
                  + ", ".join(f"{key} {len(texts) / t:.1f} texts/s" for key, t in best.items())
                  + f" -> {row['speedup']:.2f}x (max |difference| {difference:.2e})", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"device": args.device, "cpu": cpu_info.cpu_record() if args.device == "cpu" else None,
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "layers": args.layers,
                  "size": args.size, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
                  "rows": rows, "argv": sys.argv[1:]}
        suffix = "_peers" if (args.onnx or args.int8 or args.st_onnx) else ""
        (args.out / f"embed_{args.device}{suffix}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
