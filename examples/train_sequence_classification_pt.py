"""Fine-tune a sequence classifier (PyTorch): is a snippet of text as written, or upper-cased?

The task is built from the same corpus as the language-model examples, so it needs no download: snippets of
random length are right-padded (the model classifies from the last non-padding token, `pad_token_id`), and
the ASCII letters of half of them are upper-cased — easy enough that a tiny model learns it in a few steps.
Start from a causal-LM checkpoint of any twin with `--model` (its LM head is dropped and a fresh `score` head
added), or from a fresh model. The result is written with `save_pretrained` and loads in the TensorFlow and
Flax `*ForSequenceClassification` twins.

    python examples/train_causal_lm_pt.py --output-dir runs/lm
    python examples/train_sequence_classification_pt.py --model runs/lm --output-dir runs/cls
"""

from __future__ import annotations

import os

import numpy as np
import torch
from common import (
    EOS_ID,
    base_parser,
    check_args,
    check_vocab,
    encode,
    epoch_order,
    make_blocks,
    make_config,
    read_corpus,
    report,
    write_log,
)
from tqdm.auto import tqdm

from twinformers.pt import AutoModelForSequenceClassification

LABELS = {0: "as written", 1: "upper-cased"}


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.split("\n\n")[0], max_steps=200, learning_rate=3e-4, block_size=64)
    parser.add_argument("--eval-every", type=int, default=50)
    args = parser.parse_args(argv)
    check_args(args)
    return args


def make_examples(blocks: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Right-padded snippets of random length (at least half a block), half of them upper-cased.

    Returns:
        input_ids, attention_mask: (N, block_size); labels: (N,) 1 = upper-cased.
    """
    rng = np.random.default_rng(seed)
    count, block_size = blocks.shape
    lengths = rng.integers(max(1, block_size // 2), block_size + 1, size=count)
    labels = rng.permutation(np.arange(count) % 2)
    input_ids = np.full_like(blocks, EOS_ID)
    for i, (length, label) in enumerate(zip(lengths, labels)):
        snippet = blocks[i, :length]
        lower = (snippet >= ord("a")) & (snippet <= ord("z"))
        input_ids[i, :length] = np.where(lower, snippet - 32, snippet) if label else snippet
    attention_mask = (np.arange(block_size)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask, "labels": labels}


def to_torch(examples: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(values[rows]) for name, values in examples.items()}


@torch.no_grad()
def evaluate(model, examples: dict[str, np.ndarray], args) -> tuple[float, float]:
    """(mean loss, accuracy) over at most `eval_batches` batches."""
    model.eval()
    count = min(len(examples["labels"]), args.eval_batches * args.batch_size)
    losses, correct = [], 0
    for start in range(0, count, args.batch_size):
        batch = to_torch(examples, np.arange(start, min(start + args.batch_size, count)))
        output = model(**batch)
        losses.append(output.loss.item() * len(batch["labels"]))
        correct += int((output.logits.argmax(-1) == batch["labels"]).sum())
    model.train()
    return float(np.sum(losses) / count), correct / count


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    train_blocks, validation_blocks = make_blocks(encode(read_corpus(args.train_file, args.max_bytes)),
                                                  args.block_size)
    train, validation = make_examples(train_blocks, args.seed), make_examples(validation_blocks, args.seed + 1)
    labels = dict(num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, pad_token_id=EOS_ID)
    if args.model:
        model = AutoModelForSequenceClassification.from_pretrained(args.model, **labels)
    else:
        model = AutoModelForSequenceClassification.from_config(make_config(args, **labels))
    check_vocab(model.config, args.model or "the fresh config")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)

    log = {"train": [], "eval": []}
    loss, accuracy = evaluate(model, validation, args)
    log["eval"].append([0, loss])
    per_epoch = len(train["labels"]) // args.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(train['labels'])} training examples are fewer than --batch-size {args.batch_size}")
    progress = tqdm(range(args.max_steps), desc="train", disable=None)
    for step in progress:
        epoch, position = divmod(step, per_epoch)
        rows = epoch_order(len(train["labels"]), args.seed, epoch)[position * args.batch_size:][: args.batch_size]
        loss = model(**to_torch(train, rows)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log["train"].append([step + 1, loss.item()])
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.max_steps:
            loss, accuracy = evaluate(model, validation, args)
            log["eval"].append([step + 1, loss])
            progress.write(f"step {step + 1}: validation loss {loss:.4f}, accuracy {accuracy:.3f}")

    os.makedirs(args.output_dir, exist_ok=True)
    model.save_pretrained(args.output_dir)
    write_log(args.output_dir, log)
    report(log)


if __name__ == "__main__":
    main()
