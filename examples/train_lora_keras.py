"""Train a LoRA adapter on a causal language model with Keras `model.fit`; save it in PEFT's format.

`add_adapter` marks every base variable `trainable=False`, so `fit` — compiled without a loss, on the model's
own causal-LM loss — updates the adapter alone and the optimizer holds state for it alone. The adapter is
written to `<output-dir>/adapter` (`adapter_config.json` + `adapter_model.safetensors`, PEFT's key names); it
loads onto the same base model in every twin and in Hugging Face + PEFT. Without `--model` a fresh base model
is built and saved to `<output-dir>/base` first.

    python examples/train_lora_keras.py --output-dir runs/lora-keras --model path/to/gpt2
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import (  # noqa: E402
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

import twinformers.tf  # noqa: E402
from twinformers.tf import AutoModelForCausalLM  # noqa: E402


def evaluate(model, validation: np.ndarray, args) -> float:
    rows = validation[: args.eval_batches * args.batch_size]
    return float(model.evaluate({"input_ids": rows, "labels": rows}, batch_size=args.batch_size, verbose=0))


def main(argv: list[str] | None = None) -> None:
    args = lora_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    check_args(args)
    keras.utils.set_random_seed(args.seed)
    train, validation = make_blocks(encode(read_corpus(args.train_file, args.max_bytes)), args.block_size)
    os.makedirs(args.output_dir, exist_ok=True)
    base_path = args.model or os.path.join(args.output_dir, "base")
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model)
    else:
        model = getattr(twinformers.tf, CAUSAL_LM_CLASSES[args.family])(make_config(args))
        model.save_pretrained(base_path)
    check_vocab(model.config, base_path)

    model.add_adapter(lora_config(args))  # before compile: the traced train step includes the adapter
    model.compile(optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=args.weight_decay))
    log = {"train": [], "eval": [[0, evaluate(model, validation, args)]],
           "trainable_parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
           "base_parameters": int(sum(np.prod(v.shape) for v in model.non_trainable_weights))}
    batches = np.concatenate([batch_at(train, args.batch_size, step, args.seed) for step in range(args.max_steps)])
    history = model.fit({"input_ids": batches, "labels": batches}, batch_size=args.batch_size, epochs=1,
                        shuffle=False, verbose=0)
    log["train"].append([args.max_steps, float(history.history["loss"][-1])])
    log["eval"].append([args.max_steps, evaluate(model, validation, args)])

    adapter_path = os.path.join(args.output_dir, "adapter")
    model.save_adapter(adapter_path)
    reloaded = AutoModelForCausalLM.from_pretrained(base_path)
    reloaded.load_adapter(adapter_path)
    reloaded.compile()
    log["reloaded_eval"] = evaluate(reloaded, validation, args)
    write_log(args.output_dir, log)
    report(log)
    trained, frozen = log["trainable_parameters"], log["base_parameters"]
    print(f"adapter: {adapter_path} ({trained} parameters trained, {frozen} frozen)", file=sys.stderr)


if __name__ == "__main__":
    main()
