"""LoRA fine-tuning of a RobertaTextClassifier with PEFT: wrap, train the adapter (and the
head), merge it into the weights, save as an ordinary preset, reload; optionally save the
adapter in PEFT's transformers layout (transformers + PEFT load it).

    python examples/fine_tune_peft.py                          # offline: tiny preset, shipped CSV
    python examples/fine_tune_peft.py --preset roberta_base_en --steps 300 --save out/ --adapter out_adapter/

What a user writes is PEFT's own recipe: `peft.get_peft_model(model, LoraConfig(...))`. The
model's `config` tells PEFT it is a RoBERTa (model_type "roberta"), so LoRA lands on PEFT's
default RoBERTa targets, the attention's `query` and `value`; task_type SEQ_CLS puts the
classifier's head (`classifier`: dense, out_proj) in `modules_to_save`, trained in full, as on
transformers' RobertaForSequenceClassification. Every module is a
plain Linear (x W^T + b), so `merge_and_unload()` gives the model the adapter computed.
"""

import argparse, csv, pathlib, random  # noqa: E401

import peft
import torch

import roberta_torch
import roberta_torch.peft

DATA = pathlib.Path(__file__).parent / "data" / "topics.csv"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="roberta_tiny_random", help="builtin name, kaggle://, hf:// or a directory")
    p.add_argument("--csv", type=pathlib.Path, default=DATA, help="a CSV with columns text,label")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-2, help="learning rate (default: %(default)s)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r (default: %(default)s)")
    p.add_argument("--sequence-length", type=int, default=64)
    p.add_argument("--save", type=pathlib.Path, metavar="DIR", help="write the merged classifier as a preset")
    p.add_argument("--adapter", type=pathlib.Path, metavar="DIR", help="write the adapter for transformers + PEFT")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def read_rows(path: pathlib.Path):
    with open(path, newline="", encoding="utf-8") as file:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(file)]
    labels = sorted({label for _, label in rows})
    return [text for text, _ in rows], torch.tensor([labels.index(y) for _, y in rows]), labels


def main() -> int:
    args = parse_args()
    torch.manual_seed(args.seed)
    texts, targets, labels = read_rows(args.csv)
    model = roberta_torch.RobertaTextClassifier.from_preset(
        args.preset, num_classes=len(labels), id2label=dict(enumerate(labels)))
    preprocessor = roberta_torch.Preprocessor.from_preset(
        args.preset, sequence_length=min(args.sequence_length, model.backbone.max_sequence_length))

    config = peft.LoraConfig(task_type="SEQ_CLS", r=args.rank, lora_alpha=2 * args.rank)
    peft_model = peft.get_peft_model(model, config)
    targets_found = sorted({name.rsplit(".", 1)[-1] for name in peft_model.base_model.targeted_module_names})
    trainable, total = peft_model.get_nb_trainable_parameters()
    print(f"{args.preset}: LoRA r={args.rank} on {targets_found}, head in modules_to_save; "
          f"{trainable:,} of {total:,} parameters train")

    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=args.lr)
    order = random.Random(args.seed)
    losses = []
    peft_model.train()
    for _ in range(args.steps):
        rows = order.sample(range(len(texts)), min(args.batch_size, len(texts)))
        batch = preprocessor([texts[i] for i in rows])  # {"token_ids", "padding_mask"}
        loss = peft_model(input_ids=batch["token_ids"], attention_mask=batch["padding_mask"], labels=targets[rows]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    print(f"trained {args.steps} steps; loss {losses[0]:.4f} -> {sum(losses[-5:]) / len(losses[-5:]):.4f} (last 5)")

    peft_model.eval()
    probe = preprocessor(texts[:32])
    with torch.no_grad():
        adapted = peft_model(input_ids=probe["token_ids"], attention_mask=probe["padding_mask"]).logits
    if args.adapter:  # adapter_config.json + adapter_model.safetensors, transformers' module names
        roberta_torch.peft.save_adapter(peft_model, args.adapter)
        print(f"adapter saved to {args.adapter} (PEFT's layout for transformers' RobertaForSequenceClassification)")

    merged = peft_model.merge_and_unload()  # our RobertaTextClassifier again, LoRA folded in
    with torch.no_grad():
        merged_logits = merged(probe)
    error = float((merged_logits - adapted).abs().max() / adapted.abs().max())
    print(f"merged: {type(merged).__name__}, relative difference to the adapter's outputs {error:.1e}")

    if args.save:
        merged.save_to_preset(args.save)
        reloaded = roberta_torch.RobertaTextClassifier.from_preset(str(args.save))
        with torch.no_grad():
            same = torch.allclose(reloaded(probe), merged_logits, rtol=1e-5, atol=1e-6)
        print(f"saved to {args.save}; reloaded, same outputs: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
