"""Train (or fine-tune) a causal language model on a text file with a plain PyTorch loop.

AdamW with warmup + cosine decay, gradient accumulation, gradient clipping, optional bfloat16 autocast (CPU
or GPU), a tqdm progress bar, checkpoints every `--save-every` steps that hold the optimizer, scheduler and RNG
state too, so `--resume` continues exactly where the run stopped. The final model is written with
`save_pretrained` (Hugging Face layout, `model.safetensors`) and loads in the TensorFlow and Flax twins.

    python examples/train_causal_lm_pt.py --output-dir runs/pt                      # stdlib corpus, 4-layer GPT-2
    python examples/train_causal_lm_pt.py --output-dir runs/pt --resume             # continue after a stop
    python examples/train_causal_lm_pt.py --output-dir runs/pt --train-file my.txt --family gpt_neo --precision bf16
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from common import (
    base_parser,
    batch_at,
    check_args,
    check_vocab,
    encode,
    latest_checkpoint,
    learning_rate_at,
    make_blocks,
    make_config,
    read_corpus,
    read_log,
    report,
    write_log,
)
from tqdm.auto import tqdm

from twinformers.checkpoints.files import atomic_output
from twinformers.pt import AutoModelForCausalLM

STATE_NAME = "training_state.pt"


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: autocast matmuls to bfloat16 (weights and optimizer stay float32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    args = parser.parse_args(argv)
    check_args(args)
    if args.grad_accum < 1:
        raise ValueError(f"--grad-accum must be at least 1, got {args.grad_accum}")
    return args


def autocast(args, device: torch.device):
    if args.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("--precision bf16: this GPU does not support bfloat16")
    # On CPU bfloat16 autocast always works; it is fast where the CPU has AVX512-BF16 or AMX.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")


@torch.no_grad()
def evaluate(model, validation: np.ndarray, args, device: torch.device) -> float:
    model.eval()
    losses = []
    for start in range(0, min(len(validation), args.eval_batches * args.batch_size), args.batch_size):
        batch = torch.from_numpy(validation[start:start + args.batch_size]).long().to(device)
        with autocast(args, device):
            losses.append(model(input_ids=batch, labels=batch).loss.float().item())
    model.train()
    return float(np.mean(losses))


def save_checkpoint(directory: str, model, optimizer, scheduler, step: int) -> None:
    model.save_pretrained(directory)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    with atomic_output(os.path.join(directory, STATE_NAME)) as f:
        torch.save(state, f)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    train, validation = make_blocks(encode(read_corpus(args.train_file, args.max_bytes)), args.block_size)
    os.makedirs(args.output_dir, exist_ok=True)

    resume_from = latest_checkpoint(args.output_dir, STATE_NAME) if args.resume else None
    if args.resume and resume_from is None:
        raise OSError(f"--resume: no checkpoint-<step> directory with {STATE_NAME} in {args.output_dir!r}")
    source = resume_from or args.model
    if source:
        model = AutoModelForCausalLM.from_pretrained(source)
    else:
        model = AutoModelForCausalLM.from_config(make_config(args))
    check_vocab(model.config, source or "the fresh config")
    model.to(device).train()

    # Biases and LayerNorm weights get no weight decay (the usual AdamW recipe).
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate, betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_at(step, args) / args.learning_rate
    )
    start_step, log = 0, read_log(args.output_dir) if resume_from else {"train": [], "eval": []}
    if resume_from:
        state = torch.load(os.path.join(resume_from, STATE_NAME), map_location=device, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])  # dropout masks continue the interrupted run's stream
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_step = state["step"]
        log = {name: [entry for entry in entries if entry[0] <= start_step] for name, entries in log.items()}
        print(f"resuming from {resume_from} at step {start_step}", file=sys.stderr)
    else:
        log["eval"].append([0, evaluate(model, validation, args, device)])

    progress = tqdm(range(start_step, args.max_steps), initial=start_step, total=args.max_steps, desc="train",
                    disable=None)
    for step in progress:
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(args.grad_accum):
            batch = batch_at(train, args.batch_size, step * args.grad_accum + micro, args.seed)
            batch = torch.from_numpy(batch).long().to(device)
            with autocast(args, device):
                # The model shifts the labels itself; dividing by grad_accum makes the summed gradients a mean.
                loss = model(input_ids=batch, labels=batch).loss / args.grad_accum
            loss.backward()
            step_loss += loss.item()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        log["train"].append([step + 1, step_loss])
        progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        done = step + 1
        if done % args.eval_every == 0 or done == args.max_steps:
            log["eval"].append([done, evaluate(model, validation, args, device)])
        if done % args.save_every == 0 or done == args.max_steps:
            save_checkpoint(os.path.join(args.output_dir, f"checkpoint-{done}"), model, optimizer, scheduler, done)
            write_log(args.output_dir, log)

    model.save_pretrained(args.output_dir)
    write_log(args.output_dir, log)
    report(log)


if __name__ == "__main__":
    main()
