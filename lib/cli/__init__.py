"""The `twinformers` command line: `main` dispatches to one module per subcommand (`convert`, `inspect`,
`generate`, `demo`), each imported only when its subcommand runs.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


def add_hub_arguments(parser: argparse.ArgumentParser, source: str = "") -> None:
    """`--revision` and `--local-files-only`, taken by every subcommand that reads a checkpoint; `source` names
    the positional argument they apply to in the help ("MODEL")."""
    parser.add_argument("--revision", help=f"Hub revision of {source}" if source else "Hub revision")
    parser.add_argument("--local-files-only", action="store_true",
                        help=f"never download {source + ' ' if source else ''}from the Hub")


def hub_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Hub options parsed by `add_hub_arguments`, as keyword arguments of the loaders."""
    return {"revision": args.revision, "local_files_only": args.local_files_only}


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like an exception while the block runs (so a staging directory is removed), and the
    previous handler is back afterwards: a command run in-process (tests, notebooks) leaves no handler behind."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
