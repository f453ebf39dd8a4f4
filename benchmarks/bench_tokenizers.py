"""Throughput of the three GPT-2 tokenizers on ~1 MB of text: pure Python, `tokenizers`, TensorFlow in-graph.

    python benchmarks/bench_tokenizers.py [--corpus prose|code] [--vocab-dir DIR] [--megabytes 1.0] [--no-tf]
        [--tiktoken-threads N]

The text ships with Python: `--corpus prose` (default) is the English documentation in `pydoc_data.topics`,
`--corpus code` the standard-library sources; it is encoded line by line as one batch. Without
`--vocab-dir` a byte-level BPE with `--vocab-size` tokens is trained on other stdlib files with the
`tokenizers` trainer (no network); pass a folder with GPT-2's vocab.json / merges.txt to measure the real
vocabulary. Prints a Markdown table with the best of `--repeats` runs. The pure-Python tokenizer is also
timed with a cold cache (a fresh tokenizer), which is what one pass over new text costs. The fast
tokenizer is timed on both of its paths: without offsets (`encode_batch_fast`, the default) and with
`return_offsets_mapping=True` (`encode_batch`); the ids of the two are checked identical. It is also timed
as a model's input is made, padded to the longest line as NumPy arrays. `tokenizers` alone is timed without
and with reading each `Encoding`'s ids into a Python list, the least any wrapper that returns lists does.

When `tiktoken` is installed (the `bench` extra; it is never a dependency of twinformers), the same
vocab.json / merges.txt are also loaded into a `tiktoken.Encoding`, built here without network
(`tiktoken_encoding`), and timed one line at a time on one thread (`encode_ordinary`) and as one batch on
`--tiktoken-threads` threads (`encode_ordinary_batch`). The corpus is plain text, so `encode_ordinary` (no
special-token matching) is the call to time; its ids are checked identical to GPT2TokenizerFast's, line by
line. Every case is timed once per round, rounds interleaved, so bursts of load from other jobs hit all
cases alike; each row is the best of `--repeats` rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from twinformers.tokenization.gpt2 import GPT2_SPLIT_PATTERN, GPT2Tokenizer, bytes_to_unicode, load_bpe_files
from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast

STDLIB = os.path.dirname(os.__file__)
TRAIN_FILES = ("argparse.py", "textwrap.py", "difflib.py", "inspect.py", "typing.py")
EOS = "<|endoftext|>"


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
    vocab[EOS] = len(vocab)
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


def interleaved_best(cases: Sequence[tuple[str, Callable[[], Any]]], rounds: int) -> tuple[dict[str, float], dict]:
    """Run every case once per round, for `rounds` rounds: a burst of load from other jobs then slows one
    round of every case rather than all rounds of one case. Returns each case's best seconds and last result."""
    best = {name: float("inf") for name, _ in cases}
    results = {}
    for _ in range(rounds):
        for name, function in cases:
            start = time.perf_counter()
            results[name] = function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def check_same_ids(name: str, ids: list[list[int]], reference: list[list[int]], lines: list[str]) -> None:
    """Raise naming the first line and token position where `ids` differ from GPT2TokenizerFast's."""
    if len(ids) != len(reference):
        raise AssertionError(f"{name} gave {len(ids)} sequences for {len(reference)} lines")
    for number, (got, expected) in enumerate(zip(ids, reference)):
        if got != expected:
            at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            raise AssertionError(
                f"{name} disagrees with GPT2TokenizerFast on line {number} ({lines[number]!r}) at token {at}: "
                f"{got[at:at + 5]} != {expected[at:at + 5]} ({len(got)} vs {len(expected)} tokens)"
            )


def tiktoken_encoding(directory: str, special_tokens: Sequence[str] = (EOS,)) -> Any:
    """The byte-level BPE of `directory`'s vocab.json + merges.txt as a `tiktoken.Encoding`, built offline.

    tiktoken knows a BPE by its tokens' bytes and their ranks: it splits the text with the pre-tokenizer
    regex, merges the adjacent pair whose concatenation has the lowest rank until none is a token, and
    returns the ranks as ids. Here a token's bytes are its vocab.json string read back through GPT-2's
    byte-to-character table, and its rank is its id. That is merges.txt's BPE when every rule makes a token
    with a larger id than the rules before it (GPT-2's merges were added in id order, as the `tokenizers`
    trainer adds them) and every token longer than one byte is made by a rule; both are checked here. One
    difference no table check settles: tiktoken merges any adjacent pair whose concatenation is a token,
    merges.txt only the pairs it lists, so the bench and its test compare the ids on real text.

    Args:
        directory: a folder with vocab.json and merges.txt.
        special_tokens: the added tokens of the vocabulary; those present become tiktoken special tokens
            (matched only by `encode(..., allowed_special=...)`, never by `encode_ordinary`).

    Raises:
        ValueError: naming the file and the first token or rule that breaks a condition above.
    """
    import tiktoken

    vocab_file = os.path.join(directory, "vocab.json")
    merges_file = os.path.join(directory, "merges.txt")
    vocab, merges = load_bpe_files(vocab_file, merges_file)
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    specials = {token: vocab[token] for token in special_tokens if token in vocab}
    ranks: dict[bytes, int] = {}
    for token, index in vocab.items():
        if token in specials:
            continue
        if any(char not in byte_of for char in token):
            raise ValueError(f"vocabulary {vocab_file}: token {token!r} (id {index}) has characters outside GPT-2's "
                             f"byte table; if it is an added token, pass it in special_tokens")
        ranks[bytes(byte_of[char] for char in token)] = index
    missing = [byte for byte in range(256) if bytes([byte]) not in ranks]
    if missing:
        raise ValueError(f"vocabulary {vocab_file} lacks {len(missing)} of the 256 byte tokens (e.g. byte "
                         f"0x{missing[0]:02x}); tiktoken needs every byte to be a token")
    previous = -1
    made = set()
    for rule, (left, right) in enumerate(merges):
        index = vocab[left + right]
        if index <= previous:
            raise ValueError(f"merges {merges_file} rule {rule} ({left!r} {right!r}) makes id {index}, not above the "
                             f"previous rule's id {previous}: the ids of {vocab_file} do not follow the merge order, "
                             f"so they cannot be tiktoken's ranks")
        previous = index
        made.add(left + right)
    unmade = [token for token in vocab if len(token) > 1 and token not in made and token not in specials]
    if unmade:
        raise ValueError(f"vocabulary {vocab_file}: {len(unmade)} multi-byte tokens are made by no rule of "
                         f"{merges_file} (e.g. {unmade[0]!r}); tiktoken would emit them for words BPE never merges")
    return tiktoken.Encoding(name=f"bpe:{os.path.abspath(directory)}", pat_str=GPT2_SPLIT_PATTERN,
                             mergeable_ranks=ranks, special_tokens=specials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-dir", help="folder with vocab.json + merges.txt (default: train one)")
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--corpus", choices=("prose", "code"), default="prose")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each row is its best round")
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow layer")
    parser.add_argument("--tiktoken-threads", type=int, default=os.cpu_count(),
                        help="threads of tiktoken's encode_ordinary_batch (default: the CPU count, as `tokenizers`)")
    args = parser.parse_args()

    lines = prose_corpus(args.megabytes) if args.corpus == "prose" else stdlib_corpus(args.megabytes)
    n_bytes = sum(len(line.encode("utf-8")) + 1 for line in lines)
    try:
        import tiktoken
    except ImportError:
        tiktoken = None
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.vocab_dir or train_vocab(scratch, args.vocab_size)
        slow = GPT2Tokenizer.from_pretrained(directory)
        fast = GPT2TokenizerFast.from_pretrained(directory)
        padded = GPT2TokenizerFast.from_pretrained(directory, pad_token=EOS)
        encoding = tiktoken_encoding(directory) if tiktoken is not None else None

    reference = fast(lines)["input_ids"]
    n_tokens = sum(map(len, reference))

    start = time.perf_counter()
    cold = slow(lines)["input_ids"]  # a fresh tokenizer: every distinct word goes through BPE once
    cold_seconds = time.perf_counter() - start
    check_same_ids("GPT2Tokenizer", cold, reference, lines)

    backend = fast.backend_tokenizer
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("GPT2Tokenizer (pure Python, warm cache)", lambda: slow(lines)["input_ids"]),
        ("GPT2TokenizerFast (`tokenizers`, no offsets: fast path)", lambda: fast(lines)["input_ids"]),
        ("GPT2TokenizerFast (`tokenizers`, with offsets)",
         lambda: fast(lines, return_offsets_mapping=True)["input_ids"]),
        ("GPT2TokenizerFast (no offsets, padding=True, return_tensors='np')",
         lambda: padded(lines, padding=True, return_tensors="np")),
        ("`tokenizers` alone (encode_batch_fast)",
         lambda: backend.encode_batch_fast(lines, add_special_tokens=False)),
        ("`tokenizers` alone (encode_batch_fast, ids read)",
         lambda: [e.ids for e in backend.encode_batch_fast(lines, add_special_tokens=False)]),
        ("`tokenizers` alone (encode_batch)", lambda: backend.encode_batch(lines, add_special_tokens=False)),
    ]
    checked = [case[0] for case in cases[:3]]  # the rows whose results are lists of ids
    if encoding is not None:
        cases.append(("tiktoken encode_ordinary (1 thread, line by line)",
                      lambda: [encoding.encode_ordinary(line) for line in lines]))
        cases.append((f"tiktoken encode_ordinary_batch ({args.tiktoken_threads} threads)",
                      lambda: encoding.encode_ordinary_batch(lines, num_threads=args.tiktoken_threads)))
        checked += [case[0] for case in cases[-2:]]

    if not args.no_tf:
        import tensorflow as tf

        from twinformers.tf.tokenizer import TFGPT2Tokenizer

        layer = TFGPT2Tokenizer.from_tokenizer(fast)
        graph = tf.function(lambda texts: layer(texts)["input_ids"], input_signature=[tf.TensorSpec([None], tf.string)])
        texts = tf.constant(lines)
        start = time.perf_counter()
        graph(texts[:2])
        trace = time.perf_counter() - start
        layer(texts[:2])  # an eager call traces the layer's own graph once
        cases.append(("TFGPT2Tokenizer (`tf.function`, one batch)", lambda: graph(texts)))
        cases.append(("TFGPT2Tokenizer (eager call of the layer)", lambda: layer(texts)))
        checked.append(cases[-2][0])

    best, results = interleaved_best(cases, args.repeats)
    for name in checked:
        ids = results[name]
        check_same_ids(name, ids.to_list() if hasattr(ids, "to_list") else ids, reference, lines)  # TF: ragged
    batch = results["GPT2TokenizerFast (no offsets, padding=True, return_tensors='np')"]
    unpadded = [row[:n] for row, n in zip(batch["input_ids"].tolist(), batch["attention_mask"].sum(1).tolist())]
    check_same_ids("GPT2TokenizerFast (padding=True, return_tensors='np')", unpadded, reference, lines)
    rows = [("GPT2Tokenizer (pure Python, cold cache)", cold_seconds), *best.items()]

    fast_seconds = next(s for name, s in rows if name.startswith("GPT2TokenizerFast"))
    print(f"{args.corpus}: {n_bytes / 1e6:.2f} MB, {len(lines)} lines, {n_tokens} tokens; vocabulary of "
          f"{len(fast)} tokens ({'given' if args.vocab_dir else 'trained'}); "
          f"{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; best of {args.repeats} interleaved rounds")
    if not args.no_tf:
        print(f"TF graph trace: {trace:.2f} s (once)")
    if tiktoken is None:
        print("tiktoken is not installed (a bench-only extra: pip install tiktoken); its rows are skipped")
    else:
        print(f"tiktoken {tiktoken.__version__}, built from the same vocab.json / merges.txt; ids identical")
    print()
    print("| tokenizer | seconds | tokens/s | MB/s | vs fast |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {n_tokens / seconds:,.0f} | {n_bytes / 1e6 / seconds:.2f} | "
              f"{fast_seconds / seconds:.3f}× |")


if __name__ == "__main__":
    main()
