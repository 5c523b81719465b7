"""Question answering and token classification (NER-style tagging) inference.

    python examples/question_answering.py                       # offline: tiny preset, fresh heads
    python examples/question_answering.py --preset hf://deepset/roberta-base-squad2 \\
        --question "Where did the cat sit?" --context "The cat sat on the mat."

A transformers `RobertaForQuestionAnswering` / `RobertaForTokenClassification` checkpoint loads
with its head; a backbone preset (the default, whose weights are random) gets a fresh head, so
the answers below only show the mechanics: token logits -> character spans in the text.
"""

import argparse

import torch

import roberta_torch
from roberta_torch.tasks.span import answer_question

QUESTION = "Where did the cat sit?"
CONTEXT = "The cat sat on the mat while the dog slept in the garden."


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="roberta_tiny_random", help="builtin name, kaggle://, hf:// or a directory")
    p.add_argument("--tagger-preset", help="a token-classification checkpoint (default: --preset, fresh head)")
    p.add_argument("--question", default=QUESTION)
    p.add_argument("--context", default=CONTEXT)
    p.add_argument("--max-answer-length", type=int, default=15, help="most tokens in an answer")
    p.add_argument("--doc-stride", type=int, help="tokens shared by consecutive windows of a long context")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    torch.manual_seed(args.seed)  # fresh heads are random
    tokenizer = roberta_torch.Tokenizer.from_preset(args.preset)
    reader = roberta_torch.RobertaQuestionAnswerer.from_preset(args.preset)
    answer = answer_question(reader, tokenizer, args.question, args.context, args.max_answer_length, doc_stride=args.doc_stride)
    print(f"question: {args.question!r}\ncontext: {args.context!r}")
    print(
        f"answer: {answer.text!r} (characters {answer.start}-{answer.end}, score {answer.score:.3f}, "
        f"probability {answer.probability:.3f})"
    )

    tagger_preset = args.tagger_preset or args.preset
    kwargs = {} if args.tagger_preset else {"num_classes": 3, "id2label": {0: "O", 1: "B-ANIMAL", 2: "I-ANIMAL"}}
    tagger = roberta_torch.RobertaTokenClassifier.from_preset(tagger_preset, **kwargs)
    ids, offsets = tokenizer.encode_with_offsets(args.context)
    token_ids = torch.tensor([[tokenizer.start_token_id, *ids, tokenizer.end_token_id]])
    with torch.no_grad():
        labels = tagger({"token_ids": token_ids, "padding_mask": torch.ones_like(token_ids)})[0, 1:-1].argmax(-1)
    names = tagger.id2label or {i: str(i) for i in range(tagger.num_classes)}
    tags = [f"{args.context[s:e]}/{names[int(label)]}" for (s, e), label in zip(offsets, labels) if e > s]
    print(f"token tags ({len(tags)} tokens): " + " ".join(tags))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
