"""Fine-tune a RobertaTextClassifier with Hugging Face's `transformers.Trainer`: the model goes
in as it is (no wrapper, no label_names), the data is a `datasets.Dataset` tokenized with our
preprocessor, and the result is saved as a Keras task preset.

    python examples/fine_tune_trainer.py                     # offline: tiny preset, shipped CSV
    python examples/fine_tune_trainer.py --preset roberta_base_en --save out/ --bf16

Trainer reads what the model returns with `labels=`: a dict {"loss", "logits"} (TaskOutput).
It keeps the dataset columns the model's forward takes (token_ids, padding_mask, labels; the
"label" column is renamed "labels" by its default collator) and drops the text.
"""

import argparse, csv, pathlib, random, tempfile  # noqa: E401

import datasets
import numpy as np
import torch
import transformers

import roberta_torch

DATA = pathlib.Path(__file__).parent / "data" / "topics.csv"
EVAL_FRACTION = 0.2
# (lr, epochs): pretrained presets are fine-tuned gently; the tiny preset's weights are random.
DEFAULTS, TINY_DEFAULTS = (2e-5, 3), (5e-3, 20)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="roberta_tiny_random", help="builtin name, kaggle://, hf:// or a directory")
    p.add_argument("--csv", type=pathlib.Path, default=DATA, help="a CSV with columns text,label")
    p.add_argument("--epochs", type=float, help="passes over the data (default: 3; 20 for roberta_tiny_random)")
    p.add_argument("--steps", type=int, default=-1, help="stop after this many optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="peak learning rate (default: 2e-5; 5e-3 for roberta_tiny_random)")
    p.add_argument("--sequence-length", type=int, default=64, help="most tokens per text (default: %(default)s)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (autocast)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--output-dir", type=pathlib.Path, help="Trainer's output directory (default: a temporary one)")
    p.add_argument("--save", type=pathlib.Path, metavar="DIR", help="write the classifier as a Keras task preset")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    lr, epochs = TINY_DEFAULTS if args.preset == "roberta_tiny_random" else DEFAULTS
    args.lr, args.epochs = args.lr or lr, args.epochs or epochs
    return args


def read_splits(path: pathlib.Path, seed: int):
    """(train, eval) datasets.Dataset of {"text", "label"} and the sorted label names."""
    with open(path, newline="", encoding="utf-8") as file:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(file)]
    labels = sorted({label for _, label in rows})
    random.Random(seed).shuffle(rows)
    num_eval = max(1, round(len(rows) * EVAL_FRACTION))
    as_dataset = lambda part: datasets.Dataset.from_dict(  # noqa: E731
        {"text": [t for t, _ in part], "label": [labels.index(y) for _, y in part]})
    return as_dataset(rows[num_eval:]), as_dataset(rows[:num_eval]), labels


def main() -> int:
    args = parse_args()
    train, evaluation, labels = read_splits(args.csv, args.seed)
    torch.manual_seed(args.seed)
    model = roberta_torch.RobertaTextClassifier.from_preset(
        args.preset, num_classes=len(labels), dropout=0.1, id2label=dict(enumerate(labels)))
    # Rows padded to one length, so Trainer's default collator can stack them.
    preprocessor = roberta_torch.Preprocessor.from_preset(
        args.preset, sequence_length=min(args.sequence_length, model.backbone.max_sequence_length),
        pad_to_sequence_length=True)
    tokenize = lambda batch: {k: v.numpy() for k, v in preprocessor(batch["text"]).items()}  # noqa: E731
    train, evaluation = (part.map(tokenize, batched=True) for part in (train, evaluation))

    def accuracy(prediction: transformers.EvalPrediction) -> dict:
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    output_dir = args.output_dir or pathlib.Path(tempfile.mkdtemp(prefix="roberta_trainer_"))
    training_args = transformers.TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=args.epochs, max_steps=args.steps,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64, learning_rate=args.lr,
        weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,
        bf16=args.bf16, activation_checkpointing=args.gradient_checkpointing, eval_strategy="no",
        save_strategy="no", logging_steps=5, report_to="none", disable_tqdm=True, seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = transformers.Trainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=evaluation, compute_metrics=accuracy)
    print(f"{args.preset}: {len(train)}/{len(evaluation)} train/eval rows, classes {labels}, bf16 {args.bf16}, "
          f"gradient checkpointing {model.is_gradient_checkpointing or args.gradient_checkpointing}")
    result = trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print(f"trained {result.global_step} steps; training loss {logged[0]:.4f} -> {logged[-1]:.4f} "
          f"(logged every {training_args.logging_steps} steps)")

    metrics = trainer.evaluate()
    correct = round(metrics["eval_accuracy"] * len(evaluation))
    majority = max(np.bincount(evaluation["label"])) / len(evaluation)
    print(f"eval loss {metrics['eval_loss']:.4f}; eval accuracy: {metrics['eval_accuracy']:.3f} "
          f"({correct}/{len(evaluation)}); majority class: {majority:.3f}")
    predictions = trainer.predict(evaluation)
    print(f"predict: {predictions.predictions.shape[0]} predictions for {len(evaluation)} rows")

    if args.save:  # task.json + task.weights.h5 + the backbone + the preset's tokenizer
        model.save_to_preset(args.save)
        reloaded = roberta_torch.RobertaTextClassifier.from_preset(str(args.save))
        with torch.no_grad():
            logits = reloaded(**preprocessor(list(evaluation["text"])))
        same = bool(np.array_equal(logits.argmax(-1).numpy(), predictions.predictions.argmax(-1)))
        print(f"saved to {args.save}; reloaded, it predicts as the trained model: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
