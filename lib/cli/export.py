"""`twinformers export MODEL OUT --format onnx|saved_model|keras|jax`: a serving artifact of a checkpoint that runs
without twinformers (see `twinformers.export` and docs/serving.md)."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..export import FORMATS
from . import add_hub_arguments, hub_options, terminate_as_exit

HEADS = {
    "causal_lm": "AutoModelForCausalLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "question_answering": "AutoModelForQuestionAnswering",
    "base": "AutoModel",
}
DTYPES = ("float32", "float16", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint directory or Hugging Face Hub id")
    parser.add_argument("out", help="output directory (must not exist unless --force)")
    parser.add_argument("--format", dest="fmt", required=True, choices=list(FORMATS),
                        help="onnx (PyTorch twin), saved_model or keras (TensorFlow twin), jax (Flax twin)")
    parser.add_argument("--head", default="causal_lm", choices=list(HEADS), help="model head (default causal_lm)")
    parser.add_argument("--max-new-tokens", type=int, default=32,
                        help="saved_model: tokens the `generate` signature appends (default 32)")
    parser.add_argument("--max-prompt-length", type=int,
                        help="saved_model: prompt tokens `generate` is compiled for (default: positions - new tokens)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="onnx and jax: cast the weights (default float32; saved_model and keras: float32 only)")
    parser.add_argument("--params-as-argument", action="store_true",
                        help="jax: programs take the params (params.npz) instead of embedding them")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    add_hub_arguments(parser, "MODEL")


def run(args: argparse.Namespace) -> int:
    try:
        with terminate_as_exit():  # a terminated export removes its staging directory
            out = export(args)
    except (OSError, ValueError, ImportError, TypeError) as err:
        print(f"twinformers export: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"wrote {args.fmt} export of {args.model} to {out}")
    return 0


def export(args: argparse.Namespace) -> str:
    """Load MODEL in the format's backend and export it; returns the output directory."""
    import os

    from ..export import ExportError, export_model

    if os.path.lexists(args.out) and not args.force:  # before the (slow) load
        raise ExportError(f"{os.path.abspath(args.out)} already exists; pass --force to replace it")
    backend_name = FORMATS[args.fmt]
    backend = importlib.import_module(f"twinformers.{backend_name}")
    hub = hub_options(args)
    model = getattr(backend, HEADS[args.head]).from_pretrained(args.model, **hub)
    options: dict = {}
    if args.dtype != "float32":
        if backend_name == "pt":
            import torch

            model = model.to(getattr(torch, args.dtype))
        elif backend_name == "flax":
            model.params = model.to_fp16(model.params) if args.dtype == "float16" else model.to_bf16(model.params)
        else:
            raise ExportError(f"--format {args.fmt} exports float32 only; got --dtype {args.dtype}")
    if args.fmt == "saved_model":
        options.update(max_new_tokens=args.max_new_tokens, max_prompt_length=args.max_prompt_length)
        if args.head == "causal_lm":
            options["tokenizer"] = _tokenizer(args.model, hub)
    if args.fmt == "jax":
        options["params_as_argument"] = args.params_as_argument
    elif args.params_as_argument:
        raise ExportError("--params-as-argument applies to --format jax only")
    return export_model(model, args.out, args.fmt, force=args.force, **options)


def _tokenizer(model: str, hub: dict):
    """The checkpoint's tokenizer for the `generate` signature, or None (then only serving_default) if it has none."""
    from ..tokenization.auto import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model, **hub)
    except (OSError, ValueError) as err:
        print(f"twinformers export: no tokenizer in {model} ({' '.join(str(err).split())}): writing "
              "serving_default only, without the text-to-text generate signature", file=sys.stderr)
        return None
