"""Train a LoRA adapter on a causal language model with Flax and optax; save it in PEFT's format.

`create_train_state` puts the adapter's leaves beside the base params and masks the optimizer to them
(`optax.multi_transform` with `set_to_zero` for the base), so only the adapter trains and the optimizer holds
state for it alone; `make_train_step` is the usual jitted step. The adapter is written to
`<output-dir>/adapter` (`adapter_config.json` + `adapter_model.safetensors`, PEFT's key names); it loads onto
the same base model in every twin and in Hugging Face + PEFT. Without `--model` a fresh base model is built and
saved to `<output-dir>/base` first. `--lora-dropout` drops the adapter's input in the train step, as PEFT does;
evaluation runs on the folded kernels.

    python examples/train_lora_flax.py --output-dir runs/lora-flax --model path/to/gpt2
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import optax
from common import (
    CAUSAL_LM_CLASSES,
    batch_at,
    check_args,
    check_vocab,
    encode,
    lora_config,
    lora_parser,
    make_blocks,
    make_config,
    read_corpus,
    report,
    write_log,
)

import twinformers.flax
from twinformers.flax import AutoModelForCausalLM
from twinformers.flax.lora import split_adapter_params
from twinformers.flax.training import create_train_state, make_train_step


def evaluate(model, validation: np.ndarray, args, params=None) -> float:
    losses = []
    for start in range(0, min(len(validation), args.eval_batches * args.batch_size), args.batch_size):
        batch = validation[start:start + args.batch_size]
        losses.append(float(model(batch, labels=batch, params=params).loss))
    return float(np.mean(losses))


def main(argv: list[str] | None = None) -> None:
    args = lora_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    check_args(args)
    train, validation = make_blocks(encode(read_corpus(args.train_file, args.max_bytes)), args.block_size)
    os.makedirs(args.output_dir, exist_ok=True)
    base_path = args.model or os.path.join(args.output_dir, "base")
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model)
    else:
        model = getattr(twinformers.flax, CAUSAL_LM_CLASSES[args.family])(make_config(args), seed=args.seed)
        model.save_pretrained(base_path)
    check_vocab(model.config, base_path)

    model.add_adapter(lora_config(args))
    state = create_train_state(model, optax.adamw(args.learning_rate, weight_decay=args.weight_decay))
    _, adapter = split_adapter_params(state.params)
    log = {"train": [], "eval": [[0, evaluate(model, validation, args)]],
           "trainable_parameters": int(sum(leaf.size for leaf in adapter.values())),
           "base_parameters": int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(model.params)))}
    train_step = make_train_step(model)
    rng = jax.random.PRNGKey(args.seed)
    for step in range(args.max_steps):
        state, loss, rng = train_step(state, {"input_ids": batch_at(train, args.batch_size, step, args.seed)}, rng)
        log["train"].append([step + 1, float(loss)])
    model.set_adapter_params(state.params)
    log["eval"].append([args.max_steps, evaluate(model, validation, args)])

    adapter_path = os.path.join(args.output_dir, "adapter")
    model.save_adapter(adapter_path)
    reloaded = AutoModelForCausalLM.from_pretrained(base_path)
    reloaded.load_adapter(adapter_path)
    log["reloaded_eval"] = evaluate(reloaded, validation, args)
    write_log(args.output_dir, log)
    report(log)
    trained, frozen = log["trainable_parameters"], log["base_parameters"]
    print(f"adapter: {adapter_path} ({trained} parameters trained, {frozen} frozen)", file=sys.stderr)


if __name__ == "__main__":
    main()
