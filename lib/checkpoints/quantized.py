"""Weight-only int8 quantization, framework-free: the modes, the per-channel scales, and the checkpoint format.

`model.quantize("int8")` (every backend) replaces each projection and the LM head by an int8 twin:

- per output channel j, symmetric: `scale[j] = max_i |W[i, j]| / 127` (1 for an all-zero channel), and
  `q = round(W / scale)` clipped to [-127, 127], so each weight is off by at most `scale[j] / 2`;
- activations stay float; the product is `(x @ q) * scale` (the scale factors out of the sum over inputs).

Checkpoint format (safetensors, written by `save_pretrained` of a quantized model):

- `<module>.weight`: int8, in the layout of the float weight it replaces (GPT-2's Conv1D `(in, out)`,
  `nn.Linear` `(out, in)`), under the same name, so the usual name and layout tables apply;
- `<module>.weight_scale`: float32 `(out,)`, one scale per output channel;
- `<module>.bias`: unchanged (float);
- config.json: `"quantization_config": {"quant_method": "twinformers", "mode": "int8", "modules": [...]}`,
  the quantized module names (PyTorch names).

Embeddings (`wte`, `wpe`) stay float; a tied LM head gets its own int8 copy of the embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..conversion.tables import IDENTITY, Transform
from ..errors import InputError

__all__ = [
    "QUANTIZATION_MODES",
    "QUANT_METHOD",
    "SCALE_SUFFIX",
    "check_mode",
    "plan_with_scales",
    "quantization_config",
    "quantize_per_channel",
    "scaled_modules",
    "state_dict_position",
]

QUANTIZATION_MODES = ("int8",)
QUANT_METHOD = "twinformers"
SCALE_SUFFIX = "weight_scale"
# TensorFlow and Flax name a weight's scale after the weight's own variable: `<kernel>_scale` (`kernel_scale`,
# GPT-2 TF's `weight_scale`); its canonical key is `<module>.weight_scale` in every twin.
SCALE_NAME_SUFFIX = "_scale"
INT8_MAX = 127


def check_mode(mode: Any, already: str | None) -> str:
    """The checks every backend's `quantize(mode)` makes before touching the model.

    Args:
        mode: the requested mode. already: the model's current mode (None when not quantized).

    Raises:
        ValueError: an unsupported mode, or a model that is already quantized.
    """
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantize: unsupported mode {mode!r}; supported: {', '.join(QUANTIZATION_MODES)}")
    if already is not None:
        raise ValueError(f"quantize: the model is already quantized ({already!r}); quantize the float model once")
    return mode


def quantize_per_channel(weight: np.ndarray, out_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 quantization of a 2-D float weight.

    Args:
        weight: (in, out) or (out, in) float array. out_axis: the axis of the output channels (1 or 0).

    Returns:
        (int8 array of `weight`'s shape, float32 (out,) scales) with `weight ≈ q * scale` along `out_axis`.
    """
    if weight.ndim != 2 or out_axis not in (0, 1):
        raise ValueError(f"quantize_per_channel: expected a 2-D weight and out_axis 0 or 1; got {weight.shape}, "
                         f"{out_axis}")
    weight = np.asarray(weight, dtype=np.float32)
    amax = np.abs(weight).max(axis=1 - out_axis)
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    shaped = scale[None, :] if out_axis == 1 else scale[:, None]
    q = np.clip(np.rint(weight / shaped), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def plan_with_scales(
    names: Iterable[str], plan: Callable[[list[str]], dict[str, tuple[str, Transform]]]
) -> dict[str, tuple[str, Transform]]:
    """`plan` (backend name → (canonical key, transform), e.g. `conversion.tables.plan_from_backend`) for a
    quantized model's names: the float names through `plan`, each `<weight>_scale` to its weight's canonical
    key + "_scale" (`<module>.weight_scale`), kept as is (a (out,) vector in every layout).

    Raises:
        ValueError: a scale whose weight is not among `names`.
    """
    names = list(names)
    scales = [name for name in names if name.endswith(SCALE_NAME_SUFFIX)]
    result = plan([name for name in names if not name.endswith(SCALE_NAME_SUFFIX)])
    for name in scales:
        weight = name[: -len(SCALE_NAME_SUFFIX)]
        if weight not in result:
            raise ValueError(f"quantized weights: {name!r} has no weight {weight!r} next to it")
        result[name] = (result[weight][0] + SCALE_NAME_SUFFIX, IDENTITY)
    return result


def scaled_modules(plan: Iterable[tuple]) -> list[str]:
    """The canonical (PyTorch) names of the quantized modules in a conversion plan's values (tuples ending in
    (canonical key, transform)): those with a `<module>.weight_scale`."""
    suffix = "." + SCALE_SUFFIX
    return sorted(entry[-2][: -len(suffix)] for entry in plan if entry[-2].endswith(suffix))


def state_dict_position(order: dict[str, int], key: str) -> tuple[int, int]:
    """Sort key of `key` in PyTorch's state_dict `order` (canonical key → index): a scale right after its
    weight, keys `order` lacks (a tied head's own int8 copy) last."""
    if key.endswith(SCALE_NAME_SUFFIX):
        return order.get(key[: -len(SCALE_NAME_SUFFIX)], len(order)), 1
    return order.get(key, len(order)), 0


def quantization_config(mode: str, modules: list[str]) -> dict[str, Any]:
    """The `quantization_config` entry of config.json for a model quantized in `mode`."""
    return {"quant_method": QUANT_METHOD, "mode": mode, "modules": sorted(modules)}


def quantized_checkpoint_error(config: Any, path: str, backend: str) -> InputError | None:
    """The error for loading a quantized checkpoint (config has `quantization_config`) with a plain
    `from_pretrained`, which would otherwise read int8 values into float weights and drop the scales silently.
    Quantized checkpoints load with `from_quantized` in every twin (None when `config` is not quantized)."""
    settings = getattr(config, "quantization_config", None)
    if not settings:
        return None
    mode = settings.get("mode") if isinstance(settings, dict) else settings
    return InputError(f"{path}: config.json has quantization_config (mode {mode!r}): a plain from_pretrained would "
                      f"read the int8 weights as floats and drop their scales; load it with the {backend} model "
                      "class's `from_quantized(path)`")
