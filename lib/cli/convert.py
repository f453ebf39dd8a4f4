"""`twinformers convert SRC DST`: any checkpoint layout → any other (see `twinformers.conversion.converter`)."""

from __future__ import annotations

import argparse
import sys

from ..conversion.converter import DTYPES, TARGETS
from . import add_hub_arguments, hub_options, terminate_as_exit
from .inspect import format_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint directory or Hugging Face Hub id")
    parser.add_argument("dst", help="new directory to write (must not exist unless --force)")
    parser.add_argument("--to", default="pt", choices=list(dict.fromkeys(to for to, _ in TARGETS)),
                        help="target framework layout (default: pt; 'safetensors' = pt as safetensors)")
    parser.add_argument("--format", dest="fmt", choices=sorted({fmt for _, fmt in TARGETS}),
                        help="file format: pt safetensors|bin, tf h5|safetensors, flax msgpack|safetensors "
                             "(default: the framework's Hugging Face default)")
    parser.add_argument("--dtype", choices=DTYPES, help="cast floating weights (default: keep)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest file before sharding (default: 5GB)")
    parser.add_argument("--verify", action="store_true",
                        help="compare source and target outputs in the installed twins; fails above "
                             "1e-5 × max(1, max |output|) in fp32, and then keeps nothing")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_hub_arguments(parser, "SRC")


def run(args: argparse.Namespace) -> int:
    from ..conversion.converter import convert

    log = (lambda message: None) if args.quiet else print
    try:
        with terminate_as_exit():  # a terminated conversion removes its staging directory
            result = convert(
                args.src, args.dst, to=args.to, fmt=args.fmt, dtype=args.dtype, max_shard_size=args.max_shard_size,
                force=args.force, verify=args.verify, progress=not args.quiet, log=log,
                **hub_options(args),
            )
    except FileExistsError:
        print(f"twinformers convert: error: {args.dst} already exists; pass --force to replace it", file=sys.stderr)
        return 1
    except (OSError, ValueError, ImportError, KeyError) as err:
        message = " ".join(str(err).split())  # one line, whatever the library's message layout
        print(f"twinformers convert: error: {message}", file=sys.stderr)
        return 1
    log(
        f"wrote {result.tensors} tensors ({format_size(result.total_bytes)}, {result.family} {result.head}) "
        f"as {result.target.weights_name} to {result.destination}: {', '.join(result.files)}"
    )
    if result.verification:
        twins = ", ".join(dict.fromkeys(backend for backend, _, _, _ in result.verification))
        backend, name, diff, bound = max(result.verification, key=lambda row: row[2] / row[3])
        log(f"verified: {result.destination} gives the source's outputs in {twins} "
            f"(closest to its bound: {backend} {name}, max |Δ| {diff:.1e} ≤ {bound:.1e})")
    return 0
