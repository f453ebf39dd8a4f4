"""Train (or fine-tune) a causal language model on a text file with Flax and optax.

The training step is one `jax.jit`-compiled function (loss, gradients, AdamW update) with dropout driven by a
PRNG key folded from the step number, so a resumed run draws the same dropout masks. Gradient clipping and
accumulation are optax transformations (`clip_by_global_norm`, `MultiSteps`). Checkpoints hold the params
(`save_pretrained`, Hugging Face layout, loadable by the PyTorch and TensorFlow twins) and the optimizer state
(`training_state.msgpack`), so `--resume` continues exactly.

    python examples/train_causal_lm_flax.py --output-dir runs/flax
    python examples/train_causal_lm_flax.py --output-dir runs/flax --resume
"""

from __future__ import annotations

import os
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import (
    base_parser,
    batch_at,
    check_args,
    check_vocab,
    encode,
    latest_checkpoint,
    make_blocks,
    make_config,
    read_corpus,
    read_log,
    report,
    write_log,
)
from flax.training.train_state import TrainState
from tqdm.auto import tqdm

from twinformers.checkpoints.files import atomic_output
from twinformers.flax import AutoModelForCausalLM

STATE_NAME = "training_state.msgpack"


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    args = parser.parse_args(argv)
    check_args(args)
    if args.grad_accum < 1:
        raise ValueError(f"--grad-accum must be at least 1, got {args.grad_accum}")
    return args


def make_optimizer(args) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=args.learning_rate, warmup_steps=args.warmup_steps,
        decay_steps=max(args.max_steps, args.warmup_steps + 1),
    )
    # Biases and LayerNorm scales get no weight decay (the usual AdamW recipe).
    decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
    optimizer = optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=args.weight_decay, mask=decay_mask)
    if args.max_grad_norm > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(args.max_grad_norm), optimizer)
    # MultiSteps sums `grad_accum` micro-batch gradients (as a mean) before one update of the inner optimizer.
    return optax.MultiSteps(optimizer, every_k_schedule=args.grad_accum)


def make_steps(model):
    """The jitted train and eval steps of `model` (a twinformers Flax causal LM)."""

    def loss_fn(params, batch, dropout_rng, train: bool):
        return model(batch, params=params, dropout_rng=dropout_rng, train=train, labels=batch).loss

    @jax.jit
    def train_step(state: TrainState, batch: jax.Array, dropout_rng: jax.Array) -> tuple[TrainState, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, dropout_rng, True)
        return state.apply_gradients(grads=grads), loss

    @jax.jit
    def eval_step(params, batch: jax.Array) -> jax.Array:
        return loss_fn(params, batch, None, False)

    return train_step, eval_step


def evaluate(eval_step, params, validation: np.ndarray, args) -> float:
    # Whole batches only, so one compiled shape (a validation set smaller than a batch is one short batch).
    count = max(1, min(len(validation), args.eval_batches * args.batch_size) // args.batch_size)
    size = args.batch_size
    return float(np.mean([eval_step(params, validation[i * size:(i + 1) * size]) for i in range(count)]))


def save_checkpoint(directory: str, model, state: TrainState, step: int) -> None:
    model.save_pretrained(directory, params=state.params)
    with atomic_output(os.path.join(directory, STATE_NAME)) as f:
        f.write(flax.serialization.to_bytes({"step": step, "opt_state": state.opt_state}))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    train, validation = make_blocks(encode(read_corpus(args.train_file, args.max_bytes)), args.block_size)
    os.makedirs(args.output_dir, exist_ok=True)

    resume_from = latest_checkpoint(args.output_dir, STATE_NAME) if args.resume else None
    if args.resume and resume_from is None:
        raise OSError(f"--resume: no checkpoint-<step> directory with {STATE_NAME} in {args.output_dir!r}")
    source = resume_from or args.model
    if source:
        model = AutoModelForCausalLM.from_pretrained(source)
    else:
        model = AutoModelForCausalLM.from_config(make_config(args), seed=args.seed)
    check_vocab(model.config, source or "the fresh config")

    state = TrainState.create(apply_fn=model.__call__, params=model.params, tx=make_optimizer(args))
    train_step, eval_step = make_steps(model)
    start_step, log = 0, {"train": [], "eval": []}
    if resume_from:
        with open(os.path.join(resume_from, STATE_NAME), "rb") as f:
            restored = flax.serialization.from_bytes({"step": 0, "opt_state": state.opt_state}, f.read())
        start_step = int(restored["step"])
        state = state.replace(step=start_step * args.grad_accum, opt_state=restored["opt_state"])
        log = {name: [e for e in entries if e[0] <= start_step] for name, entries in read_log(args.output_dir).items()}
        print(f"resuming from {resume_from} at step {start_step}", file=sys.stderr)
    else:
        log["eval"].append([0, evaluate(eval_step, state.params, validation, args)])

    root_rng = jax.random.PRNGKey(args.seed)
    progress = tqdm(range(start_step, args.max_steps), initial=start_step, total=args.max_steps, desc="train",
                    disable=None)
    for step in progress:
        step_loss = 0.0
        for micro in range(args.grad_accum):
            index = step * args.grad_accum + micro
            batch = jnp.asarray(batch_at(train, args.batch_size, index, args.seed))
            # A key per micro-batch, derived from its index: no RNG state to save, the same masks after --resume.
            state, loss = train_step(state, batch, jax.random.fold_in(root_rng, index))
            step_loss += float(loss) / args.grad_accum
        log["train"].append([step + 1, step_loss])
        progress.set_postfix(loss=f"{step_loss:.4f}")
        done = step + 1
        if done % args.eval_every == 0 or done == args.max_steps:
            log["eval"].append([done, evaluate(eval_step, state.params, validation, args)])
        if done % args.save_every == 0 or done == args.max_steps:
            save_checkpoint(os.path.join(args.output_dir, f"checkpoint-{done}"), model, state, done)
            write_log(args.output_dir, log)

    model.save_pretrained(args.output_dir, params=state.params)
    write_log(args.output_dir, log)
    report(log)


if __name__ == "__main__":
    main()
