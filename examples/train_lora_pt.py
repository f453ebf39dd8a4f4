"""Train a LoRA adapter on a causal language model with a plain PyTorch loop; save it in PEFT's format.

Only the adapter trains (`add_adapter` freezes the base weights: `requires_grad=False`), so the optimizer
holds state for the adapter alone. The adapter is written to `<output-dir>/adapter` (`adapter_config.json` +
`adapter_model.safetensors`, PEFT's key names); it loads onto the same base model in every twin and in Hugging
Face + PEFT. Without `--model` a fresh base model is built and saved to `<output-dir>/base` first.

    python examples/train_lora_pt.py --output-dir runs/lora-pt --model path/to/gpt2
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
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

import twinformers.pt
from twinformers.pt import AutoModelForCausalLM


@torch.no_grad()
def evaluate(model, validation: np.ndarray, args) -> float:
    model.eval()
    losses = []
    for start in range(0, min(len(validation), args.eval_batches * args.batch_size), args.batch_size):
        batch = torch.from_numpy(validation[start:start + args.batch_size]).long()
        losses.append(model(input_ids=batch, labels=batch).loss.item())
    model.train()
    return float(np.mean(losses))


def main(argv: list[str] | None = None) -> None:
    args = lora_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    check_args(args)
    torch.manual_seed(args.seed)
    train, validation = make_blocks(encode(read_corpus(args.train_file, args.max_bytes)), args.block_size)
    os.makedirs(args.output_dir, exist_ok=True)
    base_path = args.model or os.path.join(args.output_dir, "base")
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model)
    else:
        model = getattr(twinformers.pt, CAUSAL_LM_CLASSES[args.family])(make_config(args))
        model.save_pretrained(base_path)
    check_vocab(model.config, base_path)

    model.add_adapter(lora_config(args))
    trainable = [p for p in model.parameters() if p.requires_grad]  # the adapter's A and B matrices only
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    log = {"train": [], "eval": [[0, evaluate(model, validation, args)]],
           "trainable_parameters": sum(p.numel() for p in trainable),
           "base_parameters": sum(p.numel() for p in model.parameters() if not p.requires_grad)}
    model.train()  # adapter dropout on
    for step in range(args.max_steps):
        batch = torch.from_numpy(batch_at(train, args.batch_size, step, args.seed)).long()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log["train"].append([step + 1, loss.item()])
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
