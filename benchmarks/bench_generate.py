"""generate() benchmark: new tokens/s of every backend × family on ~124M configs, float32 on CPU.

Each (backend, family) runs in its own process (one framework's thread pools at a time) on randomly
initialized weights (speed does not depend on the values; EOS is disabled so every run makes all its
tokens). A 64-token prompt, 32 new tokens; cases: greedy batch 1 (the headline), greedy batch 8, sampling
batch 1 (top_k 50, top_p 0.9, temperature 0.8) and beam search batch 1 (4 beams). The first call's time
(TF/Flax: tracing + XLA compilation of the bucket) is reported apart from the steady-state median.

Usage: python benchmarks/bench_generate.py [--backends pt tf flax] [--families gpt2 gptj gpt_neo]
       [--cases greedy greedy_b8 sample beam] [--repeats 3] [--threads N] [--json out.json]

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


def set_threads(threads: int | None) -> None:
    """Size the thread pools before the frameworks start them."""
    if not threads:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)


def worker(backend: str, family: str, cases: list[str], repeats: int, threads: int | None) -> dict:
    set_threads(threads)
    import numpy as np

    import twinformers.configuration as configuration

    config = CONFIGS[family](configuration)
    start = time.perf_counter()
    if backend == "pt":
        import torch

        import twinformers.pt as module

        if threads:
            torch.set_num_threads(threads)

        model = getattr(module, LM_CLASS[family])(config).eval()

        def as_input(ids):
            return torch.as_tensor(ids)
    elif backend == "tf":
        import tensorflow as tf

        import twinformers.tf as module

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        model = getattr(module, LM_CLASS[family])(config)
        model.build()

        def as_input(ids):
            return ids
    else:
        import twinformers.flax as module

        model = getattr(module, LM_CLASS[family])(config)

        def as_input(ids):
            return ids
    build_s = time.perf_counter() - start
    result = {"backend": backend, "family": family, "threads": threads, "build_s": build_s, "cases": {}}
    rng = np.random.default_rng(0)
    for case in cases:
        batch, settings = CASES[case]["batch"], CASES[case]["settings"]
        ids = as_input(rng.integers(0, 50000, (batch, PROMPT)).astype(np.int32 if backend != "pt" else np.int64))
        kwargs = dict(max_new_tokens=NEW, pad_token_id=0, eos_token_id=None, seed=0, **settings)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            out = model.generate(ids, **kwargs)
            np.asarray(out if backend != "pt" else out.numpy())  # wait for the result
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
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="intra-op threads of every framework (default: theirs)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "FAMILY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker, args.cases, args.repeats, args.threads)))
        return

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    results = []
    for family in args.families:
        for backend in args.backends:
            command = [sys.executable, __file__, "--worker", backend, family, "--repeats", str(args.repeats),
                       "--cases", *args.cases] + (["--threads", str(args.threads)] if args.threads else [])
            run = subprocess.run(command, capture_output=True, text=True, env=env)
            lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode or not lines:
                print(f"{backend}/{family} failed:\n{run.stderr[-3000:]}", file=sys.stderr)
                continue
            results.append(json.loads(lines[-1][len("RESULT "):]))
            report_row(results[-1])
    print_tables(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


def report_row(result: dict) -> None:
    cases = ", ".join(f"{case} {c['new_tok_per_s']:.1f} tok/s (first {c['first_s']:.1f}s)"
                      for case, c in result["cases"].items())
    print(f"{result['backend']:>4} {result['family']:<8} {cases}", flush=True)


def print_tables(results: list[dict]) -> None:
    """Markdown tables: tok/s per case, and the ratios the goals are stated in."""
    by_key = {(r["backend"], r["family"]): r for r in results}
    cases = sorted({case for r in results for case in r["cases"]}, key=list(CASES).index)
    print("\n| family | backend | " + " | ".join(f"{c} tok/s" for c in cases) + " | first call (s) |")
    print("|---|---|" + "---|" * (len(cases) + 1))
    for r in results:
        cells = [f"{r['cases'][c]['new_tok_per_s']:.1f}" if c in r["cases"] else "-" for c in cases]
        first = r["cases"].get("greedy", next(iter(r["cases"].values())))["first_s"]
        print(f"| {r['family']} | {r['backend']} | " + " | ".join(cells) + f" | {first:.1f} |")
    if "greedy" in cases:
        print("\n| family | tf / pt | flax / pt | time vs gpt2 (same backend) |")
        print("|---|---|---|---|")
        for family in CONFIGS:
            if ("pt", family) not in by_key:
                continue
            pt = by_key[("pt", family)]["cases"]["greedy"]["new_tok_per_s"]
            ratios = []
            for backend in ("tf", "flax"):
                other = by_key.get((backend, family))
                ratios.append(f"{other['cases']['greedy']['new_tok_per_s'] / pt:.2f}" if other else "-")
            vs_gpt2 = []
            for backend in ("pt", "tf", "flax"):
                mine, base = by_key.get((backend, family)), by_key.get((backend, "gpt2"))
                if mine and base:
                    ratio = mine["cases"]["greedy"]["median_s"] / base["cases"]["greedy"]["median_s"]
                    vs_gpt2.append(f"{backend} {ratio:.2f}")
            print(f"| {family} | {ratios[0]} | {ratios[1]} | {', '.join(vs_gpt2)} |")


if __name__ == "__main__":
    main()
