"""Embedding servers under concurrent load: `roberta-torch serve` against a plain
sentence-transformers server (FastAPI + `SentenceTransformer.encode` per request, what people
write first; two variants: an `async def` route, one encode at a time, and a plain `def` route
on FastAPI's thread pool; "vs ST" compares with the faster of the two in each round) and
infinity (`infinity_emb v2`, when a Python with it is given).

Same model directory for all (a random-weight RoBERTa saved by transformers, in the classic
sentence-transformers layout: mean pooling + Normalize, max_seq_length 512), same texts (log-normal lengths, mean about 100
tokens, built from the tokenizer fixture's vocabulary), one text per request, OpenAI's
embeddings request and response. Each server runs in its own process on 127.0.0.1; all are
started first, then for each concurrency `--repeats` rounds run every server for `--duration`
seconds in a shuffled order. Reported: medians over the rounds of throughput (texts/s,
tokens/s) and latency p50 / p99 per request, and the median over rounds of the throughput
ratio to each peer measured in the same round (machine noise moves both sides together).
Also the server's CPU time (user + system of its process, from /proc) per text: on a machine
shared with other jobs, wall-clock throughput rewards whichever server runs more threads (the
kernel shares CPUs per thread), while texts per CPU-second measures the work each server does.
The load generator (httpx, asyncio) runs in this process, on the same CPU as the servers.

    python benchmarks/bench_serve.py --out benchmarks/results                 # CPU, 6 layers, c = 1, 8, 32
    python benchmarks/bench_serve.py --infinity-python .venv-infinity/bin/python --out benchmarks/results
    python benchmarks/bench_serve.py --device cuda --dtype bfloat16 --layers 12 --out benchmarks/results/gpu
    python benchmarks/bench_serve.py --size tiny --duration 2 --repeats 1    # smoke test of the script

    python benchmarks/bench_serve.py --mean-tokens 16 --tag _short --out benchmarks/results   # short queries

Writes <out>/serve_<device><tag>.json when --out is given and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_embed import SIZES, TOKENIZER, make_texts  # noqa: E402

SERVERS = ("roberta_torch", "sentence_transformers", "sentence_transformers_threads", "infinity")
ST_SERVERS = ("sentence_transformers", "sentence_transformers_threads")


def build_directory(root: pathlib.Path, layers: int, size: str) -> pathlib.Path:
    """A sentence-transformers model directory in the classic layout every version reads (the
    hub's: transformers files at the root, `sentence_transformers.models.*` module types,
    legacy Pooling flags), so infinity's older sentence-transformers loads it too."""
    import torch
    import transformers

    heads, hidden, intermediate = SIZES[size]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER), model_max_length=512)
    config = transformers.RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1,
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    directory = root / "model"
    transformers.RobertaModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (directory / "2_Normalize").mkdir()
    return directory


# -- the plain sentence-transformers server (this script runs it with --serve-st) ----------------


def serve_sentence_transformers(directory: str, port: int, device: str, dtype: str, batch_size: int,
                                threads: bool) -> None:
    """FastAPI + `encode` per request; `threads`: a plain `def` route (FastAPI runs it on its thread
    pool, requests overlap), else an `async def` route (one encode at a time on the event loop)."""
    import torch
    import uvicorn
    from fastapi import Body, FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(directory, device=device, model_kwargs={"dtype": getattr(torch, dtype)})
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    def embed(request: dict) -> dict:
        texts = [request["input"]] if isinstance(request["input"], str) else request["input"]
        vectors = model.encode(texts, batch_size=batch_size)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": request.get("model") or directory,
                "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    if threads:
        @app.post("/v1/embeddings")
        def embeddings(request: dict = Body(...)):
            return embed(request)
    else:
        @app.post("/v1/embeddings")
        async def embeddings(request: dict = Body(...)):
            return embed(request)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- starting and stopping servers ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stat(pid) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process, from /proc."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of process `root` and all its live descendants."""
    stats = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None:
                stats[int(entry.name)] = stat
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats:
            total += stats[pid][1]
            frontier.extend(child for child, (parent, _) in stats.items() if parent == pid)
    return total


class Server:
    def __init__(self, name: str, command: list[str], port: int, path: str, env: dict | None = None):
        self.name, self.port, self.path = name, port, path
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"bench_serve_{name}_", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                        env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float, model_name: str) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.post(self.url + self.path, json={"input": ["ready?"], "model": model_name}, timeout=30).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} did not start; its log:\n{pathlib.Path(self.log.name).read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system, every thread) the server has used so far: its process and
        every process below it (uvicorn's `--workers` children)."""
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_servers(args, directory: pathlib.Path, model_name: str) -> list[Server]:
    servers = []
    threads = str(args.threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    for name in args.servers:
        port = free_port()
        if name == "roberta_torch":
            command = [sys.executable, "-m", "roberta_torch", "serve", str(directory), "--model-name", model_name,
                       "--port", str(port), "--threads", threads, "--no-access-log", "--log-level", "warning",
                       "--max-batch-tokens", str(args.max_batch_tokens), "--max-wait-ms", str(args.max_wait_ms)]
            if args.device != "cpu":
                command += ["--device", args.device]
            if args.dtype != "float32":
                command += ["--dtype", args.dtype]
            command += args.serve_args.split()
            servers.append(Server(name, command, port, "/v1/embeddings", {**env, "PYTHONPATH": str(REPO)}))
        elif name in ("sentence_transformers", "sentence_transformers_threads"):
            command = [sys.executable, __file__, "--serve-st", str(directory), "--port", str(port),
                       "--device", args.device, "--dtype", args.dtype, "--batch-size", str(args.batch_size)]
            command += ["--st-threads"] if name.endswith("threads") else []
            servers.append(Server(name, command, port, "/v1/embeddings", env))
        elif name == "infinity":
            if not args.infinity_python:
                print("infinity: skipped (no --infinity-python)", flush=True)
                continue
            launcher = pathlib.Path(args.infinity_python).parent / "infinity_emb"
            command = [str(launcher), "v2", "--model-id", str(directory), "--served-model-name", model_name,
                       "--host", "127.0.0.1", "--port", str(port), "--engine", "torch", "--device", args.device,
                       "--batch-size", str(args.batch_size), "--dtype", args.dtype, "--no-bettertransformer",
                       "--url-prefix", "/v1", "--log-level", "warning"]
            servers.append(Server(name, command, port, "/v1/embeddings",
                                  {**env, "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}))
    try:
        for server in servers:
            server.wait_ready(args.startup_timeout, model_name)
            print(f"{server.name}: ready on {server.url}", flush=True)
    except BaseException:
        for server in servers:  # leave no server behind
            server.stop()
        raise
    return servers


# -- load ----------------------------------------------------------------------------------------


async def load(server: Server, texts: list[str], tokens: list[int], concurrency: int, duration: float,
               model_name: str) -> dict:
    """`concurrency` clients, each sending one text per request back to back for `duration` s."""
    import httpx

    latencies, done_tokens, errors = [], 0, 0
    cursor = iter(range(10**9))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        async def one(index: int) -> tuple[float, bool]:
            started = time.perf_counter()
            response = await client.post(server.path, json={"input": [texts[index]], "model": model_name})
            ok = response.status_code == 200 and len(response.json()["data"]) == 1
            return time.perf_counter() - started, ok

        await asyncio.gather(*(one(i % len(texts)) for i in range(concurrency)))  # open every connection
        end = time.perf_counter() + duration

        async def client_loop():
            nonlocal done_tokens, errors
            while time.perf_counter() < end:
                index = next(cursor) % len(texts)
                latency, ok = await one(index)
                if ok:
                    latencies.append(latency)
                    done_tokens += tokens[index]
                else:
                    errors += 1

        started, cpu_before = time.perf_counter(), server.cpu_seconds()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, server.cpu_seconds() - cpu_before
    latencies.sort()
    return {
        "texts_per_s": len(latencies) / elapsed,
        "tokens_per_s": done_tokens / elapsed,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else None,
        "texts_per_cpu_s": len(latencies) / cpu if cpu > 0 else None,
        "server_cores_busy": cpu / elapsed,
        "requests": len(latencies),
        "errors": errors,
    }


def summarize(results: dict) -> list[dict]:
    """Per server and concurrency: medians over the rounds, and the median over rounds of the
    throughput ratio to each peer measured in the same round (noise on a shared machine moves
    both sides of a ratio together)."""
    table = []
    for name, by_level in results.items():
        for concurrency, rounds in by_level.items():
            row = {"server": name, "concurrency": concurrency, "rounds": rounds}
            for key in ("texts_per_s", "tokens_per_s", "p50_ms", "p99_ms", "texts_per_cpu_s", "server_cores_busy"):
                row[key] = statistics.median(r[key] for r in rounds)
            row["errors"] = sum(r["errors"] for r in rounds)
            # The sentence-transformers baseline is the faster of its two servers in each round.
            st_rounds = [results[n][concurrency] for n in ST_SERVERS if concurrency in results.get(n, {})]
            best_st = [max(rs, key=lambda r: r["texts_per_s"]) for rs in zip(*st_rounds)] if st_rounds else []
            best_st_cpu = [max(rs, key=lambda r: r["texts_per_cpu_s"]) for rs in zip(*st_rounds)] if st_rounds else []
            infinity = results.get("infinity", {}).get(concurrency, [])
            for peer, peer_rounds, key in (("sentence_transformers", best_st, "texts_per_s"),
                                           ("infinity", infinity, "texts_per_s"),
                                           ("sentence_transformers_cpu", best_st_cpu, "texts_per_cpu_s"),
                                           ("infinity_cpu", infinity, "texts_per_cpu_s")):
                ratios = [r[key] / p[key] for r, p in zip(rounds, peer_rounds) if p[key]]
                row[f"vs_{peer}"] = statistics.median(ratios) if ratios else float("nan")
            table.append(row)
    return table


def check_outputs(servers: list[Server], texts: list[str], directory: pathlib.Path, model_name: str) -> dict:
    """Max |difference| of each server's embeddings from SentenceTransformer.encode (same texts)."""
    import httpx
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(directory), device="cpu").encode(texts[:8])
    out = {}
    for server in servers:
        body = httpx.post(server.url + server.path, json={"input": texts[:8], "model": model_name}, timeout=60).json()
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        out[server.name] = float(np.abs(got - expected).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-st", help=argparse.SUPPRESS)  # internal: run the sentence-transformers server
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--st-threads", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--mean-tokens", type=float, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' and infinity's")
    parser.add_argument("--max-batch-tokens", type=int, default=8192, help="roberta_torch's")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="roberta_torch's")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per server")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--serve-args", default="", help="more `roberta-torch serve` options, e.g. '--workers 2'")
    parser.add_argument("--infinity-python", help="a Python with infinity-emb[server] installed")
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--tag", default="", help="suffix of the result file: serve_<device><tag>.json")
    args = parser.parse_args()
    if args.serve_st:
        return serve_sentence_transformers(args.serve_st, args.port, args.device, args.dtype, args.batch_size,
                                           args.st_threads)
    args.servers = [s for s in args.servers.split(",") if s]
    levels = [int(c) for c in args.concurrency.split(",")]
    model_name = "bench-model"

    import transformers

    texts = make_texts(args.texts, args.mean_tokens, seed=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(HERE.parent / "tests/fixtures/tokenizers/roberta_whitespace_hf"))
    tokens = [min(512, len(ids)) for ids in tokenizer(texts)["input_ids"]]
    results: dict = {}
    with tempfile.TemporaryDirectory() as root:
        directory = build_directory(pathlib.Path(root), args.layers, args.size)
        servers = start_servers(args, directory, model_name)
        try:
            differences = check_outputs(servers, texts, directory, model_name)
            rng = np.random.default_rng(0)
            for concurrency in levels:
                for round_index in range(args.repeats):  # every server once per round, in a fresh order
                    for server in [servers[i] for i in rng.permutation(len(servers))]:
                        row = asyncio.run(load(server, texts, tokens, concurrency, args.duration, model_name))
                        results.setdefault(server.name, {}).setdefault(concurrency, []).append(row)
                        print(f"c={concurrency:<3d} round {round_index + 1} {server.name:22s} "
                              f"{row['texts_per_s']:8.1f} texts/s  p50 {row['p50_ms']:8.1f} ms  "
                              f"p99 {row['p99_ms']:8.1f} ms  errors {row['errors']}", flush=True)
        finally:
            for server in servers:
                server.stop()

    table = summarize(results)
    print(f"\n{'server':30s} {'conc':>4s} {'texts/s':>8s} {'tokens/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'vs ST':>6s} {'vs inf':>6s} | {'texts/cpu-s':>11s} {'vs ST':>6s} {'vs inf':>6s} {'cores':>5s}")
    for row in table:
        print(f"{row['server']:30s} {row['concurrency']:4d} {row['texts_per_s']:8.1f} {row['tokens_per_s']:8.0f} "
              f"{row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {row['vs_sentence_transformers']:6.2f} "
              f"{row['vs_infinity']:6.2f} | {row['texts_per_cpu_s']:11.2f} {row['vs_sentence_transformers_cpu']:6.2f} "
              f"{row['vs_infinity_cpu']:6.2f} {row['server_cores_busy']:5.2f}")
    print("max |difference| from SentenceTransformer.encode:", {k: f"{v:.1e}" for k, v in differences.items()})
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        cpu = platform.processor() or platform.machine()
        try:
            cpu = re.search(r"Model name:\s*(.+)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout).group(1)
        except Exception:
            pass
        import torch

        report = {"device": args.device, "dtype": args.dtype, "cpu": cpu, "cpu_count": os.cpu_count(),
                  "torch": torch.__version__, "threads": args.threads, "layers": args.layers, "size": args.size,
                  "texts": args.texts, "mean_tokens": args.mean_tokens, "duration_s": args.duration,
                  "repeats": args.repeats, "rows": table, "max_abs_difference": differences, "argv": sys.argv[1:]}
        (args.out / f"serve_{args.device}{args.tag}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
