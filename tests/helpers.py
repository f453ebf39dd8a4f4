"""The one shared test helper: tolerances, tiny configs, `to_numpy` and a recursive `assert_close`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from twinformers.conversion.tables import HEADS, TABLES

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
HF_FIXTURES = os.path.join(FIXTURES, "hf")

# The class registry of every backend's tests, from the family tables: (family, class name, head kind).
CLASSES = [
    (family, table.classes[head], head) for family, table in TABLES.items() for head in HEADS if head in table.classes
]
FAMILIES = tuple(TABLES)
BASE_CLASSES = {family: table.classes["base"] for family, table in TABLES.items()}
LM_CLASSES = {family: table.classes["causal_lm"] for family, table in TABLES.items()}

# One tolerance table (absolute). fp32 is the project's equivalence bound; calibrate on CPU before
# changing it, and write down why in the test that needs something else.
TOLERANCES = {"float32": 1e-5, "bfloat16": 5e-2, "float16": 1e-2}

# Deliberately unequal sizes so a swapped axis fails loudly (vocab 97, hidden 24, 3 heads of 8,
# 19 positions, rotary_dim 4, window 5; tests use batch 3, sequence 7).
TINY = {
    "gpt2": dict(vocab_size=97, n_positions=19, n_embd=24, n_layer=2, n_head=3),
    "gptj": dict(vocab_size=97, n_positions=19, n_embd=24, n_layer=2, n_head=3, rotary_dim=4),
    "gpt_neo": dict(
        vocab_size=97, max_position_embeddings=19, hidden_size=24, num_layers=2, num_heads=3,
        attention_types=[[["global", "local"], 1]], window_size=5,
    ),
}


def tiny_config(family: str, **overrides: Any):
    """A tiny config of `family` ("gpt2", "gptj", "gpt_neo"), dropout off unless overridden."""
    from twinformers.configuration import CONFIG_MAPPING

    values = dict(TINY[family])
    dropout_keys = {
        "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"),
        "gptj": ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
        "gpt_neo": ("resid_dropout", "embed_dropout", "attention_dropout", "classifier_dropout"),
    }[family]
    values.update({k: 0.0 for k in dropout_keys})
    values.update(overrides)
    return CONFIG_MAPPING[family](**values)


def to_numpy(x: Any) -> Any:
    """Tensor of any backend (or nested tuple/list/dict/ModelOutput of them) → NumPy, recursively."""
    from twinformers.outputs import ModelOutput

    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    if isinstance(x, ModelOutput):
        return {f.name: to_numpy(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_numpy(v) for v in x)
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    if hasattr(x, "numpy"):  # tf
        return np.asarray(x.numpy())
    return np.asarray(x)  # jax, numpy


def assert_close(
    actual: Any,
    expected: Any,
    name: str = "outputs",
    atol: float | None = None,
    dtype: str = "float32",
    where: np.ndarray | None = None,
) -> None:
    """Compare nested outputs recursively; the failure names the tensor (`outputs.hidden_states[3]`),
    its max |Δ| and where it is.

    Args:
        where: optional boolean mask broadcastable to the *leading* axes of every array (e.g. (B, T) valid
            query positions); only those positions are compared.
    """
    atol = TOLERANCES[dtype] if atol is None else atol
    actual, expected = to_numpy(actual), to_numpy(expected)
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{name}: expected a mapping, got {type(actual).__name__}"
        keys = {k for k, v in expected.items() if v is not None} | {k for k, v in actual.items() if v is not None}
        for key in sorted(keys):
            assert key in actual and actual[key] is not None, f"{name}.{key} missing from actual"
            assert key in expected and expected[key] is not None, f"{name}.{key} unexpected in actual"
            assert_close(actual[key], expected[key], f"{name}.{key}", atol, dtype, where)
        return
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)), f"{name}: expected a sequence, got {type(actual).__name__}"
        assert len(actual) == len(expected), f"{name}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{name}[{i}]", atol, dtype, where)
        return
    if expected is None:
        assert actual is None, f"{name}: expected None"
        return
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    diff = _masked_diff(a, e, where)
    if diff.size and not np.all(np.isfinite(diff)):
        bad = np.argwhere(~np.isfinite(diff))[0]
        raise AssertionError(f"{name}: non-finite difference at index {tuple(bad)}")
    worst = float(diff.max()) if diff.size else 0.0
    if worst > atol:
        index = np.unravel_index(int(diff.argmax()), diff.shape)
        raise AssertionError(
            f"{name}: max |Δ| = {worst:.3e} > {atol:.0e} at index {tuple(int(i) for i in index)} "
            f"(actual {a[index]:.6g}, expected {e[index]:.6g})"
        )


def _masked_diff(a: np.ndarray, e: np.ndarray, where: np.ndarray | None) -> np.ndarray:
    """|a - e| as float64, zero outside `where` (broadcast over the leading axes)."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64))
    if where is not None and diff.ndim >= np.ndim(where):
        mask = np.broadcast_to(np.reshape(where, np.shape(where) + (1,) * (diff.ndim - np.ndim(where))), diff.shape)
        diff = np.where(mask, diff, 0.0)
    return diff


def max_abs_diff(actual: Any, expected: Any, where: np.ndarray | None = None) -> float:
    """Largest |Δ| over every array of two nested outputs (for reports); `where` as in `assert_close`.
    A non-finite difference gives inf."""
    a, e = to_numpy(actual), to_numpy(expected)
    if isinstance(e, dict):
        return max([max_abs_diff(a[k], v, where) for k, v in e.items() if v is not None] or [0.0])
    if isinstance(e, (tuple, list)):
        return max([max_abs_diff(x, y, where) for x, y in zip(a, e)] or [0.0])
    if e is None:
        return 0.0
    diff = _masked_diff(a, e, where)
    return float(np.max(np.where(np.isfinite(diff), diff, np.inf), initial=0.0))


def require_reader(fixture_dir: str) -> None:
    """Skip when the fixture's weights are a torch pickle (`*-bin`) and torch is not installed: reading
    `pytorch_model.bin` needs PyTorch by design. The `equivalence` tox env, which has every backend, runs
    these cases (`-k bin`), so they are tested in CI."""
    if fixture_dir.endswith("-bin"):
        import pytest

        pytest.importorskip("torch", reason="pytorch_model.bin is a torch pickle")


def reference_outputs(family: str, head: str) -> dict[str, np.ndarray]:
    """Inputs and PyTorch outputs Hugging Face recorded for a fixture (`input.*`, `pt.*` keys)."""
    with np.load(os.path.join(HF_FIXTURES, "reference_outputs", f"{family}-{head}.npz")) as data:
        return {k: data[k] for k in data.files}


# LoRA adapters written by PEFT 0.21.2 for Hugging Face models (tests/fixtures/peft/README.md): case → family.
PEFT_FIXTURES = os.path.join(FIXTURES, "peft")
PEFT_CASES = {"gpt2-default": "gpt2", "gpt2-all-linear": "gpt2", "gptj-default": "gptj",
              "gptj-all-linear": "gptj", "gpt_neo-default": "gpt_neo"}


# Memory of a load, measured in a fresh process (`peak_rss_added`) on a checkpoint whose bytes are mostly
# layers (52 MiB float32; largest tensor 4 MiB). The slack covers what a first load allocates whatever the
# model size (TensorFlow's symbolic build trace, Flax's shape trace: 3-20 MiB measured with the framework
# warmed up in the setup); a second whole copy of the model in any dtype is 26 MiB or more on top.
MEMORY_TEST_CONFIG = dict(n_layer=4, n_embd=512, n_head=8, vocab_size=2000, n_positions=64)
LOAD_MEMORY_SLACK = 32 * 2**20

_PEAK_PRELUDE = """
import json, sys
def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
"""


def write_random_gpt2(directory: str, dtype: str = "float32", **config: Any) -> dict[str, int]:
    """A random GPT-2 `model.safetensors` (+ config.json), written tensor by tensor.

    Returns {"total": bytes of the weights, "largest": bytes of the largest tensor}."""
    from twinformers.checkpoints.files import numpy_dtype
    from twinformers.checkpoints.safetensors import write_safetensors
    from twinformers.configuration import GPT2Config
    from twinformers.conversion.tables import expected_shapes

    gpt2 = GPT2Config(**config)
    gpt2.save_pretrained(directory)
    shapes = {k: v for k, v in expected_shapes(gpt2, "causal_lm").items() if k != "lm_head.weight"}  # tied
    np_dtype = numpy_dtype(dtype)
    rng = np.random.default_rng(0)
    write_safetensors(
        os.path.join(directory, "model.safetensors"), metadata={"format": "pt"},
        specs={k: (np_dtype, s) for k, s in shapes.items()},
        fetch=lambda k: (0.02 * rng.standard_normal(shapes[k], dtype=np.float32)).astype(np_dtype),
    )
    sizes = [int(np.prod(s)) * np_dtype.itemsize for s in shapes.values()]
    return {"total": sum(sizes), "largest": max(sizes)}


def peak_rss_added(setup: str, body: str) -> int:
    """Run `setup` (imports), then `body` in a fresh Python process; bytes its peak resident set grew by
    during `body` (VmHWM, reset after `setup`; file-backed memory-map pages count). `body` may print."""
    import subprocess
    import sys

    script = "\n".join([
        _PEAK_PRELUDE, setup,
        'open("/proc/self/clear_refs", "w").write("5")\n_baseline = _status("VmRSS")',
        body,
        'print("PEAK_RSS_ADDED", _status("VmHWM") - _baseline)',
    ])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split("PEAK_RSS_ADDED")[-1])
