"""Continue pretraining a preset with the masked-LM objective (keras_hub's dynamic masking),
then save it as a Keras task preset (keras_hub's MaskedLM.from_preset loads it).

    python examples/masked_lm_pretraining.py                    # offline: tiny preset, shipped text
    python examples/masked_lm_pretraining.py --preset roberta_base_en --steps 1000 --save out/

Each step masks a fresh 15 % of the tokens (80 % <mask>, 10 % random, 10 % kept); the head
runs only on the masked positions, so the vocabulary projection stays small.
"""

import argparse, itertools, pathlib, random  # noqa: E401

import torch
from tqdm import tqdm

import roberta_torch

DATA = pathlib.Path(__file__).parent / "data" / "sentences.txt"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="roberta_tiny_random", help="builtin name, kaggle://, hf:// or a directory")
    p.add_argument("--text", type=pathlib.Path, default=DATA, help="a text file, one document per line")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--sequence-length", type=int, default=64)
    p.add_argument("--save", type=pathlib.Path, metavar="DIR", help="write the model as a Keras task preset")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = [line.strip() for line in args.text.read_text(encoding="utf-8").splitlines() if line.strip()]
    model = roberta_torch.RobertaMaskedLM.from_preset(args.preset).to(device).train()
    preprocessor = roberta_torch.MaskedLMPreprocessor.from_preset(
        args.preset, sequence_length=min(args.sequence_length, model.backbone.max_sequence_length), seed=args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    print(f"{args.preset}: {type(model).__name__}, {len(lines)} lines, {args.steps} steps on {device.type}")

    rng = random.Random(args.seed)
    losses = []
    for _ in tqdm(range(args.steps), "masked-LM", unit="step"):
        x, mask_ids, mask_weights = preprocessor(rng.sample(lines, min(args.batch_size, len(lines))))
        x = {k: v.to(device) for k, v in x.items()}
        logits = model(x)  # (B, mask_selection_length, V): only the masked positions
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), mask_ids.flatten().to(device),
                                                 reduction="none")
        weights = mask_weights.flatten().to(device)
        loss = (loss * weights).sum() / weights.sum().clamp(min=1.0)
        loss.backward()
        optimizer.step(), optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    window = max(1, min(5, len(losses) // 2))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    print(f"masked-token loss {first:.4f} -> {last:.4f} (mean of the first / last {window} steps)")

    if args.save:
        model.eval().save_to_preset(args.save)
        print(f"saved the masked LM to {args.save} (task.json + task.weights.h5 + backbone + tokenizer)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
