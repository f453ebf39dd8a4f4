"""A GPT-J-6B-shaped checkpoint (random bf16 weights, ~12 GB, sharded safetensors), written without holding it
in memory, and its load / forward / generate numbers per backend.

    python benchmarks/make_gptj6b.py write DIR [--layers 28] [--shard 2GB]
    python benchmarks/make_gptj6b.py run DIR --backend pt|tf|flax [--new-tokens 8] [--cap-gb 15]
    python benchmarks/make_gptj6b.py delete DIR

`write` streams every tensor in row blocks of at most 64 MB, cut from one 128 MB pool of random bf16 values at
random offsets (LayerNorm weights are ones): its own resident memory stays ~0.3 GB whatever the model size.
`run` measures in a fresh subprocess (`bench_load.py`'s child: peak RSS added by `from_pretrained` + one
forward, then one greedy `generate` of `--new-tokens` tokens, timed with its compilation where the backend
compiles) while this process watches
the child's resident set and kills it above `--cap-gb` (the machine is shared: better a recorded failure
than the OOM killer picking a neighbour). Run one backend at a time; check `free -g` first.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_load import CHILD, weights_bytes  # noqa: E402

BLOCK_BYTES = 64 * 2**20
POOL_VALUES = 64 * 2**20  # 128 MB of bf16


def write(directory: str, layers: int, shard: str) -> int:
    """Write config.json and the sharded bf16 safetensors; returns the weights' bytes."""
    from twinformers.checkpoints.files import SAFE_WEIGHTS_NAME, bfloat16_dtype
    from twinformers.checkpoints.safetensors import write_safetensors
    from twinformers.checkpoints.sharding import save_sharded
    from twinformers.configuration import GPTJConfig
    from twinformers.conversion.tables import expected_shapes

    bf16 = bfloat16_dtype()
    config = GPTJConfig(n_layer=layers, torch_dtype="bfloat16", architectures=["GPTJForCausalLM"])
    config.save_pretrained(directory)
    shapes = expected_shapes(config, "causal_lm")
    rng = np.random.default_rng(0)
    pool = np.empty(POOL_VALUES, bf16)
    for start in range(0, POOL_VALUES, POOL_VALUES // 16):  # in pieces: no float32 copy of the whole pool
        piece = pool[start:start + POOL_VALUES // 16]
        piece[:] = (0.02 * rng.standard_normal(piece.shape, dtype=np.float32)).astype(bf16)

    def blocks(name: str):
        shape = shapes[name]
        row = int(np.prod(shape[1:], dtype=np.int64))
        step = max(1, BLOCK_BYTES // (2 * row))
        for start in range(0, shape[0], step):
            rows = min(step, shape[0] - start)
            offset = int(rng.integers(0, POOL_VALUES - rows * row + 1))
            yield pool[offset:offset + rows * row].reshape((rows, *shape[1:]))

    def values(name: str):
        return np.ones(shapes[name], bf16) if name.endswith(("ln_1.weight", "ln_f.weight")) else blocks(name)

    def write_shard(path: str, names: list[str]) -> None:
        started = time.perf_counter()
        write_safetensors(path, metadata={"format": "pt"}, specs={n: (bf16, shapes[n]) for n in names}, fetch=values)
        print(f"  {os.path.basename(path)}: {os.path.getsize(path) / 1e9:.2f} GB in "
              f"{time.perf_counter() - started:.0f} s", flush=True)

    sizes = [(name, int(np.prod(shape, dtype=np.int64)) * 2) for name, shape in shapes.items()]
    save_sharded(directory, sizes, write_shard, SAFE_WEIGHTS_NAME, shard)
    return weights_bytes(directory)


def run(directory: str, backend: str, new_tokens: int, cap: int) -> dict:
    """One backend in a watched subprocess; the child's numbers, or the reason it stopped."""
    # stderr to a file, not a pipe: TensorFlow logs more than a pipe holds while we only poll, and a writer
    # blocked on a full pipe kept the finished child from exiting.
    log = tempfile.TemporaryFile("w+")
    child = subprocess.Popen([sys.executable, "-c", CHILD, backend, directory, "bfloat16", str(new_tokens)],
                             stdout=subprocess.PIPE, stderr=log, text=True)
    peak_seen = 0
    started = last_report = time.perf_counter()
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/status") as f:
                rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            break
        peak_seen = max(peak_seen, rss)
        if time.perf_counter() - last_report > 15:  # a timeline, to see where memory goes
            last_report = time.perf_counter()
            print(f"  {last_report - started:5.0f} s: {rss / 2**30:.2f} GiB resident", file=sys.stderr, flush=True)
        if rss > cap:
            child.kill()
            child.wait()
            return {"killed_at_rss": rss, "cap": cap}
        time.sleep(0.05)
    out, _ = child.communicate()
    log.seek(0)
    err = log.read()
    if child.returncode:
        return {"returncode": child.returncode, "stderr": err[-2000:], "peak_seen": peak_seen}
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["write", "run", "delete"])
    parser.add_argument("directory")
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--shard", default="2GB")
    parser.add_argument("--backend", choices=["pt", "tf", "flax"])
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--cap-gb", type=float, default=15.0)
    args = parser.parse_args()
    if args.action == "write":
        started = time.perf_counter()
        size = write(args.directory, args.layers, args.shard)
        print(f"wrote {size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s")
    elif args.action == "delete":
        shutil.rmtree(args.directory)
    else:
        size = weights_bytes(args.directory)
        result = run(args.directory, args.backend, args.new_tokens, int(args.cap_gb * 2**30))
        result["checkpoint_bytes"] = size
        for name, peak in (("load", "peak_load"), ("forward", "peak"), ("generate", "peak_after_generate")):
            if peak in result:
                result[f"ratio_{name}"] = (result[peak] - result["baseline"]) / size
        print(json.dumps(result))


if __name__ == "__main__":
    main()
