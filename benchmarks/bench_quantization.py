"""int8 vs fp32 decoding in the PyTorch twin: greedy tokens/s at batch 1 on a ~124M config, plus the logit gap;
and the quality of int8 and bf16 against fp32 in every twin.

    python benchmarks/bench_quantization.py [--family gpt2|gptj|gpt_neo] [--repeats 3] [--threads 1]
        [--prompt 64] [--new 32] [--quality-only] [--quality-backends pt tf flax] [--blocks N]

Quality first, per backend, on the embedded tiny GPT-2 (`twinformers.demo.embedded`, trained on the top-level
stdlib modules) and held-out text (the sources of the stdlib `email` package): perplexity of fp32, int8 and
bf16, greedy continuations of 16 prompts compared token by token with fp32, and the max logit deviation.

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


def load(backend: str, path: str, precision: str):
    """The embedded model in `backend` at `precision` ("fp32", "bf16", "int8"), and a function ids → float32 logits."""
    import numpy as np

    if backend == "pt":
        model = pt.GPT2LMHeadModel.from_pretrained(path).eval()
        model = model.to(torch.bfloat16) if precision == "bf16" else model.quantize("int8") if precision == "int8" \
            else model

        def logits(ids: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(ids).long()).logits.float().numpy()
    elif backend == "tf":
        import twinformers.tf as tft

        model = tft.GPT2LMHeadModel.from_pretrained(path, dtype="bfloat16" if precision == "bf16" else None)
        if precision == "int8":
            model.quantize("int8")

        def logits(ids: np.ndarray) -> np.ndarray:
            return np.asarray(model(ids).logits, np.float32)
    else:
        import jax.numpy as jnp

        import twinformers.flax as fx

        bf16 = precision == "bf16"
        model = fx.GPT2LMHeadModel.from_pretrained(path, dtype=jnp.bfloat16 if bf16 else jnp.float32,
                                                   param_dtype="bfloat16" if bf16 else None)
        if precision == "int8":
            model.quantize("int8")

        def logits(ids: np.ndarray) -> np.ndarray:
            return np.asarray(model(ids).logits, np.float32)
    return model, logits


def greedy(backend: str, model, prompt) -> list[int]:
    """32 greedy tokens after `prompt` (1-D NumPy ids)."""
    import numpy as np

    ids = torch.from_numpy(prompt[None]).long() if backend == "pt" else prompt[None].astype(np.int32)
    out = model.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False)
    return np.asarray(out)[0, len(prompt):].tolist()


def quality(backend: str, threads: int, max_blocks: int | None) -> None:
    """Perplexity, greedy agreement and max logit gap of int8 and bf16 vs fp32 on the embedded model."""
    import numpy as np

    from twinformers.demo.embedded import embedded_model_path, stdlib_texts
    from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast

    path = embedded_model_path()
    tokenizer = GPT2TokenizerFast.from_pretrained(path)
    ids = [i for text in stdlib_texts(200_000, package="email") for i in tokenizer(text)["input_ids"]]
    block = 128  # the embedded model's n_positions
    blocks = np.asarray(ids[: len(ids) // block * block], np.int64).reshape(-1, block)[:max_blocks]
    models = {precision: load(backend, path, precision) for precision in ("fp32", "int8", "bf16")}
    nll = {precision: 0.0 for precision in models}
    gap = {precision: 0.0 for precision in models}
    for start in range(0, len(blocks), 8):
        batch = blocks[start: start + 8]
        reference = None
        for precision, (_, logits) in models.items():
            out = logits(batch)
            shifted = out[:, :-1] - out[:, :-1].max(-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            nll[precision] -= np.take_along_axis(log_probs, batch[:, 1:, None], -1).sum()
            reference = out if reference is None else reference
            gap[precision] = max(gap[precision], float(np.abs(out - reference).max()))
    ppl = {precision: float(np.exp(value / (len(blocks) * (block - 1)))) for precision, value in nll.items()}
    continuations = {precision: [greedy(backend, model, prompt) for prompt in blocks[:16, :32]]
                     for precision, (model, _) in models.items()}
    print(f"{backend}: embedded model, held-out text: {blocks.size} tokens in {len(blocks)} blocks of {block}; "
          f"{threads} thread(s); fp32 perplexity {ppl['fp32']:.3f}")
    for precision in ("int8", "bf16"):
        pairs = zip(continuations[precision], continuations["fp32"])
        agree = sum(a == b for run, ref in pairs for a, b in zip(run, ref))
        total = sum(len(ref) for ref in continuations["fp32"])
        print(f"  {precision}: perplexity {ppl[precision]:.3f} ({100 * (ppl[precision] / ppl['fp32'] - 1):+.2f}%); "
              f"greedy tokens equal {agree}/{total} ({100 * agree / total:.1f}%); max |logit gap| {gap[precision]:.4f}")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=sorted(CONFIGS), default="gpt2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--quality-only", action="store_true", help="skip the speed measurement")
    parser.add_argument("--quality-backends", nargs="+", default=["pt"], choices=["pt", "tf", "flax"])
    parser.add_argument("--blocks", type=int, help="held-out blocks of 128 tokens (default: all, 588)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for backend in args.quality_backends:
        quality(backend, args.threads, args.blocks)
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
