"""The `twinformers` command line. Subcommands are registered in `COMMANDS`; each lives in its own module
and only parses arguments before calling the library."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from .._backends import quiet_tensorflow

# subcommand → (module, one-line help). The module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("twinformers.cli.convert", "convert a checkpoint between PyTorch, TensorFlow and Flax layouts"),
    "inspect": ("twinformers.cli.inspect", "describe a checkpoint: family, size, dtypes, files, loadability"),
    "generate": ("twinformers.cli.generate", "stream a continuation of a prompt with any backend"),
    "export": ("twinformers.cli.export", "export a serving artifact (ONNX, SavedModel, .keras, jax.export)"),
    "demo": ("twinformers.cli.demo", "fine-tune, convert and run the embedded tiny GPT-2 in all three backends"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinformers",
        description="GPT-2, GPT-J and GPT-Neo as PyTorch, TensorFlow and Flax twins.",
    )
    parser.add_argument("--version", action="version", version=f"twinformers {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_tensorflow()  # before any command imports TensorFlow
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
