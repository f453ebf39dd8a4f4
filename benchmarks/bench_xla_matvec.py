"""Batch-1 projections under XLA on CPU (JAX): fp32 against int8 and bf16 weights, formulated several ways.

What the TF and Flax twins' int8 and bf16 decoding can get from XLA: each formulation computes `x @ W` for one
row `x` (1, in) and an int8 or bf16 `W`, and the CPU time per matrix is measured over enough copies of `W`
(>= 96 MB) that they are read from memory, as in a decode step, not from the caches. Formulations:

- `dot`: `dot_general(x, W.astype(f32))` — what `Int8Linear` does (bf16: what a bf16 model does, `x` bf16 too).
- `reduce`: `sum(x[:, None] * W.astype(f32))` — multiply and reduction in one fusion reading `W` once.
- `blocks`: a `lax.scan` over blocks of 256 KB (as float32) of `W`, each converted then multiplied (the float
  copy stays in the cache).
- `digits`: `x` split into 3 int8 digit rows (x ≈ Σ_k s_k d_k, error ≤ max|x|·2⁻²⁴), one int8×int8→int32 dot
  with `W`, the rows recombined in float32 (int8 weights only).
- `pad2`: a zero row appended to `x` (2 rows), bf16×bf16 with float32 accumulation (bf16 weights only).

`W` is (in, out) ("io": TF, Flax `nnx.Linear`, the tied LM head) or (out, in) ("oi": Flax GPT-2 `Conv1D`).

Usage: python benchmarks/bench_xla_matvec.py [--shapes 768x2304 768x3072 3072x768 768x50257] [--rounds 2]
(XLA's CPU thread pool is limited to one thread: CPU time of one core, less sensitive to a shared machine.)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

F32 = jnp.float32
BLOCK_BYTES = 256 * 1024
VARIANTS = {  # weight dtype -> formulations
    "f32": ["dot"],
    "int8": ["dot", "reduce", "blocks", "digits"],
    "bf16": ["dot", "reduce", "blocks", "pad2"],
}


def contract(out_axis: int) -> tuple:
    return (((1,), (1 - out_axis,)), ((), ()))


def int8_digits(x: jax.Array, count: int = 3) -> tuple[jax.Array, jax.Array]:
    """(R, K) float32 -> (count·R, K) int8 digits and (count·R, 1) scales, x ≈ Σ_k scale_k · digit_k."""
    scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True) / 127
    scale = jnp.where(scale == 0, 1, scale)
    digits, scales, rest = [], [], x
    for _ in range(count):
        digit = jnp.clip(jnp.round(rest / scale), -127, 127)
        digits.append(digit.astype(jnp.int8))
        scales.append(scale)
        rest = rest - digit * scale
        scale = scale / 254
    return jnp.concatenate(digits, 0), jnp.concatenate(scales, 0)


def project(kind: str, x: jax.Array, w: jax.Array, out_axis: int) -> jax.Array:
    """x (1, in) @ w, w's output axis `out_axis`."""
    if kind == "dot":
        return lax.dot_general(x, w.astype(x.dtype), contract(out_axis))
    if kind == "reduce":
        product = (x[:, None, :] if out_axis == 0 else x[:, :, None]) * w.astype(F32)
        return jnp.sum(product, axis=2 if out_axis == 0 else 1)
    if kind == "blocks":
        size = max(8, BLOCK_BYTES // (4 * w.shape[1 - out_axis]) // 8 * 8)
        count = w.shape[out_axis] // size

        def body(carry, k):
            block = lax.dynamic_slice_in_dim(w, k * size, size, out_axis)
            return carry, lax.dot_general(x, block.astype(F32), contract(out_axis))

        _, ys = lax.scan(body, None, jnp.arange(count))  # (count, 1, size)
        y = jnp.moveaxis(ys, 0, 1).reshape(1, count * size)
        rest = lax.slice_in_dim(w, count * size, w.shape[out_axis], axis=out_axis).astype(F32)
        return jnp.concatenate([y, lax.dot_general(x, rest, contract(out_axis))], axis=1)
    if kind == "digits":
        digits, scales = int8_digits(x)
        acc = lax.dot_general(digits, w, contract(out_axis), preferred_element_type=jnp.int32)
        return jnp.sum(acc.astype(F32) * scales, axis=0, keepdims=True)
    if kind == "pad2":
        padded = jnp.concatenate([x, jnp.zeros_like(x)], 0)
        return lax.dot_general(padded, w, contract(out_axis), preferred_element_type=F32)[:1]
    raise ValueError(kind)


def measure(kind: str, dtype: str, layout: str, shape: tuple[int, int], rng: np.random.Generator) -> float:
    """CPU ms per matrix, best of 4 passes over the copies."""
    d_in, d_out = shape
    copies = max(2, int(96e6 // (d_in * d_out)))
    out_axis = 1 if layout == "io" else 0
    stored = (d_in, d_out) if layout == "io" else (d_out, d_in)
    jdtype = {"f32": F32, "int8": jnp.int8, "bf16": jnp.bfloat16}[dtype]
    weights = [jnp.asarray(rng.integers(-127, 128, stored, dtype=np.int8), jdtype) for _ in range(copies)]
    x = jnp.asarray(rng.standard_normal((1, d_in)), jnp.bfloat16 if dtype == "bf16" and kind == "dot" else F32)
    x = x.astype(jnp.bfloat16) if kind == "pad2" else x
    program = jax.jit(lambda x, ws: jnp.concatenate([project(kind, x, w, out_axis)[:, :8].astype(F32)
                                                     for w in ws], axis=1))
    program(x, weights).block_until_ready()
    best = float("inf")
    for _ in range(4):
        start = time.process_time()
        program(x, weights).block_until_ready()
        best = min(best, time.process_time() - start)
    return best / copies * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["768x2304", "768x3072", "3072x768", "768x50257"])
    parser.add_argument("--layouts", nargs="+", default=["io", "oi"])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best counts")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cells = [(dtype, kind) for dtype, kinds in VARIANTS.items() for kind in kinds]
    for text in args.shapes:
        shape = tuple(int(n) for n in text.split("x"))
        for layout in args.layouts:
            best: dict[tuple, float] = {}
            for _ in range(args.rounds):
                for cell in cells:
                    if cell == ("int8", "reduce") and shape[1] > 10000:
                        continue  # ~100× the dot's time
                    best[cell] = min(best.get(cell, float("inf")), measure(cell[1], cell[0], layout, shape, rng))
            fp32 = best[("f32", "dot")]
            print(f"{text} {layout}: " + "  ".join(f"{d} {k} {ms:.3f} ms ({ms / fp32:.2f}x)"
                                                   for (d, k), ms in best.items()), flush=True)


if __name__ == "__main__":
    main()
