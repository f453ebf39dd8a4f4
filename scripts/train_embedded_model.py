"""Train the tiny GPT-2 and byte-level BPE tokenizer shipped in the package (`lib/data/tiny-gpt2/`).

Reproducible and offline: the text is this Python's own standard library (top-level modules, sorted by name),
the tokenizer is trained with the `tokenizers` BPE trainer, the model with Keras `model.fit` on the TensorFlow
twin, with fixed seeds and deterministic TensorFlow ops. The recipe is `twinformers.demo.embedded.EMBEDDED_SETTINGS`;
`twinformers demo --retrain` runs the same function with fewer steps.

    python scripts/train_embedded_model.py                    # writes lib/data/tiny-gpt2 (about 10-30 min on 2 cores)
    python scripts/train_embedded_model.py --steps 200 --output-dir /tmp/tiny   # a quick try

Needs `pip install -e '.[tf]'`. The directory is replaced only when training finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from twinformers.demo.embedded import EMBEDDED_MODEL_NAME, EMBEDDED_SETTINGS, train_embedded_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO, "lib", "data", EMBEDDED_MODEL_NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--steps", type=int, default=EMBEDDED_SETTINGS.steps, help="Keras training steps")
    parser.add_argument("--corpus-bytes", type=int, default=EMBEDDED_SETTINGS.corpus_bytes,
                        help="characters of standard-library source to train on")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.corpus_bytes < 1:
        parser.error("--steps and --corpus-bytes must be at least 1")

    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # the same weights on every run of the same versions
    settings = dataclasses.replace(EMBEDDED_SETTINGS, steps=args.steps, corpus_bytes=args.corpus_bytes)
    numbers = train_embedded_model(args.output_dir, settings)
    total = sum(os.path.getsize(os.path.join(args.output_dir, name)) for name in os.listdir(args.output_dir))
    print(json.dumps({
        "output_dir": args.output_dir, "bytes": total, **numbers, "settings": dataclasses.asdict(settings),
        "python": platform.python_version(), "tensorflow": tf.__version__,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
