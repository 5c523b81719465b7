"""Fine-tune a RobertaTextClassifier with PyTorch Lightning: bfloat16 mixed precision where the
hardware has it, a checkpoint after every epoch, and the model restored from the last one.

    python examples/fine_tune_lightning.py                   # offline: tiny preset, shipped CSV
    python examples/fine_tune_lightning.py --preset roberta_base_en --precision bf16-mixed

The LightningModule holds the task model as it is: `training_step` returns
`model(batch).loss` (the batch dict carries its labels), and Lightning's checkpoint is the
plain state dict plus the hyperparameters that rebuild the module (`load_from_checkpoint`).
"""

import argparse, csv, pathlib, random, tempfile  # noqa: E401

import lightning
import torch
from torch.utils.data import DataLoader

import roberta_torch

DATA = pathlib.Path(__file__).parent / "data" / "topics.csv"
EVAL_FRACTION = 0.2


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="roberta_tiny_random", help="builtin name, kaggle://, hf:// or a directory")
    p.add_argument("--csv", type=pathlib.Path, default=DATA, help="a CSV with columns text,label")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=-1, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="AdamW learning rate (default: 2e-5; 5e-3 for roberta_tiny_random)")
    p.add_argument("--precision", help="Lightning precision (default: bf16-mixed where bfloat16 is native, else 32-true)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--checkpoints", type=pathlib.Path, help="checkpoint directory (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.lr = args.lr or (5e-3 if args.preset == "roberta_tiny_random" else 2e-5)
    return args


def native_bf16() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()


class Classifier(lightning.LightningModule):
    def __init__(self, preset: str, labels: list, lr: float, gradient_checkpointing: bool = False):
        super().__init__()
        self.save_hyperparameters()  # what load_from_checkpoint passes back to __init__
        self.model = roberta_torch.RobertaTextClassifier.from_preset(
            preset, num_classes=len(labels), dropout=0.1, id2label=dict(enumerate(labels))).train()
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()

    def forward(self, batch):
        return self.model(batch)

    def training_step(self, batch, batch_index):
        loss = self.model(batch).loss  # batch: {"token_ids", "padding_mask", "labels"}
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_index):
        out = self.model(batch)
        accuracy = (out.logits.argmax(-1) == batch["labels"]).float().mean()
        self.log_dict({"val_loss": out.loss, "val_accuracy": accuracy}, batch_size=len(batch["labels"]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)


def read_rows(path: pathlib.Path, seed: int):
    with open(path, newline="", encoding="utf-8") as file:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(file)]
    labels = sorted({label for _, label in rows})
    rows = [(text, labels.index(label)) for text, label in rows]
    random.Random(seed).shuffle(rows)
    num_eval = max(1, round(len(rows) * EVAL_FRACTION))
    return rows[num_eval:], rows[:num_eval], labels


def main() -> int:
    args = parse_args()
    lightning.seed_everything(args.seed, verbose=False)
    train_rows, eval_rows, labels = read_rows(args.csv, args.seed)
    module = Classifier(args.preset, labels, args.lr, args.gradient_checkpointing)
    preprocessor = roberta_torch.Preprocessor.from_preset(args.preset, sequence_length=128)

    def collate(rows):  # -> {"token_ids", "padding_mask"} (B, T) padded to the longest row, "labels" (B,)
        return {**preprocessor([text for text, _ in rows]), "labels": torch.tensor([y for _, y in rows])}

    train = DataLoader(train_rows, args.batch_size, shuffle=True, collate_fn=collate)
    evaluation = DataLoader(eval_rows, 64, collate_fn=collate)
    precision = args.precision or ("bf16-mixed" if native_bf16() else "32-true")
    directory = args.checkpoints or pathlib.Path(tempfile.mkdtemp(prefix="roberta_lightning_"))

    def make_trainer(max_epochs: int, max_steps: int):
        checkpoints = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=directory, save_last=True, save_top_k=-1)
        return lightning.Trainer(
            max_epochs=max_epochs, max_steps=max_steps, precision=precision, callbacks=[checkpoints],
            gradient_clip_val=1.0, logger=False, enable_progress_bar=False, enable_model_summary=False,
            deterministic=True,
        ), checkpoints

    trainer, checkpoints = make_trainer(args.epochs, args.steps)
    print(f"{args.preset}: {len(train_rows)}/{len(eval_rows)} train/eval rows, classes {labels}, precision "
          f"{precision}, gradient checkpointing {module.model.is_gradient_checkpointing}")
    trainer.fit(module, train, evaluation)
    metrics = trainer.callback_metrics
    print(f"trained {trainer.global_step} steps; val loss {float(metrics['val_loss']):.4f}, "
          f"val accuracy {float(metrics['val_accuracy']):.3f}")

    # Restore the module from the last checkpoint (rebuilt from its hyperparameters + state dict).
    restored = Classifier.load_from_checkpoint(checkpoints.last_model_path).eval()
    module.eval()
    batch = next(iter(evaluation))
    with torch.no_grad():
        same = torch.equal(restored(batch).logits, module(batch).logits)
    saved = sorted(path.name for path in directory.glob("*.ckpt"))
    print(f"checkpoints: {', '.join(saved)}; restored from {pathlib.Path(checkpoints.last_model_path).name}, "
          f"outputs identical: {same}")
    # And resume training from it for one more epoch (optimizer state and step count come back).
    resumed, _ = make_trainer(trainer.current_epoch + 1, -1 if args.steps < 0 else args.steps + 2)
    resumed.fit(Classifier(args.preset, labels, args.lr), train, evaluation, ckpt_path=checkpoints.last_model_path)
    print(f"resumed at step {trainer.global_step}, now at step {resumed.global_step}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
