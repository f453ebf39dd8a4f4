"""Training throughput (tokens/s) of each twin on the same small GPT-2: Keras `fit`, the PyTorch loop of the
examples, and a jitted Flax/optax step.

The model is GPT-2 with 6 layers, hidden 384, 6 heads, GPT-2's vocabulary (50257) and dropout 0.1; batch 8 of
128 tokens, AdamW. Each backend runs in its own process (no framework competes for threads with another); the
first `--warmup` steps (compilation, allocator warm-up) are not timed.

    python benchmarks/bench_train.py                        # all three backends
    python benchmarks/bench_train.py --backends pt tf --steps 20 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIG = dict(vocab_size=50257, n_positions=128, n_embd=384, n_layer=6, n_head=6)
BATCH, SEQ, LEARNING_RATE = 8, 128, 3e-4
BACKENDS = ("pt", "tf", "flax")
NAMES = {"pt": "PyTorch loop", "tf": "Keras fit", "flax": "Flax/optax jit step"}


def batches(count: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, CONFIG["vocab_size"], size=(BATCH, SEQ)).astype(np.int32) for _ in range(count)]


def run_pt(warmup: int, steps: int) -> float:
    import torch

    from twinformers.configuration import GPT2Config
    from twinformers.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**CONFIG)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    data = [torch.from_numpy(b).long() for b in batches(warmup + steps)]
    for i, input_ids in enumerate(data):
        if i == warmup:
            start = time.perf_counter()
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss.item()
    return time.perf_counter() - start


def run_tf(warmup: int, steps: int) -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from twinformers.configuration import GPT2Config
    from twinformers.tf import GPT2LMHeadModel

    keras.utils.set_random_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**CONFIG))
    model.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE, global_clipnorm=1.0))  # own loss
    ids = np.stack(batches(warmup + steps)).reshape(-1, SEQ)
    dataset = tf.data.Dataset.from_tensor_slices({"input_ids": ids, "labels": ids}).batch(BATCH).prefetch(2)

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if batch == warmup:
                self.start = time.perf_counter()

        def on_train_end(self, logs: dict | None = None) -> None:
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    # steps_per_execution=1 and a Python callback per batch, as users run fit; the loss is fetched each step.
    model.fit(dataset, epochs=1, callbacks=[timer], verbose=0)
    return timer.seconds


def run_flax(warmup: int, steps: int) -> float:
    import jax
    import optax
    from flax.training.train_state import TrainState

    from twinformers.configuration import GPT2Config
    from twinformers.flax import GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(**CONFIG), seed=0)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(LEARNING_RATE))
    state = TrainState.create(apply_fn=model.__call__, params=model.params, tx=tx)

    @jax.jit
    def train_step(state, input_ids, dropout_rng):
        def loss_fn(params):
            return model(input_ids, params=params, dropout_rng=dropout_rng, train=True, labels=input_ids).loss

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    rng = jax.random.PRNGKey(0)
    for i, input_ids in enumerate(batches(warmup + steps)):
        if i == warmup:
            jax.block_until_ready(state)
            start = time.perf_counter()
        state, loss = train_step(state, input_ids, jax.random.fold_in(rng, i))
    jax.block_until_ready(loss)
    return time.perf_counter() - start


def worker(backend: str, warmup: int, steps: int) -> None:
    seconds = {"pt": run_pt, "tf": run_tf, "flax": run_flax}[backend](warmup, steps)
    print(json.dumps({"backend": backend, "seconds": seconds, "steps": steps,
                      "tokens_per_s": steps * BATCH * SEQ / seconds, "step_ms": 1000 * seconds / steps}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        raise ValueError("--steps and --warmup must be at least 1")
    if args.worker:
        worker(args.worker, args.warmup, args.steps)
        return

    results = {}
    for backend in args.backends:
        command = [sys.executable, __file__, "--worker", backend, "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[backend] = json.loads(output.strip().splitlines()[-1])
    print(f"GPT-2 {CONFIG['n_layer']} layers, hidden {CONFIG['n_embd']}, vocab {CONFIG['vocab_size']}; "
          f"batch {BATCH} × {SEQ} tokens; {args.steps} timed steps after {args.warmup}")
    print(f"{'backend':<22}{'tokens/s':>10}{'ms/step':>10}{'vs PyTorch':>12}")
    for backend, result in results.items():
        ratio = result["tokens_per_s"] / results["pt"]["tokens_per_s"] if "pt" in results else float("nan")
        print(f"{NAMES[backend]:<22}{result['tokens_per_s']:>10.0f}{result['step_ms']:>10.1f}{ratio:>11.2f}×")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
