"""`twinformers demo`: the whole library on the embedded tiny GPT-2, offline (see `twinformers.demo.run`)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--short", action="store_true", help="the CI setting: fewer steps and tokens (< 1 minute)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the tokenizer and the model from scratch instead of loading the embedded ones")
    parser.add_argument("--prompt", help="what to continue (default: a Python function header)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens to generate per backend (default: 40; --short 16)")
    parser.add_argument("--steps", type=int, help="Keras fine-tuning steps (default: 60; --short 10)")
    parser.add_argument("--output-dir", help="keep the fine-tuned TF, PyTorch and Flax checkpoints here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or step notes, only the summary")


def run(args: argparse.Namespace) -> int:
    from ..demo.run import DemoSettings, format_summary, run_demo

    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--steps", args.steps)):
        if value is not None and value < 1:
            print(f"twinformers demo: error: {flag} must be at least 1, got {value}", file=sys.stderr)
            return 2
    overrides = {"retrain": args.retrain, "progress": not args.quiet, "output_dir": args.output_dir}
    for name, value in (("prompt", args.prompt), ("max_new_tokens", args.max_new_tokens),
                        ("fine_tune_steps", args.steps)):
        if value is not None:
            overrides[name] = value
    settings = DemoSettings.short(**overrides) if args.short else DemoSettings(**overrides)
    log = (lambda message: None) if args.quiet else print
    try:
        result = run_demo(settings, log=log)
    except (OSError, ValueError, ImportError) as err:
        print(f"twinformers demo: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(format_summary(result, settings))
    if not result.ok:
        print(f"twinformers demo: error: the twins' logits differ by more than {result.logits_tolerance:.1e}",
              file=sys.stderr)
        return 1
    return 0
