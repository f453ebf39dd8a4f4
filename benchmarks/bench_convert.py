"""Peak memory of `twinformers convert` on a synthetic ~1 GB GPT-2-shaped checkpoint, or on an existing one.

Each conversion runs in its own subprocess, with its progress bar on (stderr, discarded), which records its
resident set after the imports (the baseline) and its high-water mark after converting (`VmHWM`, which counts
file-backed pages of memory maps too). The extra memory is reported relative to the checkpoint size; the
goal is ≤ 0.2×.

    python benchmarks/bench_convert.py [--layers 16] [--hidden 1024] [--workdir DIR]
    python benchmarks/bench_convert.py --source DIR --workdir DIR

`--source` takes an existing sharded safetensors checkpoint (the GPT-J-6B one of `make_gptj6b.py write`) and
converts it to each other format and each result back to sharded safetensors, keeping one output pair on
disk at a time; a conversion that would leave under 1 GB of disk free is skipped (and says so).

Writes nothing into the repository; paste the printed table into docs/benchmarks-convert.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import json, sys, time

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
from twinformers.conversion.converter import convert
import h5py, msgpack, safetensors, tqdm  # every writer's imports, so the baseline holds them
baseline = status("VmRSS")
start = time.perf_counter()
convert(sys.argv[1], sys.argv[2], to=sys.argv[3], fmt=sys.argv[4], max_shard_size=sys.argv[5],
        dtype=sys.argv[6] or None, log=print)
seconds = time.perf_counter() - start
print(json.dumps({"baseline": baseline, "peak": status("VmHWM"), "seconds": seconds}))
"""

CASES = [  # (label, source directory name, --to, --format)
    ("PT safetensors → PT safetensors (5 GB shards)", "pt", "pt", "safetensors"),
    ("PT safetensors → TF h5", "pt", "tf", "h5"),
    ("PT safetensors → TF safetensors", "pt", "tf", "safetensors"),
    ("PT safetensors → Flax msgpack", "pt", "flax", "msgpack"),
    ("PT safetensors → Flax safetensors", "pt", "flax", "safetensors"),
    ("TF h5 → PT safetensors", "tf", "pt", "safetensors"),
    ("Flax msgpack → PT safetensors", "flax", "pt", "safetensors"),
]

SOURCE_CASES = {  # --targets name → (label, --to, --format, --max-shard-size, --dtype): source → it, then it → back
    "bin": ("PT bin (5 GB shards)", "pt", "bin", "5GB", ""),
    "h5": ("TF h5 (5 GB shards, float16: h5 holds no bfloat16)", "tf", "h5", "5GB", "float16"),
    "msgpack": ("Flax msgpack (5 GB shards)", "flax", "msgpack", "5GB", ""),
    "single": ("one PT safetensors file", "pt", "safetensors", "100GB", ""),
}


def make_checkpoint(directory: str, layers: int, hidden: int) -> int:
    """Write a GPT-2 config and random float32 `model.safetensors` tensor by tensor; returns its bytes."""
    from twinformers.checkpoints.safetensors import write_safetensors
    from twinformers.configuration import GPT2Config
    from twinformers.conversion.tables import expected_shapes

    config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=hidden // 64, architectures=["GPT2LMHeadModel"])
    config.save_pretrained(directory)
    shapes = {k: v for k, v in expected_shapes(config, "causal_lm").items() if k != "lm_head.weight"}  # tied
    rng = np.random.default_rng(0)
    write_safetensors(
        os.path.join(directory, "model.safetensors"), metadata={"format": "pt"},
        specs={k: (np.dtype(np.float32), s) for k, s in shapes.items()},
        fetch=lambda k: rng.standard_normal(shapes[k], dtype=np.float32),
    )
    return sum(int(np.prod(s)) * 4 for s in shapes.values())


def run_case(source: str, target: str, to: str, fmt: str, max_shard_size: str = "5GB", dtype: str = "") -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, source, target, to, fmt, max_shard_size, dtype],
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr)
    if "converting" not in result.stderr:
        raise RuntimeError(f"no progress bar on stderr: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_row(label: str, numbers: dict, size: int) -> None:
    extra = numbers["peak"] - numbers["baseline"]
    print(f"| {label} | {numbers['seconds']:.1f} | {numbers['baseline'] / 1e6:.0f} | "
          f"{numbers['peak'] / 1e6:.0f} | {extra / 1e6:.0f} MB | {extra / size:.3f}× |", flush=True)


DISK_MARGIN = 10**9  # left free for the machine's other users beyond each output


def run_source(source: str, work: str, targets: list[str]) -> None:
    """`--source`: the existing sharded safetensors checkpoint → each other format → back."""
    from twinformers.checkpoints.canonical import open_checkpoint

    checkpoint = open_checkpoint(source)
    size = sum(checkpoint.nbytes(k) for k in checkpoint)
    print(f"checkpoint: {source}: {checkpoint.weights_name}, {len(checkpoint.files) - 1} shards, {len(checkpoint)} "
          f"tensors, {size / 1e9:.2f} GB\n")
    print("| conversion | time (s) | baseline RSS (MB) | peak RSS (MB) | peak − baseline | ÷ checkpoint |")
    print("|---|---|---|---|---|---|")
    for label, to, fmt, max_shard_size, dtype in (SOURCE_CASES[name] for name in targets):
        there, back = os.path.join(work, "there"), os.path.join(work, "back")
        try:
            steps = [(f"sharded safetensors → {label}", source, there, (to, fmt, max_shard_size, dtype)),
                     (f"{label} → sharded safetensors", there, back, ("pt", "safetensors"))]
            for name, src, dst, args in steps:
                free = shutil.disk_usage(work).free
                if free < size + DISK_MARGIN or not os.path.isdir(src):
                    print(f"| {name} | skipped: {free / 1e9:.1f} GB of disk free | | | | |", flush=True)
                    continue
                print_row(name, run_case(src, dst, *args), size)
        finally:
            shutil.rmtree(there, ignore_errors=True)
            shutil.rmtree(back, ignore_errors=True)
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--source", default=None, help="an existing sharded safetensors checkpoint to convert")
    parser.add_argument("--targets", default=",".join(SOURCE_CASES), help="with --source: formats to convert to")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-convert-", dir=args.workdir)
    try:
        if args.source:
            run_source(args.source, work, args.targets.split(","))
            return
        sources = {"pt": os.path.join(work, "pt")}
        size = make_checkpoint(sources["pt"], args.layers, args.hidden)
        largest = 50257 * args.hidden * 4
        print(f"checkpoint: GPT-2 shape, {args.layers} layers, hidden {args.hidden}: {size / 1e9:.2f} GB "
              f"(largest tensor wte {largest / 1e6:.0f} MB = {largest / size:.2f}×)\n")
        from twinformers.conversion.converter import convert

        for kind, to, fmt in (("tf", "tf", "h5"), ("flax", "flax", "msgpack")):
            sources[kind] = os.path.join(work, kind)
            convert(sources["pt"], sources[kind], to=to, fmt=fmt, progress=False)
        print("| conversion | time (s) | baseline RSS (MB) | peak RSS (MB) | peak − baseline | ÷ checkpoint |")
        print("|---|---|---|---|---|---|")
        for label, source, to, fmt in CASES:
            target = os.path.join(work, "out")
            print_row(label, run_case(sources[source], target, to, fmt), size)
            shutil.rmtree(target)
            time.sleep(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
