"""Flax twin benchmark: forward tokens/s against the PyTorch twin, cached greedy decoding tokens/s, and load
peak RSS, on ~124M configs of each family (GPT-J and GPT-Neo at GPT-2-small sizes), float32 on CPU.

PyTorch and Flax run the same weights (the PyTorch model is loaded from the Flax model's saved safetensors)
and their timings are interleaved call by call, so load changes on a shared machine hit both alike; the
medians are reported.

Usage: python benchmarks/bench_flax.py [--families gpt2 gptj gpt_neo] [--seq 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _set_threads(threads: int) -> None:
    """XLA's CPU thread pool is sized when jax starts: set it before the first import."""
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()


CONFIGS = {
    "gpt2": lambda c: c.GPT2Config(),  # gpt2 (124M)
    "gptj": lambda c: c.GPTJConfig(n_embd=768, n_layer=12, n_head=12, rotary_dim=64, n_positions=2048),
    "gpt_neo": lambda c: c.GPTNeoConfig(
        hidden_size=768, num_layers=12, num_heads=12, attention_types=[[["global", "local"], 6]]
    ),  # EleutherAI/gpt-neo-125M
}
LM_CLASS = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}

_LOAD_SCRIPT = """
import json, sys, time
import jax, twinformers.flax as fx
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
# Warm-up: a tiny model's load, so lazily loaded code pages are not counted; then reset VmHWM.
fx.GPT2LMHeadModel.from_pretrained(sys.argv[3])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS:")
start = time.perf_counter()
model = getattr(fx, sys.argv[1]).from_pretrained(sys.argv[2])
jax.block_until_ready(model.params)
seconds = time.perf_counter() - start
print(json.dumps({"peak_above_imports": status("VmHWM:") - base, "seconds": seconds}))
"""


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, called in turn `repeats` times after one warm-up call each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _set_threads(args.threads)

    import jax
    import numpy as np
    import torch

    import twinformers.configuration as configuration
    import twinformers.flax as fx
    import twinformers.pt as pt

    torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__}, torch {torch.__version__}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    for family in args.families:
        config = CONFIGS[family](configuration)
        flax_model = getattr(fx, LM_CLASS[family])(config)
        with tempfile.TemporaryDirectory() as tmp:
            flax_model.save_pretrained(os.path.join(tmp, "full"))
            pt_model = getattr(pt, LM_CLASS[family]).from_pretrained(os.path.join(tmp, "full")).eval()
            checkpoint_bytes = os.path.getsize(os.path.join(tmp, "full", "model.safetensors"))
            tiny = configuration.GPT2Config(vocab_size=97, n_positions=19, n_embd=24, n_layer=2, n_head=3)
            fx.GPT2LMHeadModel(tiny).save_pretrained(os.path.join(tmp, "tiny"))
            load = json.loads(subprocess.run(
                [sys.executable, "-c", _LOAD_SCRIPT, LM_CLASS[family], os.path.join(tmp, "full"),
                 os.path.join(tmp, "tiny")], capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1])
        ids = rng.integers(0, config.vocab_size, size=(1, args.seq))
        row = {"family": family,
               "params_M": round(sum(x.size for x in jax.tree_util.tree_leaves(flax_model.params)) / 1e6, 1)}
        for implementation in ("eager", "sdpa"):
            flax_model.config._attn_implementation = implementation
            pt_model.config._attn_implementation = implementation
            seconds = forward_seconds(flax_model, pt_model, ids, args.repeats)
            row[f"pt_tok_s_{implementation}"] = round(args.seq / seconds["pt"], 1)
            row[f"flax_tok_s_{implementation}"] = round(args.seq / seconds["flax"], 1)
            row[f"flax_vs_pt_{implementation}"] = round(seconds["pt"] / seconds["flax"], 2)
        flax_model.config._attn_implementation = "sdpa"
        row["flax_decode_tok_s"] = round(args.decode_steps / decode_seconds(flax_model, ids[:, :16],
                                                                            args.decode_steps), 1)
        row["checkpoint_MB"] = round(checkpoint_bytes / 1e6)
        row["load_peak_MB"] = round(load["peak_above_imports"] / 1e6)
        row["load_peak_ratio"] = round(load["peak_above_imports"] / checkpoint_bytes, 3)
        row["load_s"] = round(load["seconds"], 2)
        print(json.dumps(row), flush=True)
        del flax_model, pt_model


def forward_seconds(flax_model, pt_model, ids, repeats: int) -> dict:
    """Median seconds of a (1, T) forward without cache, PyTorch and Flax interleaved."""
    import torch

    torch_ids = torch.from_numpy(ids)

    def run_pt():
        with torch.no_grad():
            pt_model(torch_ids, use_cache=False)

    def run_flax():
        flax_model(ids, use_cache=False).logits.block_until_ready()

    return interleaved({"pt": run_pt, "flax": run_flax}, repeats)


def decode_seconds(model, prompt, steps: int) -> float:
    """Greedy decoding over a static cache, one token per call: every step reuses one compiled program."""
    import jax.numpy as jnp

    def run():
        cache = model.init_cache(prompt.shape[0], prompt.shape[1] + steps)
        out = model(prompt, past_key_values=cache)
        token = jnp.argmax(out.logits[:, -1:], -1)
        for _ in range(steps - 1):
            out = model(token, past_key_values=out.past_key_values)
            token = jnp.argmax(out.logits[:, -1:], -1)
        token.block_until_ready()

    run()  # compiles the prompt and the step programs
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
