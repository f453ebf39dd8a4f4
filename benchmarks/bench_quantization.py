"""int8 vs fp32 decoding in the PyTorch twin: greedy tokens/s at batch 1 on a ~124M config, plus the logit gap.

    python benchmarks/bench_quantization.py [--family gpt2|gptj|gpt_neo] [--repeats 3] [--threads 1]
        [--prompt 64] [--new 32] [--quality-only]

Quality first, on the embedded tiny GPT-2 (`twinformers.demo.embedded`, trained on the top-level stdlib
modules) and held-out text (the sources of the stdlib `email` package): perplexity of fp32 and int8,
greedy continuations of 16 prompts compared token by token, and the max logit deviation.

One process, randomly initialized weights (speed does not depend on the values; EOS disabled so every run
makes all its tokens). The fp32 and int8 models run interleaved, `--repeats` times each, best time kept, so
both see the same machine load. Also printed: weight bytes read per token and the max |logit| gap on the
prompt (random weights: a speed check, not a quality measure). The int8 matmul takes bfloat16 activations
(see `twinformers.pt.quantization.MATMUL_DTYPE`).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import twinformers.configuration as configs
import twinformers.pt as pt
from twinformers.pt.ops import Conv1D
from twinformers.pt.quantization import Int8Linear

CONFIGS = {
    "gpt2": ("GPT2LMHeadModel", lambda: configs.GPT2Config()),
    "gptj": ("GPTJForCausalLM", lambda: configs.GPTJConfig(n_embd=768, n_layer=12, n_head=12, rotary_dim=64,
                                                           n_positions=2048)),
    "gpt_neo": ("GPTNeoForCausalLM", lambda: configs.GPTNeoConfig(hidden_size=768, num_layers=12, num_heads=12,
                                                                  attention_types=[[["global", "local"], 6]])),
}


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of projection and LM-head weights (and scales) a decode step reads; the embedding rows it
    gathers and the norms are left out. A tied fp32 head reads the whole embedding table."""
    kinds = (Conv1D, torch.nn.Linear, Int8Linear)
    tensors = [t for m in model.modules() if isinstance(m, kinds) for t in (m.weight, getattr(m, "weight_scale", None))
               if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def quality(threads: int) -> None:
    """Perplexity, greedy agreement and max logit gap of int8 vs fp32 on the embedded model, held-out text."""
    from twinformers.demo.embedded import embedded_model_path, stdlib_texts
    from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast

    path = embedded_model_path()
    fp32 = pt.GPT2LMHeadModel.from_pretrained(path).eval()
    int8 = copy.deepcopy(fp32).quantize("int8")
    tokenizer = GPT2TokenizerFast.from_pretrained(path)
    ids = [i for text in stdlib_texts(200_000, package="email") for i in tokenizer(text)["input_ids"]]
    block = fp32.config.n_positions
    blocks = torch.tensor(ids[: len(ids) // block * block]).view(-1, block)
    losses, gap = {"fp32": 0.0, "int8": 0.0}, 0.0
    with torch.no_grad():
        for batch in blocks.split(8):
            logits = {}
            for label, model in (("fp32", fp32), ("int8", int8)):
                out = model(batch, labels=batch)
                losses[label] += out.loss.item() * len(batch)
                logits[label] = out.logits
            gap = max(gap, (logits["fp32"] - logits["int8"]).abs().max().item())
        prompts = blocks[:16, :32]
        agree = total = 0
        for prompt in prompts:
            runs = [m.generate(prompt[None], max_new_tokens=32, min_new_tokens=32, do_sample=False)[0, 32:]
                    for m in (fp32, int8)]
            agree += (runs[0] == runs[1]).sum().item()
            total += len(runs[0])
    ppl = {k: float(torch.tensor(v / len(blocks)).exp()) for k, v in losses.items()}
    print(f"embedded model, held-out text: {blocks.numel()} tokens in {len(blocks)} blocks of {block}; "
          f"{threads} thread(s)")
    print(f"perplexity fp32 {ppl['fp32']:.3f}, int8 {ppl['int8']:.3f} ({100 * (ppl['int8'] / ppl['fp32'] - 1):+.2f}%); "
          f"greedy tokens equal {agree}/{total} ({100 * agree / total:.1f}%); max |logit gap| {gap:.4f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=sorted(CONFIGS), default="gpt2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--quality-only", action="store_true", help="skip the speed measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    quality(args.threads)
    if args.quality_only:
        return

    name, make_config = CONFIGS[args.family]
    config = make_config()
    config.eos_token_id = None
    fp32 = getattr(pt, name)(config).eval()
    int8 = copy.deepcopy(fp32).quantize("int8")
    ids = torch.randint(0, config.vocab_size, (1, args.prompt))
    with torch.no_grad():
        gap = (fp32(ids).logits - int8(ids).logits).abs().max().item()

    best = {"fp32": float("inf"), "int8": float("inf")}
    for _ in range(args.repeats):
        for label, model in (("fp32", fp32), ("int8", int8)):
            with torch.no_grad():
                start = time.perf_counter()
                model.generate(ids, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False)
                best[label] = min(best[label], time.perf_counter() - start)

    print(f"{args.family} ({name}), prompt {args.prompt}, {args.new} new tokens, batch 1, greedy; "
          f"{args.threads} thread(s); best of {args.repeats} interleaved; max |logit gap| {gap:.4f}")
    print()
    print("| weights | MB read per token | tokens/s | vs fp32 |")
    print("|---|---:|---:|---:|")
    for label, model in (("fp32", fp32), ("int8", int8)):
        print(f"| {label} | {weight_bytes(model) / 1e6:.0f} | {args.new / best[label]:.1f} | "
              f"{best['fp32'] / best[label]:.2f}× |")


if __name__ == "__main__":
    main()
