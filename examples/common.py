"""What the training examples share and no framework needs: the corpus, a byte-level tokenizer, fixed-length
blocks, the model config, command-line flags, and the loss log.

The default corpus is Python's own standard library sources, so every example runs without a network: the
tokenizer maps UTF-8 bytes to ids 0-255 and uses 256 as end-of-text (and padding), so the vocabulary is 257.
A pretrained checkpoint given with `--model` must have at least that many rows.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys

import numpy as np

# `twinformers` is installed (pip install -e .); examples never put lib/ on sys.path.
from twinformers.checkpoints.files import atomic_write_text
from twinformers.configuration import AutoConfig, PretrainedConfig

EOS_ID = 256  # end of text between files; also the padding id of the classification example
VOCAB_SIZE = 257
LOG_NAME = "train_log.json"
CAUSAL_LM_CLASSES = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}
SEQUENCE_CLASSIFICATION_CLASSES = {
    "gpt2": "GPT2ForSequenceClassification",
    "gptj": "GPTJForSequenceClassification",
    "gpt_neo": "GPTNeoForSequenceClassification",
}


# --------------------------------------------------------------------------------------------- text
def stdlib_corpus(max_bytes: int) -> str:
    """About `max_bytes` of Python standard-library source text (sorted files, so the corpus is reproducible)."""
    stdlib = os.path.dirname(os.__file__)
    texts, size = [], 0
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        texts.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    return "\x00".join(texts)[:max_bytes]  # "\x00" marks file boundaries; encode() turns it into EOS_ID


def read_corpus(train_file: str | None, max_bytes: int) -> str:
    """The text of `train_file` (at most `max_bytes`), or the standard-library corpus when it is None."""
    if train_file is None:
        return stdlib_corpus(max_bytes)
    if not os.path.isfile(train_file):
        raise OSError(f"--train-file {train_file!r} does not exist or is not a file")
    with open(train_file, encoding="utf-8", errors="replace") as f:
        return f.read(max_bytes)


def encode(text: str) -> np.ndarray:
    """UTF-8 bytes as int32 ids; NUL characters (file boundaries) become EOS_ID."""
    ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
    ids[ids == 0] = EOS_ID
    return ids


def decode(ids: np.ndarray) -> str:
    return bytes(int(i) for i in ids if i < 256).decode("utf-8", errors="replace")


def make_blocks(ids: np.ndarray, block_size: int, validation_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (N, block_size) int32 blocks, split into (train, validation); the tail is dropped."""
    count = len(ids) // block_size
    if count < 2:
        raise ValueError(f"the corpus has {len(ids)} tokens: too few for two blocks of --block-size {block_size}")
    blocks = ids[: count * block_size].reshape(count, block_size)
    num_validation = max(1, int(count * validation_fraction))
    return blocks[num_validation:], blocks[:num_validation]


def epoch_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: a pure function of (seed, epoch), so a resumed run sees the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def batch_at(blocks: np.ndarray, batch_size: int, index: int, seed: int) -> np.ndarray:
    """The `index`-th batch of the shuffled stream of `blocks` (epochs follow each other; a short tail is skipped)."""
    per_epoch = len(blocks) // batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(blocks)} training blocks are fewer than --batch-size {batch_size}")
    epoch, position = divmod(index, per_epoch)
    order = epoch_order(len(blocks), seed, epoch)
    return blocks[order[position * batch_size:(position + 1) * batch_size]]


# --------------------------------------------------------------------------------------------- config and flags
def make_config(args: argparse.Namespace, **overrides) -> PretrainedConfig:
    """A fresh config of `args.family` with the flags' sizes and the byte vocabulary."""
    values = dict(
        vocab_size=VOCAB_SIZE, hidden_size=args.hidden_size, num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads, max_position_embeddings=args.block_size,
        bos_token_id=EOS_ID, eos_token_id=EOS_ID,
    )
    head_dim = args.hidden_size // args.num_heads
    if args.family == "gptj":
        values["rotary_dim"] = max(2, head_dim // 2 // 2 * 2)  # rotary on half of each head, an even count
    if args.family == "gpt_neo":
        # Alternate global and local attention as GPT-Neo does; an odd last layer is global.
        values["attention_types"] = [[["global", "local"], args.num_layers // 2]] + (
            [[["global"], 1]] if args.num_layers % 2 else [])
        values["window_size"] = max(1, args.block_size // 2)
    dropout = {"gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"), "gptj": ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
               "gpt_neo": ("resid_dropout", "embed_dropout", "attention_dropout")}[args.family]
    values.update({name: args.dropout for name in dropout})
    values.update(overrides)
    return AutoConfig.for_model(args.family, **values)


def check_vocab(config: PretrainedConfig, source: str) -> None:
    if config.vocab_size < VOCAB_SIZE:
        raise ValueError(
            f"{source} has vocab_size {config.vocab_size}, but the byte tokenizer of the examples needs {VOCAB_SIZE}"
        )


def base_parser(description: str, **defaults) -> argparse.ArgumentParser:
    """Flags every example takes. `defaults` overrides defaults per example (e.g. learning_rate)."""
    parser = argparse.ArgumentParser(description=description)
    data = parser.add_argument_group("data")
    data.add_argument("--train-file", help="a UTF-8 text file (default: Python standard-library sources)")
    data.add_argument("--max-bytes", type=int, default=2_000_000, help="read at most this much text")
    data.add_argument("--block-size", type=int, default=128, help="tokens per training sequence")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="fine-tune this checkpoint (directory or Hub id) instead of a fresh model")
    model.add_argument("--family", choices=sorted(CAUSAL_LM_CLASSES), default="gpt2", help="fresh model family")
    model.add_argument("--num-layers", type=int, default=4)
    model.add_argument("--hidden-size", type=int, default=256)
    model.add_argument("--num-heads", type=int, default=4)
    model.add_argument("--dropout", type=float, default=0.1)
    train = parser.add_argument_group("training")
    train.add_argument("--output-dir", required=True, help="checkpoints, the final model and train_log.json")
    train.add_argument("--batch-size", type=int, default=8, help="sequences per optimizer step (per accumulation)")
    train.add_argument("--max-steps", type=int, default=500, help="optimizer steps")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument("--warmup-steps", type=int, default=20)
    train.add_argument("--eval-batches", type=int, default=8, help="validation batches per evaluation")
    train.add_argument("--seed", type=int, default=0)
    parser.set_defaults(**defaults)
    return parser


def check_args(args: argparse.Namespace) -> None:
    for name in ("block_size", "batch_size", "max_steps", "num_layers", "hidden_size", "num_heads", "eval_batches"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.hidden_size % args.num_heads:
        raise ValueError(f"--hidden-size {args.hidden_size} is not divisible by --num-heads {args.num_heads}")


def learning_rate_at(step: int, args: argparse.Namespace) -> float:
    """Linear warmup from 0 over `warmup_steps`, then cosine decay to 0 at `max_steps` — the schedule of Keras'
    `CosineDecay(warmup_target=...)` and optax's `warmup_cosine_decay_schedule`, for the PyTorch loop."""
    if step < args.warmup_steps:
        return args.learning_rate * step / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
    return args.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------- checkpoints and log
def latest_checkpoint(output_dir: str, state_name: str) -> str | None:
    """The newest complete `checkpoint-<step>` directory: one holding `state_name`, the file written last."""
    steps = {}
    for directory in glob.glob(os.path.join(output_dir, "checkpoint-*")):
        match = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(directory))
        if match and os.path.exists(os.path.join(directory, state_name)):
            steps[int(match.group(1))] = directory
    return steps[max(steps)] if steps else None



def read_log(output_dir: str) -> dict:
    path = os.path.join(output_dir, LOG_NAME)
    if not os.path.exists(path):
        return {"train": [], "eval": []}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_log(output_dir: str, log: dict) -> None:
    """`{"train": [[step, loss], ...], "eval": [[step, loss], ...]}`, written atomically."""
    atomic_write_text(os.path.join(output_dir, LOG_NAME), json.dumps(log, indent=1) + "\n")


def report(log: dict) -> None:
    """Print the first and last validation loss (the tests and readers look for a decrease)."""
    if len(log["eval"]) >= 2:
        (first_step, first), (last_step, last) = log["eval"][0], log["eval"][-1]
        print(f"validation loss: {first:.4f} (step {first_step}) -> {last:.4f} (step {last_step})", file=sys.stderr)


# --------------------------------------------------------------------------------------------- LoRA examples
def lora_parser(description: str) -> argparse.ArgumentParser:
    """The flags of the `train_lora_*` examples: the base flags plus PEFT's LoRA settings."""
    parser = base_parser(description, learning_rate=1e-2, dropout=0.0)
    lora = parser.add_argument_group("LoRA")
    lora.add_argument("--lora-r", type=int, default=8, help="adapter rank")
    lora.add_argument("--lora-alpha", type=float, default=16)
    lora.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the adapter input (training)")
    lora.add_argument("--target-modules", nargs="+", default=None,
                      help="module names (default: the family's, as PEFT's); 'all-linear' for every projection")
    return parser


def lora_config(args: argparse.Namespace):
    from twinformers import LoraConfig

    target_modules = args.target_modules
    if target_modules == ["all-linear"]:
        target_modules = "all-linear"
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=target_modules)
