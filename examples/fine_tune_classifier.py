"""Fine-tune a RobertaTextClassifier (a preset backbone + keras_hub's classification head) on a
CSV of (text, label), and save it as a Keras task preset (keras_hub and roberta_torch load it).

    python examples/fine_tune_classifier.py                    # offline: tiny preset, shipped CSV
    python examples/fine_tune_classifier.py --preset roberta_base_en --save out/
    torchrun --nproc_per_node=2 examples/fine_tune_classifier.py --steps 3 --check-replicas-in-sync

Under torchrun each process trains a replica on its shard of the data (DistributedDataParallel:
gloo on CPU, nccl on GPU); --batch-size is per process; rank 0 shows progress, evaluates, saves.
"""

import argparse, csv, itertools, os, pathlib, random, time  # noqa: E401

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import roberta_torch

DATA = pathlib.Path(__file__).parent / "data" / "topics.csv"
EVAL_FRACTION = 0.2  # rows held out for accuracy
# (lr, epochs): pretrained presets are fine-tuned gently; the tiny preset's weights are random.
DEFAULTS, TINY_DEFAULTS = (2e-5, 3), (5e-3, 20)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="roberta_tiny_random", help="builtin name, kaggle://, hf:// or a directory")
    p.add_argument("--csv", type=pathlib.Path, default=DATA, help="a CSV with columns text,label")
    p.add_argument("--epochs", type=int, help="passes over the data (default: 3; 20 for roberta_tiny_random)")
    p.add_argument("--steps", type=int, help="stop after this many optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=16, help="per process (default: %(default)s)")
    p.add_argument("--lr", type=float, help="AdamW peak learning rate (default: 2e-5; 5e-3 for roberta_tiny_random)")
    p.add_argument("--sequence-length", type=int, default=128, help="most tokens per text (default: %(default)s)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bfloat16 autocast (auto: if native)")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--check-replicas-in-sync", action="store_true", help="at the end, exit 1 unless all ranks agree")
    p.add_argument("--save", type=pathlib.Path, metavar="DIR", help="write the classifier as a Keras task preset")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    lr, epochs = TINY_DEFAULTS if args.preset == "roberta_tiny_random" else DEFAULTS
    args.lr, args.epochs = args.lr or lr, args.epochs or epochs
    return args


def read_rows(path: pathlib.Path, seed: int):
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if not {"text", "label"} <= set(reader.fieldnames or ()):
            raise SystemExit(f"--csv {path}: the first line must name the columns text,label; got {reader.fieldnames}")
        rows = [(row["text"], row["label"]) for row in reader]
    labels = sorted({label for _, label in rows})
    rows = [(text, labels.index(label)) for text, label in rows]
    random.Random(seed).shuffle(rows)  # the same split on every rank
    num_eval = max(1, round(len(rows) * EVAL_FRACTION))
    return rows[num_eval:], rows[:num_eval], labels


def setup_distributed():
    """(rank, world size, device); a process group only when launched by torchrun."""
    cuda, local_rank = torch.cuda.is_available(), int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, device
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def bf16_enabled(choice: str, device: torch.device) -> bool:
    """auto: where bfloat16 is native (CPU autocast works everywhere, but is slow without AVX512-BF16)."""
    if choice != "auto":
        return choice == "on"
    cpu_native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_native()


def max_replica_difference(model: nn.Module, world_size: int) -> float:
    """All-gather two float64 checksums per parameter tensor (a sum and a position-weighted sum)."""
    sums = []
    for flat in (p.detach().double().flatten() for p in model.parameters()):
        position = torch.linspace(1.0, 2.0, flat.numel(), dtype=flat.dtype, device=flat.device)
        sums.append(torch.stack([flat.sum(), (flat * position).sum()]))
    local = torch.stack(sums)  # (num_parameter_tensors, 2)
    gathered = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(gathered, local) if world_size > 1 else gathered[0].copy_(local)
    return max((g - local).abs().max().item() for g in gathered)


def batches(loader: DataLoader, sampler):
    """Batches epoch after epoch; set_epoch gives each epoch a new shuffle, the same on every rank."""
    for epoch in itertools.count():
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader


def main() -> int:
    args = parse_args()
    rank, world_size, device = setup_distributed()
    log = print if rank == 0 else (lambda *a, **k: None)
    train_rows, eval_rows, labels = read_rows(args.csv, args.seed)

    torch.manual_seed(args.seed)  # the same initial head everywhere (DDP also broadcasts rank 0's)
    # keras_hub's head (dropout -> dense, tanh -> dropout -> logits) on the pretrained backbone.
    classifier = roberta_torch.RobertaTextClassifier.from_preset(
        args.preset, num_classes=len(labels), dropout=0.1, id2label=dict(enumerate(labels)))
    backbone = classifier.backbone.set_gradient_checkpointing(args.gradient_checkpointing)
    preprocessor = roberta_torch.Preprocessor.from_preset(  # compile: fixed shapes, one graph
        args.preset, sequence_length=min(args.sequence_length, backbone.max_sequence_length),
        pad_to_sequence_length=args.compile)
    classifier = classifier.to(device).train()
    model = DistributedDataParallel(classifier) if world_size > 1 else classifier
    train_model = torch.compile(model) if args.compile else model
    torch.manual_seed(args.seed + rank)  # different dropout masks on each replica

    def collate(rows):  # -> ({"token_ids", "padding_mask"} (B, T), labels (B,)), on the device
        inputs = preprocessor([text for text, _ in rows])
        return {k: v.to(device) for k, v in inputs.items()}, torch.tensor([y for _, y in rows], device=device)

    sampler = DistributedSampler(train_rows, world_size, rank, seed=args.seed) if world_size > 1 else None
    loader = DataLoader(train_rows, args.batch_size, shuffle=sampler is None, sampler=sampler, collate_fn=collate,
                        drop_last=True)
    total_steps = args.steps or args.epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, total_steps // 10)  # linear warm-up, then linear decay to 0
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, (total_steps - s) / max(1, total_steps - warmup)))
    use_bf16 = bf16_enabled(args.bf16, device)
    autocast = lambda: torch.autocast(device.type, torch.bfloat16, enabled=use_bf16)  # noqa: E731
    log(f"{args.preset} ({backbone.num_parameters():,} parameters), {len(train_rows)}/{len(eval_rows)} train/eval "
        f"rows, classes {labels}, {world_size} x {device.type}, bf16 {use_bf16}, compile {args.compile}, "
        f"gradient checkpointing {args.gradient_checkpointing}")

    losses, start = [], time.perf_counter()
    progress = tqdm(itertools.islice(batches(loader, sampler), total_steps), "fine-tune", total_steps,
                    unit="step", disable=rank != 0)
    for inputs, targets in progress:
        with autocast():
            logits = train_model(**inputs)
        loss = nn.functional.cross_entropy(logits.float(), targets)
        loss.backward()  # under DDP, gradients are all-reduced (averaged) here
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.4f}")
    log(f"trained {len(losses)} steps in {time.perf_counter() - start:.1f} s; loss {losses[0]:.4f} -> "
        f"{sum(losses[-10:]) / len(losses[-10:]):.4f} (mean of the last 10 steps)")

    status = 0
    if args.check_replicas_in_sync:
        difference = max_replica_difference(classifier, world_size)
        status = int(difference != 0.0)  # identical all-reduced gradients keep replicas bit-identical
        log(f"replicas {'in sync' if status == 0 else 'OUT OF SYNC'} across {world_size} process(es): "
            f"max |parameter checksum difference| = {difference:.3e}")
    if rank == 0:
        classifier.eval()
        with torch.no_grad(), autocast():
            correct = sum((classifier(**inputs).argmax(-1) == targets).sum().item()
                          for inputs, targets in DataLoader(eval_rows, 64, collate_fn=collate))
        majority = max(sum(y == c for _, y in eval_rows) for c in range(len(labels)))
        log(f"eval accuracy: {correct / len(eval_rows):.3f} ({correct}/{len(eval_rows)}); "
            f"majority class: {majority / len(eval_rows):.3f}")
    if rank == 0 and args.save:  # task.json + task.weights.h5 + the backbone + the preset's tokenizer
        classifier.save_to_preset(args.save)
        reloaded = roberta_torch.RobertaTextClassifier.from_preset(str(args.save))
        texts = [text for text, _ in eval_rows[:3]]
        with torch.no_grad():
            predicted = reloaded(preprocessor(texts)).argmax(-1).tolist()
        log(f"saved the fine-tuned classifier to {args.save} (labels {labels}); reloaded, it predicts "
            + "; ".join(f"{text!r} -> {labels[p]}" for text, p in zip(texts, predicted)))
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
