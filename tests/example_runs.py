"""Run the training scripts of `examples/` as a user would (a subprocess), with tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

# Small enough for CI on 2 shared cores, large enough that the validation loss falls clearly.
TINY_FLAGS = (
    "--max-bytes", "40000", "--block-size", "32", "--num-layers", "2", "--hidden-size", "32", "--num-heads", "4",
    "--batch-size", "8", "--max-steps", "12", "--warmup-steps", "1", "--learning-rate", "3e-3",
    "--eval-every", "6", "--eval-batches", "2",
)


def run_example(script: str, output_dir: str, *flags: str, timeout: int = 600) -> dict:
    """Run `examples/<script>` with TINY_FLAGS (later flags win) and return its train_log.json."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", HF_HUB_OFFLINE="1")
    command = [sys.executable, os.path.join(EXAMPLES, script), "--output-dir", str(output_dir), *TINY_FLAGS, *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    with open(os.path.join(output_dir, "train_log.json"), encoding="utf-8") as f:
        return json.load(f)


def assert_loss_decreased(log: dict, fraction: float = 0.95) -> None:
    """The last validation loss is below `fraction` × the first (measured before any step)."""
    (first_step, first), (last_step, last) = log["eval"][0], log["eval"][-1]
    assert first_step == 0 and last_step > 0, log["eval"]
    assert last < fraction * first, f"validation loss {first:.4f} -> {last:.4f} did not fall enough"


def validation_batch(num_rows: int = 3, block_size: int = 32):
    """(num_rows, block_size) int64 ids of the examples' corpus, as the scripts tokenize it."""
    sys.path.insert(0, EXAMPLES)
    try:
        from common import encode, make_blocks, stdlib_corpus
    finally:
        sys.path.remove(EXAMPLES)
    _, validation = make_blocks(encode(stdlib_corpus(40000)), block_size)
    return validation[:num_rows].astype("int64")
