"""Optimizer-state memory of full fine-tuning vs a LoRA adapter on GPT-2 124M, in each twin.

Each (backend, mode) runs one training step in its own process: a fresh GPT-2 (the default config, 124M
parameters), AdamW, batch 1 × 32 tokens; "lora" adds PEFT's default GPT-2 adapter first (`c_attn`, r=8,
alpha=16). Reported: trainable parameters, the optimizer state's bytes (the tensors the optimizer actually
holds after the step: PyTorch `optimizer.state`, Keras `optimizer.variables`, the optax state tree), and the
process's peak resident memory.

    python benchmarks/bench_lora_memory.py --json lora_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

BACKENDS = ("pt", "tf", "flax")
MODES = ("full", "lora")
BATCH, SEQ = 1, 32


def lora_config():
    from twinformers import LoraConfig

    return LoraConfig(r=8, lora_alpha=16)


def run_pt(mode: str) -> dict:
    import torch

    from twinformers.configuration import GPT2Config
    from twinformers.pt import GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).train()
    if mode == "lora":
        model.add_adapter(lora_config())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    input_ids = torch.randint(0, 50257, (BATCH, SEQ))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    optimizer.step()
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    return {"trainable": sum(p.numel() for p in trainable), "optimizer_state_bytes": state}


def run_tf(mode: str) -> dict:
    import keras
    import numpy as np

    from twinformers.configuration import GPT2Config
    from twinformers.tf import GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    model.build()
    if mode == "lora":
        model.add_adapter(lora_config())
    model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    input_ids = np.random.default_rng(0).integers(0, 50257, (BATCH, SEQ)).astype("int32")
    model.fit({"input_ids": input_ids, "labels": input_ids}, batch_size=BATCH, epochs=1, verbose=0)
    state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.optimizer.variables)
    return {"trainable": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
            "optimizer_state_bytes": state}


def run_flax(mode: str) -> dict:
    import jax
    import numpy as np
    import optax

    from twinformers.configuration import GPT2Config
    from twinformers.flax import GPT2LMHeadModel
    from twinformers.flax.lora import split_adapter_params
    from twinformers.flax.training import create_train_state, make_train_step

    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    if mode == "lora":
        model.add_adapter(lora_config())
    state = create_train_state(model, optax.adamw(1e-4))
    input_ids = np.random.default_rng(0).integers(0, 50257, (BATCH, SEQ))
    state, loss, _ = make_train_step(model)(state, {"input_ids": input_ids}, jax.random.PRNGKey(0))
    jax.block_until_ready(loss)
    base, adapter = split_adapter_params(state.params)
    trainable = adapter if mode == "lora" else jax.tree_util.tree_leaves(base)
    leaves = trainable.values() if mode == "lora" else trainable
    return {"trainable": int(sum(leaf.size for leaf in leaves)),
            "optimizer_state_bytes": int(sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(state.opt_state)))}


def child(backend: str, mode: str) -> None:
    result = {"pt": run_pt, "tf": run_tf, "flax": run_flax}[backend](mode)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results = {}
    for backend in args.backends:
        for mode in MODES:
            output = subprocess.run([sys.executable, __file__, "--child", backend, mode], check=True,
                                    capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "3",
                                                                          **__import__("os").environ}).stdout
            results[f"{backend}/{mode}"] = json.loads(output.strip().splitlines()[-1])
            print(backend, mode, results[f"{backend}/{mode}"], flush=True)
    print(f"{'backend':8} {'mode':5} {'trainable':>12} {'optimizer state':>16} {'peak RSS':>10}")
    for name, r in results.items():
        backend, mode = name.split("/")
        print(f"{backend:8} {mode:5} {r['trainable']:>12,} {r['optimizer_state_bytes'] / 2**20:>13.2f} MiB "
              f"{r['peak_rss_bytes'] / 2**30:>6.2f} GiB")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
