"""`twinformers inspect PATH`: what a checkpoint holds and which twins can load it."""

from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

from ..checkpoints.canonical import open_checkpoint
from ..conversion.tables import TABLES, check_shapes, family_of, infer_head
from . import add_hub_arguments, hub_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="checkpoint directory or Hugging Face Hub id")
    add_hub_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        lines = describe(args.path, **hub_options(args))
    except (OSError, ValueError, ImportError, KeyError) as err:
        print(f"twinformers inspect: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def describe(path: str, **hub: object) -> list[str]:
    """The report `twinformers inspect` prints, one line per fact."""
    from .._backends import BACKENDS, install_hint, missing_modules

    checkpoint = open_checkpoint(path, **hub)
    config = checkpoint.config
    lines = [f"checkpoint: {path}"]
    if config is None:
        lines.append("config: none (no config.json: family and head unknown)")
        family = head = None
    else:
        family = family_of(config)
        head = infer_head(family, checkpoint.keys(), config)
        lines.append(f"family: {family}   head: {head} ({TABLES[family].classes[head]})")
        lines.append(
            f"config: layers {config.num_hidden_layers}, hidden {config.hidden_size}, heads "
            f"{config.num_attention_heads}, vocab {config.vocab_size}, positions {config.max_position_embeddings}"
            + (f", rotary_dim {config.rotary_dim}" if family == "gptj" else "")
            + (f", window {config.window_size}" if family == "gpt_neo" else "")
        )
    tied = family is not None and head in ("causal_lm", "double_heads") and config.tie_word_embeddings
    # A .bin stores the tied lm_head.weight as a second name for wte's storage: count it once.
    counted = [k for k in checkpoint if not (tied and k == "lm_head.weight")]
    parameters = sum(int(np.prod(checkpoint.shape(k), dtype=np.int64)) for k in counted)
    dtypes = collections.Counter(checkpoint.dtype(k).name for k in counted)
    total = sum(checkpoint.nbytes(k) for k in counted)
    lines.append(f"parameters: {parameters:,} in {len(counted)} tensors ({format_size(total)})")
    lines.append("dtypes: " + ", ".join(f"{name} ×{n}" for name, n in dtypes.most_common()))
    lines.append(f"format: {checkpoint.weights_name} ({checkpoint.source_format} layout)")
    shards = len(checkpoint.files) - 1 if checkpoint.weights_name.endswith(".index.json") else 0
    lines.append(f"files: {len(checkpoint.files)}" + (f" (index + {shards} shards)" if shards else ""))
    for file in checkpoint.files:
        lines.append(f"  {os.path.basename(file)}  {format_size(os.path.getsize(file))}")
    if family is not None:
        lines.append("tied weights: " + ("lm_head.weight = transformer.wte.weight" if tied else "none"))
        try:
            check_shapes(family, checkpoint.shapes(), config)
            lines.append("weights match config: yes")
        except ValueError as err:
            lines.append(f"weights match config: NO: {' '.join(str(err).split())}")
    for backend in BACKENDS:
        # No format needs a backend other than the one loading it: a `.bin` of contiguous tensors is read
        # without torch, and one that needs torch already failed in `open_checkpoint` with an ImportError.
        missing = missing_modules(backend)
        if config is None:
            verdict = "no (no config.json: the twins build the model from it)"
        elif missing:
            verdict = f"no ({install_hint(backend, missing)})"
        else:
            verdict = "yes"
        lines.append(f"loads in twinformers.{backend}: {verdict}")
    return lines


def format_size(nbytes: int) -> str:
    """Bytes in the largest decimal unit that keeps the number at least 1: 512 B, 20.5 kB, 1.23 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.{1 if scale == 1e3 else 2}f} {unit}"
    return f"{nbytes} B"
