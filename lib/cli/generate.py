"""`twinformers generate [MODEL] [PROMPT]`: stream a continuation to stdout with any backend.

Without MODEL: the tiny GPT-2 embedded in the package (`twinformers.demo.embedded_model_path()`). The prompt is
read from stdin when it is `-`, or when it is absent and stdin is a pipe or a file (then a single positional
argument is MODEL). Greedy search and sampling of one sequence stream as they go; beam search, several returned
sequences and `--json` print when generation ends. The frameworks' native log lines (TensorFlow's C++ start-up
and CUDA probing) are silenced unless `--verbose`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from typing import Any

from .._backends import BACKENDS
from . import add_hub_arguments, hub_options

DTYPES = ("float32", "bfloat16", "float16")

# flag → GenerationConfig field, for the settings passed through unchanged when given.
SETTINGS = ("temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size", "min_new_tokens",
            "num_beams", "num_return_sequences")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="checkpoint directory or Hugging Face Hub id (with its tokenizer files); omitted "
                             "(a single positional argument is the prompt): the tiny GPT-2 embedded in twinformers")
    parser.add_argument("prompt", nargs="?", metavar="PROMPT",
                        help="the text to continue; '-' or absent with a pipe: read it from stdin")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="pt", help="framework to run (default pt)")
    parser.add_argument("--dtype", choices=DTYPES, help="parameter / compute dtype (default: float32)")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (default 50)")
    parser.add_argument("--min-new-tokens", type=int, help="suppress EOS until this many tokens are generated")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy search")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--top-k", type=int, help="keep the k most likely tokens when sampling")
    parser.add_argument("--top-p", type=float, help="nucleus sampling mass")
    parser.add_argument("--repetition-penalty", type=float, help="> 1 discourages tokens already present")
    parser.add_argument("--no-repeat-ngram-size", type=int, help="never repeat an n-gram of this size")
    parser.add_argument("--num-beams", type=int, help="beam search width (printed at the end, not streamed)")
    parser.add_argument("--num-return-sequences", type=int, help="sequences to return (with sampling or beams)")
    parser.add_argument("--stop", action="append", metavar="TEXT",
                        help="stop when the text contains TEXT (repeatable)")
    parser.add_argument("--seed", type=int, help="sampling seed (reproducible output)")
    parser.add_argument("--json", action="store_true",
                        help='print [{"generated_text": ...}] as JSON at the end instead of streaming')
    parser.add_argument("--verbose", action="store_true", help="keep the frameworks' native log lines")
    add_hub_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        generate(args)
    except (OSError, ValueError, ImportError, TypeError) as err:
        print(f"twinformers generate: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    return 0


def stdin_is_piped() -> bool:
    """stdin is a pipe or a file (not a terminal, not /dev/null)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def resolve_inputs(args: argparse.Namespace) -> tuple[str, str]:
    """(model, prompt) from the positional arguments and stdin (see the module docstring)."""
    from ..demo.embedded import embedded_model_path

    model, prompt = args.model, args.prompt
    if prompt is None and model is not None and model != "-" and not stdin_is_piped():
        model, prompt = None, model  # one argument and no pipe: the prompt, for the embedded model
    elif prompt is None and model == "-":
        model, prompt = None, "-"
    if prompt is None:
        if not stdin_is_piped():
            raise ValueError("PROMPT is missing: twinformers generate [MODEL] PROMPT (or '-' / a pipe to read it "
                             "from stdin)")
        prompt = "-"
    if prompt == "-":
        prompt = sys.stdin.read()
        if prompt.endswith("\n"):
            prompt = prompt[:-1]
    if not prompt:
        raise ValueError("the prompt is empty")
    return (model if model is not None else embedded_model_path()), prompt


@contextlib.contextmanager
def quiet_native_logs(enabled: bool) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (TensorFlow's and XLA's C++ logging writes there directly, around
    Python's sys.stderr), and ask TensorFlow for errors only; Python exceptions still propagate."""
    if not enabled:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_kwargs(backend: str, dtype: str | None) -> dict[str, Any]:
    """The `from_pretrained` dtype argument of each backend."""
    if dtype is None or dtype == "float32":
        return {}
    if backend == "pt":
        return {"torch_dtype": dtype}
    if backend == "flax":
        import jax.numpy as jnp

        return {"dtype": getattr(jnp, dtype)}
    import keras

    keras.config.set_dtype_policy(dtype)  # the TF twins build their layers with the global policy
    return {}


def generate(args: argparse.Namespace) -> None:
    """Load the tokenizer and the backend's causal LM, then generate (streaming with a TextStreamer on stdout)."""
    from ..generation.streamers import TextStreamer
    from ..tokenization.auto import AutoTokenizer

    model_path, prompt = resolve_inputs(args)
    hub = hub_options(args)
    tokenizer = AutoTokenizer.from_pretrained(model_path, **hub)
    input_ids = [tokenizer.encode(prompt)]
    if not input_ids[0]:
        raise ValueError("the prompt encodes to no tokens")
    settings: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    for name in SETTINGS:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.stop:
        settings["stop_strings"], settings["tokenizer"] = list(args.stop), tokenizer
    stream = not args.json and (args.num_beams or 1) == 1 and (args.num_return_sequences or 1) == 1
    with quiet_native_logs(not args.verbose):
        backend = importlib.import_module(f"twinformers.{args.backend}")
        model = backend.AutoModelForCausalLM.from_pretrained(model_path, **hub, **load_kwargs(args.backend,
                                                                                             args.dtype))
        defaults = model.generation_config
        if defaults.pad_token_id is None:
            # One unpadded prompt never needs padding: this only avoids the "Setting pad_token_id" warning.
            settings["pad_token_id"] = (defaults.eos_token_ids or [0])[0]
        streamer = TextStreamer(tokenizer) if stream else None
        sequences = model.generate(_as_backend_ids(args.backend, input_ids), streamer=streamer, **settings)
    if stream:
        return
    texts = [prompt + tokenizer.decode(list(row[len(input_ids[0]):]), skip_special_tokens=True)
             for row in _as_lists(sequences)]
    if args.json:
        print(json.dumps([{"generated_text": text} for text in texts], ensure_ascii=False))
    else:
        print("\n\n".join(texts))


def _as_backend_ids(backend: str, input_ids: list[list[int]]) -> Any:
    if backend == "pt":
        import torch

        return torch.tensor(input_ids)
    import numpy as np

    return np.asarray(input_ids, dtype=np.int32)


def _as_lists(sequences: Any) -> list[list[int]]:
    import numpy as np

    if hasattr(sequences, "cpu"):
        sequences = sequences.cpu()
    return np.asarray(sequences).tolist()
