"""What a fused batch-1 kernel would give on this CPU: int8 and bf16 weights read and widened in registers,
against fp32, for GPT-2 124M's projection shapes. A sizing experiment for issue 20, not a library kernel.

`benchmarks/fused_gemv.c` is compiled at run time with the system `gcc` (-O3 -march=native, a shared object in
a temporary directory) and called through ctypes on NumPy buffers. All weights are stored (out, in) row-major
and every product is y = W x for one float32 row x, single-threaded, accumulated in float32:

- NumPy fp32: `np.matmul(W, x, out=y)` (OpenBLAS sgemv; OPENBLAS_NUM_THREADS=1)
- C fp32:     the control, written like the two below (AVX2/FMA, 4 rows at a time, 16 partial sums per row)
- C bf16:     W as bfloat16 bits (uint16), widened to float32 in registers (a shift left by 16)
- C int8:     W as int8 with one float32 scale per output row, as `quantize("int8")` computes them
              (`twinformers.checkpoints.quantized.quantize_per_channel`): y[r] = scale[r] * sum_i q[r, i] x[i]

Each projection kind runs over its 12 per-layer weights (the LM head once), as in a decode step; before every
timed pass a 96 MiB slice of the bandwidth array is read (untimed), so the weights come from memory even where
12 int8 or bf16 copies would fit the 32 MiB L3. "decode step" times the 49 products of one token in layer order.
Rounds are interleaved (every cell once per round, best of --repeats inside a round); the best round counts.
NumPy's read bandwidth is measured in the same rounds: `a.sum()` and an sgemv `a.reshape(65536, 4096) @ v` of a
1 GiB float32 array.

Every kernel is first checked against a float64 NumPy product of the same (dequantized) weight on every shape,
with the bound derived in `check`; a kernel off by more aborts the run, naming the shape.

Usage: taskset -c 1 python benchmarks/bench_fused_gemv.py [--rounds 3] [--repeats 5] [--scale 1]
       (--scale 0.25 makes every dimension 4x smaller: a quick correctness and smoke run)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from twinformers.checkpoints.quantized import quantize_per_channel  # noqa: E402

SOURCE = Path(__file__).with_name("fused_gemv.c")
# name: (in, out, copies read per token)
PROJECTIONS = {
    "attn.c_attn": (768, 2304, 12),
    "attn.c_proj": (768, 768, 12),
    "mlp.c_fc": (768, 3072, 12),
    "mlp.c_proj": (3072, 768, 12),
    "lm_head": (768, 50257, 1),
}
KERNELS = ("NumPy fp32", "C fp32", "C bf16", "C int8")
FLUSH_BYTES = 96 * 2**20
UNIT_ROUNDOFF = 2.0**-24  # float32


def build_library(workdir: str) -> ctypes.CDLL:
    """Compile fused_gemv.c into `workdir` and load it."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError(f"bench_fused_gemv.py: no `gcc` on PATH; it compiles {SOURCE} at run time "
                           "(install gcc, e.g. `apt-get install gcc`)")
    library = Path(workdir) / "fused_gemv.so"
    command = [gcc, "-O3", "-march=native", "-shared", "-fPIC", "-o", str(library), str(SOURCE)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench_fused_gemv.py: `{' '.join(command)}` failed:\n{done.stderr}")
    lib = ctypes.CDLL(str(library))
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    lib.gemv_f32.argtypes = [pointer, pointer, pointer, pointer, size, size]
    lib.gemv_bf16.argtypes = [pointer, pointer, pointer, pointer, size, size]
    lib.gemv_i8.argtypes = [pointer, pointer, pointer, pointer, pointer, size, size]
    for function in (lib.gemv_f32, lib.gemv_bf16, lib.gemv_i8):
        function.restype = None
    lib.has_avx2.restype = ctypes.c_int
    return lib


def to_bf16_bits(weight: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bits (uint16), rounded to nearest even (finite inputs)."""
    bits = weight.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


class Projection:
    """One weight in the four storages, and a bound call per kernel: `calls[kernel]()` writes `self.y`."""

    def __init__(self, lib: ctypes.CDLL, weight: np.ndarray, x: np.ndarray, scratch: np.ndarray):
        self.fp32 = weight                                       # (out, in) float32
        self.bf16 = to_bf16_bits(weight)                         # (out, in) uint16
        self.int8, self.scale = quantize_per_channel(weight, 0)  # (out, in) int8, (out,) float32
        self.x, self.y = x, np.empty(weight.shape[0], np.float32)
        out, fan_in = weight.shape
        p = {name: array.ctypes.data for name, array in
             (("fp32", self.fp32), ("bf16", self.bf16), ("int8", self.int8), ("scale", self.scale), ("x", x),
              ("y", self.y), ("xs", scratch))}
        self.calls = {
            "NumPy fp32": lambda: np.matmul(self.fp32, self.x, out=self.y),
            "C fp32": lambda: lib.gemv_f32(p["fp32"], p["x"], p["y"], p["xs"], out, fan_in),
            "C bf16": lambda: lib.gemv_bf16(p["bf16"], p["x"], p["y"], p["xs"], out, fan_in),
            "C int8": lambda: lib.gemv_i8(p["int8"], p["scale"], p["x"], p["y"], p["xs"], out, fan_in),
        }

    def weight_bytes(self, kernel: str) -> int:
        if kernel.endswith("int8"):
            return self.int8.nbytes + self.scale.nbytes
        return (self.bf16 if kernel.endswith("bf16") else self.fp32).nbytes

    def dequantized(self, kernel: str) -> np.ndarray:
        """The weight a kernel multiplies by, exactly, in float64."""
        if kernel.endswith("int8"):
            return self.int8.astype(np.float64) * self.scale.astype(np.float64)[:, None]
        if kernel.endswith("bf16"):
            return from_bf16_bits(self.bf16).astype(np.float64)
        return self.fp32.astype(np.float64)


def rounding_depth(kernel: str, fan_in: int, avx2: bool) -> int:
    """How many float32 roundings a product w_i x_i can pass through on its way to output r (see `check`)."""
    if kernel.startswith("C") and avx2:
        # 16 partial sums per row of in // 16 terms each (FMAs), a tree of depth 4 over them, a scalar tail of
        # at most 31 terms added, the scale multiplied
        return fan_in // 16 + fan_in % 32 + 6
    return fan_in + 2  # any summation order (NumPy's sgemv, the plain C loops), product and scale included


def check(projection: Projection, kernel: str, avx2: bool) -> float:
    """Run `kernel` once and compare with the float64 product of the same weight; raise beyond the bound.

    The weight values (float32, bf16 widened, int8 and its float32 scale) are exact in float64, so the only error
    is float32 rounding in the kernel. Each product w_i x_i reaches output r through at most d roundings
    (`rounding_depth`), so |error_r| <= gamma_d * sum_i |W[r, i] x_i| with gamma_d = d u / (1 - d u) and
    u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms, §3.1 and §4.2).
    """
    weight = projection.dequantized(kernel)
    out, fan_in = weight.shape
    x = projection.x.astype(np.float64)
    exact = weight @ x
    projection.y.fill(np.nan)
    projection.calls[kernel]()
    diff = np.abs(projection.y.astype(np.float64) - exact)
    depth = rounding_depth(kernel, fan_in, avx2)
    bound = depth * UNIT_ROUNDOFF / (1 - depth * UNIT_ROUNDOFF) * (np.abs(weight) @ np.abs(x))
    if not np.all(diff <= bound):  # NaN fails too: an output the kernel did not write
        worst = int(np.argmax(np.where(np.isnan(diff), np.inf, diff - bound)))
        raise AssertionError(f"bench_fused_gemv.py: {kernel} on the (out, in) = ({out}, {fan_in}) weight is off by "
                             f"max |diff| {np.nanmax(diff):.3e}; row {worst}: {diff[worst]:.3e} > bound "
                             f"{bound[worst]:.3e} (d = {depth})")
    return float(diff.max())


def best_pass(calls, flush, repeats: int) -> float:
    """Best time of `repeats` passes over `calls`, each pass after reading the flush buffer."""
    best = float("inf")
    for _ in range(repeats):
        flush()
        start = time.perf_counter()
        for call in calls:
            call()
        best = min(best, time.perf_counter() - start)
    return best


def best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_summary() -> str:
    """The CPU model and its vector extensions, from /proc/cpuinfo (Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "CPU: /proc/cpuinfo not readable"
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    flags = fields.get("flags", "").split()
    vector = [flag for flag in ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
              if flag in flags]
    return f"CPU: {fields.get('model name', '?')}; flags: {' '.join(vector) or 'no AVX2'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per cell per round (best counts)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every dimension by this (e.g. 0.25 for a quick smoke run); 1 = GPT-2 124M")
    args = parser.parse_args()
    shapes = {name: (max(1, int(fan_in * args.scale)), max(1, int(fan_out * args.scale)), copies)
              for name, (fan_in, fan_out, copies) in PROJECTIONS.items()}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as workdir:
        lib = build_library(workdir)
        avx2 = bool(lib.has_avx2())
        print(f"fused_gemv.c: {'AVX2/FMA' if avx2 else 'plain C (no __AVX2__)'}; "
              f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; affinity {sorted(os.sched_getaffinity(0))}")

        print(cpu_summary())
        tiny = Projection(lib, np.ones((4, 16), np.float32), np.ones(16, np.float32), np.empty(16, np.float32))
        call = tiny.calls["C fp32"]
        per_call = best_time(lambda: [call() for _ in range(1000)], 5) / 1000
        print(f"one ctypes call of a (4, 16) product: {per_call * 1e6:.2f} µs (the per-call overhead in every C cell)")

        # correctness, also on shapes with a scalar tail and a row count that is not a multiple of 4
        check_shapes = [(fan_out, fan_in) for fan_in, fan_out, _ in shapes.values()] + [(37, 77), (5, 100), (3, 8)]
        for out, fan_in in check_shapes:
            scratch = np.empty(fan_in, np.float32)
            x = rng.standard_normal(fan_in, dtype=np.float32)
            projection = Projection(lib, rng.standard_normal((out, fan_in), dtype=np.float32) * 0.02, x, scratch)
            diffs = {kernel: check(projection, kernel, avx2) for kernel in KERNELS}
            print(f"checked ({out}, {fan_in}): max |diff| " + ", ".join(f"{k} {d:.1e}" for k, d in diffs.items()))

        big = np.ones(2**28, np.float32)  # 1 GiB
        matrix, vector = big.reshape(65536, 4096), np.ones(4096, np.float32)
        flush_slice = big[: FLUSH_BYTES // 4]

        def flush() -> None:
            flush_slice.sum()

        x = rng.standard_normal(max(fan_in for fan_in, _, _ in shapes.values()), dtype=np.float32)
        scratch = np.empty_like(x)
        layers = {name: [Projection(lib, rng.standard_normal((fan_out, fan_in), dtype=np.float32) * 0.02,
                                    x[:fan_in], scratch) for _ in range(copies)]
                  for name, (fan_in, fan_out, copies) in shapes.items()}
        step = [layers[name][layer] for layer in range(12) for name in list(shapes)[:4]] + layers["lm_head"]
        seconds: dict[tuple[str, str], float] = {}
        bandwidth: dict[str, list[float]] = {"sum": [], "sgemv": []}
        for round_index in range(args.rounds):
            bandwidth["sum"].append(big.nbytes / best_time(big.sum, 3))
            bandwidth["sgemv"].append(big.nbytes / best_time(lambda: matrix @ vector, 3))
            for kernel in KERNELS:
                for name, projections in layers.items():
                    t = best_pass([p.calls[kernel] for p in projections], flush, args.repeats)
                    seconds[name, kernel] = min(seconds.get((name, kernel), float("inf")), t)
                t = best_pass([p.calls[kernel] for p in step], flush, args.repeats)
                seconds["decode step", kernel] = min(seconds.get(("decode step", kernel), float("inf")), t)
            print(f"round {round_index + 1}: sum {bandwidth['sum'][-1] / 1e9:.1f} GB/s, "
                  f"sgemv {bandwidth['sgemv'][-1] / 1e9:.1f} GB/s, decode step "
                  + ", ".join(f"{k} {seconds['decode step', k] * 1e3:.2f} ms" for k in KERNELS), flush=True)

    limit = max(max(bandwidth["sum"]), max(bandwidth["sgemv"]))  # the best read rate NumPy reached
    print("\nNumPy read bandwidth, 1 GiB float32: sum best "
          f"{max(bandwidth['sum']) / 1e9:.1f} GB/s (rounds " + ", ".join(f"{b / 1e9:.1f}" for b in bandwidth["sum"])
          + f"); sgemv best {max(bandwidth['sgemv']) / 1e9:.1f} GB/s (rounds "
          + ", ".join(f"{b / 1e9:.1f}" for b in bandwidth["sgemv"]) + ")")
    print("\n| projection (in → out) | " + " | ".join(KERNELS) + " |")
    print("|---|" + "---:|" * len(KERNELS))
    totals = dict.fromkeys(KERNELS, 0.0)
    for name, projections in [*layers.items(), ("decode step", step)]:
        row = []
        for kernel in KERNELS:
            nbytes = sum(p.weight_bytes(kernel) for p in projections)
            t = seconds[name, kernel]
            row.append(f"{nbytes / t / 1e9:.1f} GB/s ({100 * nbytes / t / limit:.0f}%), {t * 1e3:.2f} ms")
            if name != "decode step":
                totals[kernel] += t
        if name == "decode step":
            print("| **sum of the rows above** | " + " | ".join(f"**{totals[k] * 1e3:.2f} ms**" for k in KERNELS)
                  + " |")
            label = "decode step, measured (49 products in layer order)"
        else:
            fan_in, fan_out, copies = shapes[name]
            label = f"{name} ({fan_in} → {fan_out}) ×{copies}"
        print(f"| {label} | " + " | ".join(row) + " |")
    print("\nGB/s: weight bytes read per second (int8: int8 bytes + scales), % of the higher of NumPy's two read "
          "rates; ms: per token, all copies.")
    for label, times in (("sum of rows", totals), ("decode step measured",
                                                  {k: seconds["decode step", k] for k in KERNELS})):
        for base in ("NumPy fp32", "C fp32"):
            print(f"{label}, against {base} ({times[base] * 1e3:.2f} ms): "
                  f"int8 {times['C int8'] * 1e3:.2f} ms = {times[base] / times['C int8']:.2f}x faster "
                  f"(time ratio {times['C int8'] / times[base]:.3f}), "
                  f"bf16 {times['C bf16'] * 1e3:.2f} ms = {times[base] / times['C bf16']:.2f}x faster "
                  f"(time ratio {times['C bf16'] / times[base]:.3f})")


if __name__ == "__main__":
    main()
