"""Train (or fine-tune) a causal language model on a text file with Keras `model.fit`.

The model is compiled without a loss, so `fit` trains on the model's own causal-LM loss (labels are shifted
inside the model); batches come from a `tf.data` pipeline as `{"input_ids", "labels"}` dicts. Keras does the
rest: AdamW with warmup + cosine decay, global-norm clipping and gradient accumulation are optimizer options;
callbacks save a Hugging Face checkpoint (`save_pretrained`) after every epoch, keep a loss log, and
`BackupAndRestore` resumes an interrupted run (weights, optimizer state, epoch) when the same command is run
again. The checkpoints load in the PyTorch and Flax twins.

    python examples/train_causal_lm_keras.py --output-dir runs/keras
    python examples/train_causal_lm_keras.py --output-dir runs/keras --family gptj --grad-accum 4
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import (  # noqa: E402
    CAUSAL_LM_CLASSES,
    base_parser,
    check_args,
    check_vocab,
    encode,
    make_blocks,
    make_config,
    read_corpus,
    read_log,
    report,
    write_log,
)

import twinformers.tf  # noqa: E402
from twinformers.configuration import AutoConfig  # noqa: E402


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    parser.add_argument("--eval-every", type=int, default=100,
                        help="optimizer steps per Keras epoch (validation and a checkpoint after each)")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    args = parser.parse_args(argv)
    check_args(args)
    if args.grad_accum < 1:
        raise ValueError(f"--grad-accum must be at least 1, got {args.grad_accum}")
    return args


def datasets(args) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Shuffled, repeated training batches and a fixed validation set, as {"input_ids", "labels"} dicts."""
    train, validation = make_blocks(encode(read_corpus(args.train_file, args.max_bytes)), args.block_size)
    if len(train) < args.batch_size:
        raise ValueError(f"{len(train)} training blocks are fewer than --batch-size {args.batch_size}")
    as_inputs = lambda ids: {"input_ids": ids, "labels": ids}  # the model shifts the labels itself
    train_data = (
        tf.data.Dataset.from_tensor_slices(train)
        .shuffle(len(train), seed=args.seed)
        .repeat()
        .batch(args.batch_size, drop_remainder=True)  # one shape, one compiled train step
        .map(as_inputs, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation_data = (
        tf.data.Dataset.from_tensor_slices(validation[: args.eval_batches * args.batch_size])
        .batch(args.batch_size)
        .map(as_inputs)
        .cache()
    )
    return train_data, validation_data


class SavePretrained(keras.callbacks.Callback):
    """After each epoch, `save_pretrained` into `<output_dir>/checkpoint-<optimizer step>` (Hugging Face layout)."""

    def __init__(self, output_dir: str, steps_per_epoch: int) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.save_pretrained(os.path.join(self.output_dir, f"checkpoint-{(epoch + 1) * self.steps_per_epoch}"))


class LossLog(keras.callbacks.Callback):
    """Keep `train_log.json` ({"train": [[step, loss]], "eval": [[step, val_loss]]}) up to date after each epoch."""

    def __init__(self, output_dir: str, steps_per_epoch: int, log: dict) -> None:
        super().__init__()
        self.output_dir, self.steps_per_epoch, self.log = output_dir, steps_per_epoch, log

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        step = (epoch + 1) * self.steps_per_epoch
        self.log["train"].append([step, float(logs["loss"])])
        self.log["eval"].append([step, float(logs["val_loss"])])
        write_log(self.output_dir, self.log)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)  # weights init, dropout, shuffling
    train_data, validation_data = datasets(args)
    os.makedirs(args.output_dir, exist_ok=True)

    config = AutoConfig.from_pretrained(args.model) if args.model else make_config(args)
    model_class = getattr(twinformers.tf, CAUSAL_LM_CLASSES[config.model_type])
    model = model_class.from_pretrained(args.model) if args.model else model_class(config)
    check_vocab(model.config, args.model or "the fresh config")

    # Keras counts micro-batches (optimizer.iterations advances on each), so the schedule is in micro-batches.
    accum = args.grad_accum
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, warmup_target=args.learning_rate, warmup_steps=args.warmup_steps * accum,
        decay_steps=max(1, (args.max_steps - args.warmup_steps) * accum),
    )
    optimizer = keras.optimizers.AdamW(
        schedule, weight_decay=args.weight_decay, beta_2=0.95,
        global_clipnorm=args.max_grad_norm if args.max_grad_norm > 0 else None,
        gradient_accumulation_steps=accum if accum > 1 else None,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # biases and LayerNorm
    model.compile(optimizer=optimizer)  # no loss: fit trains on the model's own loss

    steps_per_epoch = min(args.eval_every, args.max_steps)
    backup_dir = os.path.join(args.output_dir, "backup")
    if os.path.isdir(backup_dir):  # an interrupted run: BackupAndRestore resumes it, the log continues
        log = read_log(args.output_dir)
    else:
        log = {"train": [], "eval": [[0, float(model.evaluate(validation_data, verbose=0))]]}
    callbacks = [
        # Restores weights, optimizer state and the epoch counter if a previous run of this command was cut off.
        keras.callbacks.BackupAndRestore(backup_dir),
        SavePretrained(args.output_dir, steps_per_epoch),
        LossLog(args.output_dir, steps_per_epoch, log),
    ]
    model.fit(
        train_data, epochs=math.ceil(args.max_steps / steps_per_epoch), steps_per_epoch=steps_per_epoch * accum,
        validation_data=validation_data, callbacks=callbacks, verbose=args.verbose, shuffle=False,  # tf.data shuffles
    )
    model.save_pretrained(args.output_dir)
    report(log)


if __name__ == "__main__":
    main()
