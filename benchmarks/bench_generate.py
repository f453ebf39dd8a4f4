"""generate() benchmark: new tokens/s of every backend × family × precision (fp32, bf16, int8) on ~124M configs
on CPU, each against the machine's memory-read limit measured in the same run.

Each (backend, family) runs in its own process (one framework's thread pools at a time) on randomly
initialized weights (speed does not depend on the values; EOS is disabled so every run makes all its
tokens). A 64-token prompt, 32 new tokens; cases: greedy batch 1 (the headline), greedy batch 8, sampling
batch 1 (top_k 50, top_p 0.9, temperature 0.8) and beam search batch 1 (4 beams). The first call's time
(TF/Flax: tracing + XLA compilation of the bucket) is reported apart from the steady-state median.

Backends: pt (PyTorch, then `model.pack_for_inference()`: the weights laid out or packed for batch-1 decoding,
docs/benchmarks.md), pt-plain (PyTorch without it, opt-in), tf, flax.

Precisions: fp32; bf16 (PyTorch `model.to(torch.bfloat16)`, TensorFlow the "bfloat16" Keras policy — what
`from_pretrained(..., dtype="bfloat16")` sets while it builds —, Flax `dtype=bfloat16` with `to_bf16` params);
int8 (`model.quantize("int8")`, weight-only).

The limit: batch-1 decoding reads every weight once per token, so tokens/s can be at most
bandwidth / (weight bytes per token). The bandwidth is measured here (`read_bandwidth`: the faster of a NumPy sum
and a BLAS matrix-vector product over a 1 GiB array, best of 5, in a child process with the cells' thread count,
before and after the cells; the better one counts); the weight bytes per token are every
weight of the model except the position table and, when the LM head has its own weight (untied, or int8), the
token table (a gather reads one row of it). The KV cache and activations are left out, so the limit is an upper
bound. Cells are interleaved over `--rounds` (each round runs every cell once, in its own process) and the best
round counts: the machine may be shared.

Usage: python benchmarks/bench_generate.py [--backends pt tf flax pt-plain] [--families gpt2 gptj gpt_neo]
       [--precisions fp32 bf16 int8] [--cases greedy greedy_b8 sample beam] [--repeats 3] [--rounds 1]
       [--threads N] [--json out.json]

--threads sets every framework's intra-op thread count (torch.set_num_threads, TensorFlow's intra/inter-op
pools, XLA's CPU pool); on a machine shared with other jobs, 1 thread avoids the stalls of a parallel op
waiting for a descheduled second thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "gpt2": lambda c: c.GPT2Config(),  # gpt2 (124M)
    "gptj": lambda c: c.GPTJConfig(n_embd=768, n_layer=12, n_head=12, rotary_dim=64, n_positions=2048),
    "gpt_neo": lambda c: c.GPTNeoConfig(
        hidden_size=768, num_layers=12, num_heads=12, attention_types=[[["global", "local"], 6]]
    ),  # EleutherAI/gpt-neo-125M
}
LM_CLASS = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}
CASES = {
    "greedy": dict(batch=1, settings={}),
    "greedy_b8": dict(batch=8, settings={}),
    "sample": dict(batch=1, settings=dict(do_sample=True, top_k=50, top_p=0.9, temperature=0.8)),
    "beam": dict(batch=1, settings=dict(num_beams=4)),
}
PROMPT, NEW = 64, 32
PRECISIONS = ("fp32", "bf16", "int8")


def read_bandwidth(threads: int | None = None, gib: float = 1.0, repeats: int = 5) -> dict[str, float]:
    """Bytes/s two sequential readers get over a `gib` GiB float32 array, best of `repeats` each: NumPy's sum and a
    BLAS matrix-vector product (batch-1 decoding's own access pattern). Both count because either can fall short of
    the memory's rate: on an AVX2-only EPYC NumPy's pairwise sum read 10.7 GB/s where OpenBLAS's sgemv read 18.1 (and
    the TF and Flax twins' fp32 decode 11.6). Runs in a child process whose BLAS gets `threads` threads, as the cells'
    frameworks do."""
    env = dict(os.environ)
    if threads:
        env.update({name: str(threads) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    command = [sys.executable, __file__, "--bandwidth-worker", str(gib), str(repeats)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(run.stdout.splitlines()[-1])


def bandwidth_worker(gib: float, repeats: int) -> dict[str, float]:
    """`read_bandwidth`'s measurement, in its own process."""
    import numpy as np

    array = np.ones(int(gib * 2**30) // 4, np.float32)
    matrix, vector = array.reshape(-1, 4096), np.ones(4096, np.float32)
    readers = {"numpy_sum": array.sum, "blas_gemv": lambda: matrix @ vector}
    best = dict.fromkeys(readers, float("inf"))
    for _ in range(repeats):
        for name, read in readers.items():  # interleaved, so both see the same moments of a shared machine
            start = time.perf_counter()
            read()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: array.nbytes / seconds for name, seconds in best.items()}


def weight_bytes_per_token(named_sizes: dict[str, int]) -> int:
    """Bytes one decode step reads: every weight but the position table, and but the token table when the LM
    head has its own weight (`named_sizes`: weight name → bytes, tied weights once)."""
    def has(part: str) -> bool:
        return any(part in name for name in named_sizes)

    skip = ("wpe",) + (("wte",) if has("lm_head") else ())
    return sum(size for name, size in named_sizes.items() if not any(part in name for part in skip))


def set_threads(threads: int | None) -> None:
    """Size the thread pools before the frameworks start them."""
    if not threads:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)


def worker(backend: str, family: str, precision: str, cases: list[str], repeats: int, threads: int | None) -> dict:
    set_threads(threads)
    import numpy as np

    import twinformers.configuration as configuration

    config = CONFIGS[family](configuration)
    start = time.perf_counter()
    if backend in ("pt", "pt-plain"):
        import torch

        import twinformers.pt as module

        if threads:
            torch.set_num_threads(threads)

        model = getattr(module, LM_CLASS[family])(config).eval()
        if precision == "bf16":
            model.to(torch.bfloat16)
        elif precision == "int8":
            model.quantize("int8")
        if backend == "pt":
            model.pack_for_inference()
        seen, sizes = set(), {}
        for name, tensor in model.state_dict().items():
            if tensor.data_ptr() not in seen:  # a tied head is the token table
                seen.add(tensor.data_ptr())
                sizes[name] = tensor.numel() * tensor.element_size()

        def as_input(ids):
            return torch.as_tensor(ids)
    elif backend == "tf":
        import keras
        import tensorflow as tf

        import twinformers.tf as module

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        if precision == "bf16":  # as from_pretrained(..., dtype="bfloat16") builds: sublayers read the global policy
            keras.config.set_dtype_policy("bfloat16")
        model = getattr(module, LM_CLASS[family])(config)
        model.build()
        if precision == "int8":
            model.quantize("int8")
        # Paths without the model's own name ("gpt2lm_head_model/..." would read as an LM head weight).
        sizes = {v.path.split("/", 1)[1]: int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights}

        def as_input(ids):
            return ids
    else:
        import jax.numpy as jnp

        import twinformers.flax as module
        from twinformers.flax.modeling_utils import flatten_params

        model = getattr(module, LM_CLASS[family])(config, dtype=jnp.bfloat16 if precision == "bf16" else jnp.float32)
        if precision == "bf16":
            model.params = model.to_bf16(model.params)
        elif precision == "int8":
            model.quantize("int8")
        sizes = {path: int(leaf.nbytes) for path, leaf in flatten_params(model.params).items()}

        def as_input(ids):
            return ids
    build_s = time.perf_counter() - start
    result = {"backend": backend, "family": family, "precision": precision, "threads": threads, "build_s": build_s,
              "weight_bytes_per_token": weight_bytes_per_token(sizes), "cases": {}}
    rng = np.random.default_rng(0)
    torch_backend = backend.startswith("pt")
    for case in cases:
        batch, settings = CASES[case]["batch"], CASES[case]["settings"]
        ids = as_input(rng.integers(0, 50000, (batch, PROMPT)).astype(np.int64 if torch_backend else np.int32))
        kwargs = dict(max_new_tokens=NEW, pad_token_id=0, eos_token_id=None, seed=0, **settings)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            out = model.generate(ids, **kwargs)
            np.asarray(out.numpy() if torch_backend else out)  # wait for the result
            times.append(time.perf_counter() - start)
        steady = statistics.median(times[1:])
        result["cases"][case] = {
            "batch": batch, "first_s": times[0], "median_s": steady, "times_s": times[1:],
            "new_tok_per_s": NEW / steady, "batch_tok_per_s": batch * NEW / steady,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["pt", "tf", "flax"])
    parser.add_argument("--families", nargs="+", default=list(CONFIGS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds over every cell; the best counts")
    parser.add_argument("--threads", type=int, help="intra-op threads of every framework (default: theirs)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", nargs=3, metavar=("BACKEND", "FAMILY", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--bandwidth-worker", nargs=2, type=float, metavar=("GIB", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bandwidth_worker:
        gib, repeats = args.bandwidth_worker
        print(json.dumps(bandwidth_worker(gib, int(repeats))))
        return
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker, args.cases, args.repeats, args.threads)))
        return

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    bandwidth = [read_bandwidth(args.threads)]
    print(f"read bandwidth: {describe_bandwidth(bandwidth[0])}", flush=True)
    best: dict[tuple, dict] = {}
    for _ in range(args.rounds):
        for family in args.families:
            for precision in args.precisions:
                for backend in args.backends:
                    command = [sys.executable, __file__, "--worker", backend, family, precision,
                               "--repeats", str(args.repeats), "--cases", *args.cases]
                    command += ["--threads", str(args.threads)] if args.threads else []
                    run = subprocess.run(command, capture_output=True, text=True, env=env)
                    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
                    if run.returncode or not lines:
                        print(f"{backend}/{family}/{precision} failed:\n{run.stderr[-3000:]}", file=sys.stderr)
                        continue
                    result = json.loads(lines[-1][len("RESULT "):])
                    report_row(result)
                    key = (backend, family, precision)
                    best[key] = _better(best.get(key), result)
    bandwidth.append(read_bandwidth(args.threads))
    print(f"read bandwidth after: {describe_bandwidth(bandwidth[1])}", flush=True)
    results = list(best.values())
    print_tables(results, max(max(readers.values()) for readers in bandwidth))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"read_bandwidth_bytes_per_s": bandwidth, "results": results}, f, indent=2)


def describe_bandwidth(readers: dict[str, float]) -> str:
    return ", ".join(f"{name} {rate / 1e9:.1f} GB/s" for name, rate in readers.items())


def _better(old: dict | None, new: dict) -> dict:
    """Per case, the round with the shorter median."""
    if old is None:
        return new
    merged = dict(old, cases=dict(old["cases"]))
    for case, c in new["cases"].items():
        if case not in merged["cases"] or c["median_s"] < merged["cases"][case]["median_s"]:
            merged["cases"][case] = c
    return merged


def report_row(result: dict) -> None:
    cases = ", ".join(f"{case} {c['new_tok_per_s']:.1f} tok/s (first {c['first_s']:.1f}s)"
                      for case, c in result["cases"].items())
    print(f"{result['backend']:>8} {result['family']:<8} {result['precision']:<4} {cases}", flush=True)


def print_tables(results: list[dict], bandwidth: float) -> None:
    """Markdown tables: tok/s per case; greedy batch 1 against the bandwidth limit and against fp32."""
    by_key = {(r["backend"], r["family"], r["precision"]): r for r in results}
    cases = sorted({case for r in results for case in r["cases"]}, key=list(CASES).index)
    print(f"\nread bandwidth {bandwidth / 1e9:.1f} GB/s")
    print("\n| family | backend | precision | " + " | ".join(f"{c} tok/s" for c in cases) + " | first call (s) |")
    print("|---|---|---|" + "---|" * (len(cases) + 1))
    for r in results:
        cells = [f"{r['cases'][c]['new_tok_per_s']:.1f}" if c in r["cases"] else "-" for c in cases]
        first = r["cases"].get("greedy", next(iter(r["cases"].values())))["first_s"]
        print(f"| {r['family']} | {r['backend']} | {r['precision']} | " + " | ".join(cells) + f" | {first:.1f} |")
    if "greedy" not in cases:
        return
    print("\n| family | backend | precision | weight MB/token | limit tok/s | greedy tok/s | % of limit | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        tok_s = r["cases"]["greedy"]["new_tok_per_s"]
        limit = bandwidth / r["weight_bytes_per_token"]
        fp32 = by_key.get((r["backend"], r["family"], "fp32"))
        ratio = f"{tok_s / fp32['cases']['greedy']['new_tok_per_s']:.2f}x" if fp32 else "-"
        print(f"| {r['family']} | {r['backend']} | {r['precision']} | {r['weight_bytes_per_token'] / 1e6:.0f} | "
              f"{limit:.1f} | {tok_s:.1f} | {100 * tok_s / limit:.0f}% | {ratio} |")


if __name__ == "__main__":
    main()
