"""TensorFlow twin benchmark: forward tokens/s on ~124M configs of each family, against the PyTorch twin run in
the same process under the same thread count (measurements interleaved, so machine load hits both alike).

TF is timed three ways: the plain Keras call (eager), the call inside `tf.function` (graph), and inside
`tf.function(jit_compile=True)` (XLA). PyTorch is timed like `bench_pt.py` (eager and sdpa attention, no
grad). The ratio compares the best TF way with the best PyTorch way.

Usage: python benchmarks/bench_tf.py [--families gpt2 gptj gpt_neo] [--seq 128] [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from twinformers.configuration import GPT2Config, GPTJConfig, GPTNeoConfig  # noqa: E402

CONFIGS = {
    "gpt2": lambda: GPT2Config(),  # gpt2 (124M)
    "gptj": lambda: GPTJConfig(n_embd=768, n_layer=12, n_head=12, rotary_dim=64, n_positions=2048),
    "gpt_neo": lambda: GPTNeoConfig(
        hidden_size=768, num_layers=12, num_heads=12, attention_types=[[["global", "local"], 6]]
    ),  # EleutherAI/gpt-neo-125M
}
LM_CLASS = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}


def interleaved(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    """Seconds per call of each function: one warm-up call each, then `repeats` rounds calling every
    function once per round, keeping each one's fastest call (the least disturbed by other processes)."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def tf_forwards(family: str, config, input_ids: np.ndarray) -> dict[str, callable]:
    import twinformers.tf as tft

    model = getattr(tft, LM_CLASS[family])(config)
    model.build()
    ids = tf.constant(input_ids, tf.int32)
    graph = tf.function(lambda x: model(x, use_cache=False).logits)
    xla = tf.function(lambda x: model(x, use_cache=False).logits, jit_compile=True)
    return {
        "tf_eager": lambda: model(ids, use_cache=False).logits.numpy(),
        "tf_graph": lambda: graph(ids).numpy(),
        "tf_xla": lambda: xla(ids).numpy(),
    }


def pt_forwards(family: str, config, input_ids: np.ndarray) -> dict[str, callable]:
    try:
        import torch

        import twinformers.pt as pt
    except ImportError:
        return {}
    model = getattr(pt, LM_CLASS[family])(config).eval()
    ids = torch.from_numpy(input_ids.astype(np.int64))

    def run(implementation: str) -> callable:
        def forward() -> None:
            model.config._attn_implementation = implementation
            with torch.no_grad():
                model(ids, use_cache=False).logits.numpy()

        return forward

    return {"pt_eager": run("eager"), "pt_sdpa": run("sdpa")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    import keras

    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, torch {torch_version}, {args.threads} threads, "
          f"input ({args.batch}, {args.seq})")
    for family in args.families:
        config = CONFIGS[family]()
        input_ids = np.random.default_rng(0).integers(0, config.vocab_size, (args.batch, args.seq))
        fns = {**tf_forwards(family, config, input_ids), **pt_forwards(family, config, input_ids)}
        seconds = interleaved(fns, args.repeats)
        tokens = args.batch * args.seq
        row = {"family": family, **{f"{name}_tok_s": round(tokens / s) for name, s in seconds.items()}}
        tf_best = min(seconds[k] for k in seconds if k.startswith("tf_"))
        pt_times = [seconds[k] for k in seconds if k.startswith("pt_")]
        if pt_times:
            row["tf_best_over_pt_best"] = round(min(pt_times) / tf_best, 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
