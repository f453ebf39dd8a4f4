"""Peak memory of `from_pretrained` + one forward, per backend × file format × dtype, as a multiple of the
checkpoint's bytes (the goal is ≤ 1.1× everywhere).

A random float32 GPT-2 checkpoint (124M by default, 498 MB) is written once as `model.safetensors`, then
converted to sharded safetensors, `pytorch_model.bin`, `tf_model.h5` and `flax_model.msgpack`. Every
measurement runs in a fresh subprocess: it imports its framework and the model class, resets its
high-water mark (`/proc/self/clear_refs` 5), records its resident set (the baseline), loads, runs one
forward on 8 tokens, and reports `VmHWM − baseline` (file-backed pages of memory maps count too).

`--runtime-baseline` measures every cell a second time, in another fresh subprocess that runs one tiny
matmul (2×2, the same in each framework) before taking its baseline, and prints that ratio in a second
column. Importing torch starts its runtime; importing jax does not: the process's first XLA compilation
starts the CPU compiler and runtime (~50 MB resident for good) and its first dot ~13 MB more, whichever model
runs. The first column keeps those in the load's peak (the goal is stated on it); the second shows what
loading and running the model adds to a framework that is already running.

    python benchmarks/bench_load.py [--layers 12] [--hidden 768] [--backends pt,tf,flax]
        [--formats safetensors,sharded,bin,h5,msgpack] [--dtypes float32,bfloat16] [--repeat 1]
        [--runtime-baseline]

The dtype column is the model's parameter dtype: PyTorch `torch_dtype=`, TensorFlow `dtype=`, Flax
`param_dtype=` (a float32 file cast on load). Writes nothing into the repository; paste the table into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import json, sys, time

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

backend, path, dtype, new_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
runtime_in_baseline = sys.argv[5:] == ["runtime"]
import numpy as np
ids = np.arange(1, 9, dtype=np.int32)[None]
if backend == "pt":
    import torch
    from twinformers.pt import AutoModelForCausalLM
    load = lambda: AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype)
    start_runtime = lambda: float((torch.ones(2, 2) @ torch.ones(2, 2)).sum())
    forward = lambda model: model(torch.from_numpy(ids).long()).logits.detach().float().numpy()
    generate = lambda model: model.generate(torch.from_numpy(ids).long(), max_new_tokens=new_tokens,
                                            do_sample=False)
elif backend == "tf":
    import tensorflow as tf
    from twinformers.tf import AutoModelForCausalLM
    load = lambda: AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    start_runtime = lambda: float(tf.reduce_sum(tf.ones((2, 2)) @ tf.ones((2, 2))))
    forward = lambda model: np.asarray(tf.cast(model(ids).logits, tf.float32))
    generate = lambda model: model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
else:
    import jax, jax.numpy as jnp
    from twinformers.flax import AutoModelForCausalLM
    load = lambda: AutoModelForCausalLM.from_pretrained(path, dtype=jnp.dtype(dtype), param_dtype=dtype)
    start_runtime = lambda: float((jnp.ones((2, 2)) @ jnp.ones((2, 2))).sum())
    forward = lambda model: np.asarray(model(ids).logits.astype(jnp.float32))
    generate = lambda model: model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
if runtime_in_baseline:
    start_runtime()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current resident set
baseline = status("VmRSS")
start = time.perf_counter()
model = load()
loaded = time.perf_counter()
peak_load = status("VmHWM")
logits = forward(model)
assert np.isfinite(logits).all()
result = {"baseline": baseline, "peak_load": peak_load, "peak": status("VmHWM"), "load_s": loaded - start,
          "forward_s": time.perf_counter() - loaded}
if new_tokens:  # one greedy generate: its time includes compiling the decoding step where the backend compiles
    start = time.perf_counter()
    generate(model)
    result["s_per_token"] = (time.perf_counter() - start) / new_tokens
    result["peak_after_generate"] = status("VmHWM")
print(json.dumps(result))
"""

FORMATS = {  # label → (converter --to, --format, max shard size)
    "safetensors": ("pt", "safetensors", "5GB"),
    "sharded": ("pt", "safetensors", "100MB"),
    "bin": ("pt", "bin", "5GB"),
    "h5": ("tf", "h5", "5GB"),
    "msgpack": ("flax", "msgpack", "5GB"),
}


def weights_bytes(directory: str) -> int:
    """Bytes of the weight files (everything but JSON)."""
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)
               if not name.endswith(".json"))


def make_checkpoint(directory: str, layers: int, hidden: int) -> None:
    """Write a GPT-2 config and random float32 `model.safetensors` tensor by tensor."""
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
        fetch=lambda k: (0.02 * rng.standard_normal(shapes[k], dtype=np.float32)),
    )


def measure(backend: str, directory: str, dtype: str, new_tokens: int = 0, runtime_in_baseline: bool = False) -> dict:
    """One load in a fresh subprocess; the child's JSON numbers."""
    command = [sys.executable, "-c", CHILD, backend, directory, dtype, str(new_tokens)]
    result = subprocess.run(command + (["runtime"] if runtime_in_baseline else []), capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{backend} {directory} {dtype} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def lowest_ratio(runs: list[dict], peak: str, size: int) -> float:
    """The lowest `peak` (a child's VmHWM field) minus baseline over the runs, ÷ `size`."""
    return min((run[peak] - run["baseline"]) / size for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--backends", default="pt,tf,flax")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per cell; the lowest is kept")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--runtime-baseline", action="store_true",
                        help="also measure with the framework's runtime started before the baseline (a 2x2 matmul)")
    args = parser.parse_args()
    from twinformers.conversion.converter import convert

    work = tempfile.mkdtemp(prefix="bench-load-", dir=args.workdir)
    try:
        source = os.path.join(work, "source")
        make_checkpoint(source, args.layers, args.hidden)
        directories = {}
        for label in args.formats.split(","):
            to, fmt, shard = FORMATS[label]
            directories[label] = os.path.join(work, label)
            convert(source, directories[label], to=to, fmt=fmt, max_shard_size=shard, progress=False)
        shutil.rmtree(source)
        size = weights_bytes(directories[next(iter(directories))])
        print(f"checkpoint: GPT-2 shape, {args.layers} layers, hidden {args.hidden}, float32: {size / 1e6:.0f} MB\n")
        header = "| backend | format | dtype | load (s) | peak RSS added | ÷ checkpoint | load alone ÷ checkpoint |"
        if args.runtime_baseline:
            header += " runtime in baseline: ÷ checkpoint | load alone |"
        print(header)
        print("|---" * (header.count("|") - 1) + "|")
        for backend in args.backends.split(","):
            for label, directory in directories.items():
                for dtype in args.dtypes.split(","):
                    size = weights_bytes(directory)
                    cold, warm = [], []
                    for _ in range(args.repeat):  # interleaved: both baselines see the same machine load
                        cold.append(measure(backend, directory, dtype))
                        if args.runtime_baseline:
                            warm.append(measure(backend, directory, dtype, runtime_in_baseline=True))
                    best = min(cold, key=lambda r: r["peak"] - r["baseline"])
                    ratios = [lowest_ratio(cold, "peak", size), lowest_ratio(cold, "peak_load", size)]
                    if warm:
                        ratios += [lowest_ratio(warm, "peak", size), lowest_ratio(warm, "peak_load", size)]
                    row = (f"| {backend} | {label} | {dtype} | {best['load_s']:.1f} | "
                           f"{(best['peak'] - best['baseline']) / 1e6:.0f} MB | "
                           + " | ".join(f"{r:.2f}×" for r in ratios) + " |")
                    print(row, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
