"""Throughput of the three GPT-2 tokenizers on ~1 MB of text: pure Python, `tokenizers`, TensorFlow in-graph.

    python benchmarks/bench_tokenizers.py [--corpus prose|code] [--vocab-dir DIR] [--megabytes 1.0] [--no-tf]

The text ships with Python: `--corpus prose` (default) is the English documentation in `pydoc_data.topics`,
`--corpus code` the standard-library sources; it is encoded line by line as one batch. Without
`--vocab-dir` a byte-level BPE with `--vocab-size` tokens is trained on other stdlib files with the
`tokenizers` trainer (no network); pass a folder with GPT-2's vocab.json / merges.txt to measure the real
vocabulary. Prints a Markdown table with the best of `--repeats` runs. The pure-Python tokenizer is also
timed with a cold cache (a fresh tokenizer), which is what one pass over new text costs. The fast
tokenizer is timed on both of its paths: without offsets (`encode_batch_fast`, the default) and with
`return_offsets_mapping=True` (`encode_batch`); the ids of the two are checked identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from twinformers.tokenization.gpt2 import GPT2Tokenizer
from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast

STDLIB = os.path.dirname(os.__file__)
TRAIN_FILES = ("argparse.py", "textwrap.py", "difflib.py", "inspect.py", "typing.py")


def prose_corpus(megabytes: float) -> list[str]:
    """Lines of Python's bundled documentation (English prose with some code), repeated up to `megabytes`."""
    import pydoc_data.topics

    text = "\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics))
    lines: list[str] = []
    size = 0
    while size < megabytes * 1e6:
        for line in text.split("\n"):
            lines.append(line)
            size += len(line.encode("utf-8")) + 1
            if size >= megabytes * 1e6:
                break
    return lines


def stdlib_corpus(megabytes: float, skip: tuple[str, ...] = TRAIN_FILES) -> list[str]:
    """Lines of stdlib modules (sorted by name, training files excluded) adding up to `megabytes`."""
    lines: list[str] = []
    size = 0
    for name in sorted(os.listdir(STDLIB)):
        if not name.endswith(".py") or name in skip:
            continue
        with open(os.path.join(STDLIB, name), encoding="utf-8", errors="replace") as f:
            for line in f.read().split("\n"):
                lines.append(line)
                size += len(line.encode("utf-8")) + 1
                if size >= megabytes * 1e6:
                    return lines
    return lines


def train_vocab(directory: str, vocab_size: int) -> str:
    """A GPT-2-style byte-level BPE trained with the `tokenizers` trainer, saved as vocab.json + merges.txt."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = []
    for name in TRAIN_FILES:
        with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
            text.extend(f.read().split("\n"))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(text, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for merge in model["merges"]:
            f.write((merge if isinstance(merge, str) else " ".join(merge)) + "\n")
    return directory


def best_time(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-dir", help="folder with vocab.json + merges.txt (default: train one)")
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--corpus", choices=("prose", "code"), default="prose")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow layer")
    args = parser.parse_args()

    lines = prose_corpus(args.megabytes) if args.corpus == "prose" else stdlib_corpus(args.megabytes)
    n_bytes = sum(len(line.encode("utf-8")) + 1 for line in lines)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.vocab_dir or train_vocab(scratch, args.vocab_size)
        slow = GPT2Tokenizer.from_pretrained(directory)
        fast = GPT2TokenizerFast.from_pretrained(directory)

    rows = []
    reference = fast(lines)["input_ids"]
    n_tokens = sum(map(len, reference))

    start = time.perf_counter()
    cold = slow(lines)["input_ids"]  # a fresh tokenizer: every distinct word goes through BPE once
    rows.append(("GPT2Tokenizer (pure Python, cold cache)", time.perf_counter() - start))
    assert cold == reference, "slow and fast tokenizers disagree"
    rows.append(("GPT2Tokenizer (pure Python, warm cache)", best_time(lambda: slow(lines), args.repeats)[0]))
    rows.append(("GPT2TokenizerFast (`tokenizers`, no offsets: fast path)",
                 best_time(lambda: fast(lines), args.repeats)[0]))
    seconds, with_offsets = best_time(lambda: fast(lines, return_offsets_mapping=True), args.repeats)
    assert with_offsets["input_ids"] == reference, "the fast path and the offsets path disagree"
    rows.append(("GPT2TokenizerFast (`tokenizers`, with offsets)", seconds))
    backend = fast.backend_tokenizer
    rows.append(("`tokenizers` alone (encode_batch_fast)",
                 best_time(lambda: backend.encode_batch_fast(lines, add_special_tokens=False), args.repeats)[0]))
    rows.append(("`tokenizers` alone (encode_batch)",
                 best_time(lambda: backend.encode_batch(lines, add_special_tokens=False), args.repeats)[0]))

    if not args.no_tf:
        import tensorflow as tf

        from twinformers.tf.tokenizer import TFGPT2Tokenizer

        layer = TFGPT2Tokenizer.from_tokenizer(fast)
        graph = tf.function(lambda texts: layer(texts)["input_ids"], input_signature=[tf.TensorSpec([None], tf.string)])
        texts = tf.constant(lines)
        start = time.perf_counter()
        graph(texts[:2])
        trace = time.perf_counter() - start
        seconds, ids = best_time(lambda: graph(texts), args.repeats)
        assert ids.to_list() == reference, "the TensorFlow layer disagrees with the fast tokenizer"
        rows.append(("TFGPT2Tokenizer (`tf.function`, one batch)", seconds))
        layer(texts[:2])  # an eager call traces the layer's own graph once
        rows.append(("TFGPT2Tokenizer (eager call of the layer)", best_time(lambda: layer(texts), args.repeats)[0]))

    fast_seconds = next(s for name, s in rows if name.startswith("GPT2TokenizerFast"))
    print(f"{args.corpus}: {n_bytes / 1e6:.2f} MB, {len(lines)} lines, {n_tokens} tokens; vocabulary of "
          f"{len(fast)} tokens ({'given' if args.vocab_dir else 'trained'}); "
          f"{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; best of {args.repeats}")
    if not args.no_tf:
        print(f"TF graph trace: {trace:.2f} s (once)")
    print()
    print("| tokenizer | seconds | tokens/s | MB/s | vs fast |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {n_tokens / seconds:,.0f} | {n_bytes / 1e6 / seconds:.2f} | "
              f"{fast_seconds / seconds:.3f}× |")


if __name__ == "__main__":
    main()
