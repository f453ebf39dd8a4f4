"""The Flax suite runs tiny models whose XLA compile takes far longer than their execution: a lower LLVM
optimization level cuts compile time by about a third without changing which float32 operations run
(benchmarks/bench_flax.py measures the default level). An XLA_FLAGS set by the caller wins."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
