"""Flax twin benchmark: forward tokens/s against the PyTorch twin, cached greedy decoding tokens/s, and load
peak RSS, on ~124M configs of each family (GPT-J and GPT-Neo at GPT-2-small sizes), float32 on CPU.

PyTorch and Flax run the same weights (the PyTorch model is loaded from the Flax model's saved safetensors)
and their timings are interleaved call by call, so load changes on a shared machine hit both alike; the
medians are reported.

With `--against REF` it instead compares this checkout's Flax twin with the one at git revision REF (e.g.
the linen twin before the move to NNX): REF's `lib/` is extracted as package `twinformers_ref`, both models get
the same params, and forward, static-cache decode and `generate()` are timed interleaved, best of `--repeats`.

Usage: python benchmarks/bench_flax.py [--families gpt2 gptj gpt_neo] [--seq 128] [--threads 1]
       python benchmarks/bench_flax.py --against main [--families gpt2] [--repeats 7]
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
        flags += " --xla_cpu_multi_thread_eigen=false"  # XLA has no thread-count flag; this keeps Eigen on one
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
    parser.add_argument("--against", default=None, help="git revision whose Flax twin to compare with")
    args = parser.parse_args()
    _set_threads(args.threads)
    if args.against:
        compare_revisions(args)
        return

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


def _import_revision(revision: str, directory: str):
    """REF's `lib/` extracted under `directory` as package `twinformers_ref` (its imports are relative)."""
    import importlib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    archive = subprocess.run(["git", "-C", root, "archive", revision, "lib"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
    os.rename(os.path.join(directory, "lib"), os.path.join(directory, "twinformers_ref"))
    sys.path.insert(0, directory)
    return importlib.import_module("twinformers_ref.configuration"), importlib.import_module("twinformers_ref.flax")


def compare_revisions(args) -> None:
    """This checkout's Flax twin against REF's, same params, interleaved: forward (1, T), static-cache decode
    steps, and `generate()` (greedy, compiled loop). Best-of-repeats seconds and this/REF ratios."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import twinformers.configuration as configuration
    import twinformers.flax as fx

    print(f"jax {jax.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ref_configuration, ref_fx = _import_revision(args.against, tmp)
        for family in args.families:
            config = CONFIGS[family](configuration)
            model = getattr(fx, LM_CLASS[family])(config)
            ref_model = getattr(ref_fx, LM_CLASS[family])(CONFIGS[family](ref_configuration), _do_init=False)
            ref_model.params = model.params
            ids = rng.integers(0, config.vocab_size, size=(1, args.seq))
            prompt = ids[:, :16]

            def forward(m, ids=ids):
                return lambda: m(ids, use_cache=False).logits.block_until_ready()

            def decode(m, prompt=prompt):
                def run():
                    cache = m.init_cache(1, prompt.shape[1] + args.decode_steps)
                    out = m(prompt, past_key_values=cache)
                    token = jnp.argmax(out.logits[:, -1:], -1)
                    for _ in range(args.decode_steps - 1):
                        out = m(token, past_key_values=out.past_key_values)
                        token = jnp.argmax(out.logits[:, -1:], -1)
                    token.block_until_ready()
                return run

            def generate(m, prompt=prompt):
                return lambda: np.asarray(m.generate(prompt, max_new_tokens=args.decode_steps, do_sample=False,
                                                     pad_token_id=0, eos_token_id=None))

            row = {"family": family}
            for name, make in (("forward", forward), ("decode", decode), ("generate", generate)):
                fns = {"nnx": make(model), "ref": make(ref_model)}
                for fn in fns.values():
                    fn()  # compile
                times = {key: [] for key in fns}
                for _ in range(args.repeats):
                    for key, fn in fns.items():
                        start = time.perf_counter()
                        fn()
                        times[key].append(time.perf_counter() - start)
                best = {key: min(values) for key, values in times.items()}
                row[f"{name}_s"] = round(best["nnx"], 4)
                row[f"{name}_ref_s"] = round(best["ref"], 4)
                row[f"{name}_ref_over_this"] = round(best["ref"] / best["nnx"], 3)
            print(json.dumps(row), flush=True)
            del model, ref_model


if __name__ == "__main__":
    main()
