"""Batch-1 projections of PyTorch GPT-2 124M on CPU: GB/s of weights read by each projection kind, plain (as the
model holds them after loading) and after `pack_for_inference`, in fp32, bf16 and int8, against NumPy's read
bandwidth measured in the same rounds. fp32 "laid out" is `packing.lay_out` alone (PyTorch's MKL kernels);
fp32 "packed" adds `MatvecConv1D` (NumPy's matmul for one-row Conv1D inputs), as `pack_for_inference` does.

Each projection kind runs over 12 separate weights (one per layer; the LM head once), so the weights come from
memory, not cache, as in a decode step. Rounds are interleaved (every variant once per round); the best round
counts.

Usage: python benchmarks/bench_pt_matvec.py [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch import nn

from twinformers.pt.ops import Conv1D
from twinformers.pt.packing import MatvecConv1D, PackedLinear, bf16_packing_available, lay_out
from twinformers.pt.quantization import Int8Linear

# name: (in, out, module kind, copies read per token)
PROJECTIONS = {
    "attn.c_attn": (768, 2304, "conv1d", 12),
    "attn.c_proj": (768, 768, "conv1d", 12),
    "mlp.c_fc": (768, 3072, "conv1d", 12),
    "mlp.c_proj": (3072, 768, "conv1d", 12),
    "lm_head (wte)": (768, 50257, "linear", 1),
}


def best_time(fn, repeats: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def numpy_read_bandwidth(array: np.ndarray) -> float:
    return array.nbytes / best_time(array.sum, 5)


def variants(fan_in: int, fan_out: int, kind: str, copies: int) -> dict[str, tuple[list[nn.Module], torch.dtype]]:
    """Variant name → (modules, activation dtype)."""
    def plain() -> nn.Module:
        if kind == "conv1d":
            return Conv1D(fan_out, fan_in)
        return nn.Linear(fan_in, fan_out, bias=False)

    fp32 = [plain().eval().requires_grad_(False) for _ in range(copies)]
    fp32_laid_out = copy.deepcopy(fp32)
    for module in fp32_laid_out:
        lay_out(module.weight, kind == "conv1d")
    # pack_for_inference: laid out, and Conv1D's one-row products through NumPy (nn.Linear keeps PyTorch's)
    fp32_packed = [MatvecConv1D(m) for m in fp32_laid_out] if kind == "conv1d" else fp32_laid_out
    bf16 = [copy.deepcopy(m).to(torch.bfloat16) for m in fp32]
    out = {"fp32 plain": (fp32, torch.float32), "fp32 laid out": (fp32_laid_out, torch.float32),
           "fp32 packed": (fp32_packed, torch.float32), "bf16 plain": (bf16, torch.bfloat16)}
    if bf16_packing_available():
        out["bf16 packed"] = ([PackedLinear(m.weight, m.bias, kind == "conv1d") for m in bf16], torch.bfloat16)
    out["int8"] = ([Int8Linear(m.weight, m.bias, kind == "conv1d") for m in fp32], torch.float32)
    return out


def weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for name, t in module.state_dict().items() if name.endswith("weight"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    array = np.ones(2**28 // 4, np.float32)  # 256 MiB
    cells = {name: variants(*spec) for name, spec in PROJECTIONS.items()}
    bandwidth, seconds = [], {}
    with torch.no_grad():
        for _ in range(args.rounds):
            bandwidth.append(numpy_read_bandwidth(array))
            for name, by_variant in cells.items():
                for variant, (modules, dtype) in by_variant.items():
                    x = torch.randn(1, 1, PROJECTIONS[name][0], dtype=dtype)
                    t = best_time(lambda modules=modules, x=x: [m(x) for m in modules])
                    key = (name, variant)
                    seconds[key] = min(seconds.get(key, float("inf")), t)
    limit = max(bandwidth)
    print(f"NumPy read bandwidth: best {limit / 1e9:.1f} GB/s (rounds: "
          + ", ".join(f"{b / 1e9:.1f}" for b in bandwidth) + ")")
    names = list(next(iter(cells.values())))
    print("\n| projection (in → out) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for name, by_variant in cells.items():
        fan_in, fan_out, _, copies = PROJECTIONS[name]
        row = []
        for variant in names:
            modules = by_variant[variant][0]
            rate = sum(weight_bytes(m) for m in modules) / seconds[(name, variant)]
            per_token = seconds[(name, variant)] * 1e3
            row.append(f"{rate / 1e9:.1f} GB/s ({100 * rate / limit:.0f}%), {per_token:.2f} ms")
        print(f"| {name} ({fan_in} → {fan_out}) ×{copies} | " + " | ".join(row) + " |")
    print("\nGB/s: weight bytes read per second (int8: the int8 bytes; % of the NumPy bandwidth); ms: per token "
          "for all copies.")


if __name__ == "__main__":
    main()
