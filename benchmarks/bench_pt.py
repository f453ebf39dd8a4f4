"""PyTorch twin benchmark: forward tokens/s, cached greedy decoding tokens/s, and load peak RSS, on ~124M
configs of each family (GPT-J and GPT-Neo at GPT-2-small sizes). Compared with Hugging Face `transformers`
only when it happens to be installed (it is never a dependency).

Usage: python benchmarks/bench_pt.py [--families gpt2 gptj gpt_neo] [--seq 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from twinformers.configuration import GPT2Config, GPTJConfig, GPTNeoConfig

CONFIGS = {
    "gpt2": lambda: GPT2Config(),  # gpt2 (124M)
    "gptj": lambda: GPTJConfig(n_embd=768, n_layer=12, n_head=12, rotary_dim=64, n_positions=2048),
    "gpt_neo": lambda: GPTNeoConfig(
        hidden_size=768, num_layers=12, num_heads=12, attention_types=[[["global", "local"], 6]]
    ),  # EleutherAI/gpt-neo-125M
}
TINY = {
    "gpt2": dict(vocab_size=97, n_positions=19, n_embd=24, n_layer=2, n_head=3),
    "gptj": dict(vocab_size=97, n_positions=19, n_embd=24, n_layer=2, n_head=3, rotary_dim=4),
    "gpt_neo": dict(vocab_size=97, max_position_embeddings=19, hidden_size=24, num_layers=2, num_heads=3,
                    attention_types=[[["global", "local"], 1]], window_size=5),
}
LM_CLASS = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}

_LOAD_SCRIPT = """
import json, sys, time
import torch, twinformers.pt as pt
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
if sys.argv[3]:
    # Warm-up: load a tiny checkpoint first so lazily loaded code pages are not counted, then reset VmHWM.
    getattr(pt, sys.argv[1]).from_pretrained(sys.argv[3])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
base = status("VmRSS:")
start = time.perf_counter()
model = getattr(pt, sys.argv[1]).from_pretrained(sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"peak_above_imports": status("VmHWM:") - base, "seconds": seconds}))
"""


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench_forward(model, vocab: int, seq: int, repeats: int) -> float:
    input_ids = torch.randint(0, vocab, (1, seq))
    with torch.no_grad():
        seconds = timed(lambda: model(input_ids, use_cache=False), repeats)
    return seq / seconds


def bench_decode(model, vocab: int, prompt: int, steps: int) -> float:
    """Greedy decoding with the cache, one token per step (what generate() does)."""
    input_ids = torch.randint(0, vocab, (1, prompt))

    def run():
        with torch.no_grad():
            out = model(input_ids, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            for _ in range(steps):
                out = model(token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)

    return steps / timed(run, 1)


def bench_load(class_name: str, path: str, warm_path: str = "") -> dict:
    """Peak RSS of `from_pretrained` in a fresh process, above the imports (and above a tiny warm-up load
    when `warm_path` is given)."""
    result = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, class_name, path, warm_path], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import twinformers.pt as pt

    has_hf = importlib.util.find_spec("transformers") is not None
    print(f"torch {torch.__version__}, {args.threads} threads; transformers: "
          f"{'installed' if has_hf else 'not installed'}")
    rows = []
    for family in args.families:
        config = CONFIGS[family]()
        torch.manual_seed(0)
        model = getattr(pt, LM_CLASS[family])(config).eval()
        row = {"family": family, "params_M": round(model.num_parameters() / 1e6, 1)}
        for implementation in ("eager", "sdpa"):
            model.config._attn_implementation = implementation
            row[f"forward_tok_s_{implementation}"] = round(bench_forward(model, config.vocab_size, args.seq,
                                                                         args.repeats))
        model.config._attn_implementation = "sdpa"
        row["decode_tok_s"] = round(bench_decode(model, config.vocab_size, 16, args.decode_steps), 1)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(os.path.join(tmp, "full"))
            checkpoint_bytes = os.path.getsize(os.path.join(tmp, "full", "model.safetensors"))
            del model
            tiny = type(config)(**TINY[family])
            getattr(pt, LM_CLASS[family])(tiny).save_pretrained(os.path.join(tmp, "tiny"))
            cold = bench_load(LM_CLASS[family], os.path.join(tmp, "full"))
            warm = bench_load(LM_CLASS[family], os.path.join(tmp, "full"), os.path.join(tmp, "tiny"))
        row["checkpoint_MB"] = round(checkpoint_bytes / 1e6)
        row["load_peak_MB_cold"] = round(cold["peak_above_imports"] / 1e6)
        row["load_peak_ratio_cold"] = round(cold["peak_above_imports"] / checkpoint_bytes, 3)
        row["load_peak_MB_warm"] = round(warm["peak_above_imports"] / 1e6)
        row["load_peak_ratio_warm"] = round(warm["peak_above_imports"] / checkpoint_bytes, 3)
        row["load_s"] = round(warm["seconds"], 2)
        if has_hf:
            row.update(bench_transformers(family, config, args))
        else:
            row["transformers"] = "not installed"
        rows.append(row)
        print(json.dumps(row))


def bench_transformers(family: str, config, args) -> dict:  # pragma: no cover - transformers is not installed here
    import transformers

    hf_config = getattr(transformers, type(config).__name__).from_dict(config.to_dict())
    hf_model = getattr(transformers, LM_CLASS[family])(hf_config).eval()
    return {
        "hf_forward_tok_s": round(bench_forward(hf_model, config.vocab_size, args.seq, args.repeats)),
        "hf_decode_tok_s": round(bench_decode(hf_model, config.vocab_size, 16, args.decode_steps), 1),
    }


if __name__ == "__main__":
    main()
