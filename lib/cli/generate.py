"""`twinformers generate [MODEL] "prompt"`: stream a continuation to stdout with any backend (without MODEL: the
tiny GPT-2 embedded in the package, `twinformers.demo.embedded_model_path()`)."""

from __future__ import annotations

import argparse
import importlib
import sys

from .._backends import BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="[MODEL]",
                        help="checkpoint directory or Hugging Face Hub id (with its tokenizer files); "
                             "omitted: the tiny GPT-2 embedded in twinformers")
    parser.add_argument("prompt", nargs="?", metavar="PROMPT", help="the text to continue")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="pt", help="framework to run (default pt)")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (default 50)")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy search")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--top-k", type=int, help="keep the k most likely tokens when sampling")
    parser.add_argument("--top-p", type=float, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, help="sampling seed (reproducible output)")
    parser.add_argument("--revision", help="Hub revision")
    parser.add_argument("--local-files-only", action="store_true", help="never download from the Hub")


def run(args: argparse.Namespace) -> int:
    try:
        generate(args)
    except (OSError, ValueError, ImportError) as err:
        print(f"twinformers generate: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    return 0


def generate(args: argparse.Namespace) -> None:
    """Load the tokenizer and the backend's causal LM, then generate with a TextStreamer on stdout."""
    from ..generation.streamers import TextStreamer
    from ..tokenization.auto import AutoTokenizer

    if args.prompt is None:  # one positional argument: the prompt, for the embedded model
        from ..demo.embedded import embedded_model_path

        args.model, args.prompt = embedded_model_path(), args.model
    hub = dict(revision=args.revision, local_files_only=args.local_files_only)
    tokenizer = AutoTokenizer.from_pretrained(args.model, **hub)
    backend = importlib.import_module(f"twinformers.{args.backend}")
    model = backend.AutoModelForCausalLM.from_pretrained(args.model, **hub)
    settings = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    for name in ("temperature", "top_k", "top_p"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.seed is not None:
        settings["seed"] = args.seed
    defaults = model.generation_config
    if defaults.pad_token_id is None:
        # One unpadded prompt never needs padding: this only avoids the "Setting pad_token_id" warning.
        settings["pad_token_id"] = (defaults.eos_token_ids or [0])[0]
    input_ids = [tokenizer.encode(args.prompt)]
    if not input_ids[0]:
        raise ValueError("the prompt encodes to no tokens")
    model.generate(_as_backend_ids(args.backend, input_ids), streamer=TextStreamer(tokenizer), **settings)


def _as_backend_ids(backend: str, input_ids: list[list[int]]):
    if backend == "pt":
        import torch

        return torch.tensor(input_ids)
    import numpy as np

    return np.asarray(input_ids, dtype=np.int32)
