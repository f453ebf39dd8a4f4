"""Weight-only int8 in Flax: `Int8Linear` (one quantized projection) and `QuantizationMixin` (`quantize`,
`from_quantized`). The scales and the checkpoint format are shared (`twinformers.checkpoints.quantized`).

The params tree holds each projection's int8 `kernel` (in the float kernel's layout) and float32 `kernel_scale`
(out,); the NNX module computes `(x @ kernel.astype(dtype)) * kernel_scale + bias` inside the jitted program, so
the only weights kept between steps are the int8 ones. (XLA on CPU converts the int8 kernel to `dtype` in a
fusion of its own before the dot rather than inside it: a transient float buffer per projection and step,
see docs/quantization.md for what that costs.)
"""

from __future__ import annotations

import copy
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from ..checkpoints.canonical import open_checkpoint
from ..checkpoints.quantized import check_mode, quantization_config, quantize_per_channel, scaled_modules
from .ops import Conv1D

__all__ = ["Int8Linear", "QuantizationMixin", "quantize_projections"]

Array = Any


class Int8Linear(nnx.Module):
    """`(x @ q) * kernel_scale + bias` with an int8 kernel `q` and float32 (out,) `kernel_scale`, computed in
    `dtype`. Built as zeros (the shapes the graph definition needs); `set_weight` fills it from a float kernel.

    Args:
        kernel_shape: the float kernel's shape: (in, out) for `nnx.Linear` (`out_axis` 1), (out, in) for
            GPT-2's `Conv1D` (`out_axis` 0). use_bias: whether there is a bias. dtype: computation dtype.
    """

    def __init__(self, kernel_shape: tuple[int, int], out_axis: int, use_bias: bool, *, dtype: Any) -> None:
        out_features = kernel_shape[out_axis]
        self.out_axis = out_axis
        self.dtype = dtype
        self.kernel = nnx.Param(jnp.zeros(kernel_shape, jnp.int8))
        self.kernel_scale = nnx.Param(jnp.ones((out_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None

    def set_weight(self, kernel: Array, bias: Array | None) -> None:
        """Quantize a float `kernel` (this module's layout) per output channel; keep `bias` as it is."""
        q, scale = quantize_per_channel(np.asarray(kernel, np.float32), self.out_axis)
        self.kernel[...] = jnp.asarray(q)
        self.kernel_scale[...] = jnp.asarray(scale)
        if bias is not None:
            self.bias[...] = jnp.asarray(bias)

    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x, self.dtype)
        kernel = self.kernel[...].astype(self.dtype)
        # (..., in) -> (..., out), contracting with the kernel's input axis: no transposed copy of it
        x = lax.dot_general(x, kernel, (((x.ndim - 1,), (1 - self.out_axis,)), ((), ())))
        x = x * self.kernel_scale[...].astype(self.dtype)
        if self.bias is not None:
            x = x + self.bias[...].astype(self.dtype)
        return x


def quantize_projections(module: nnx.Module, dtype: Any, fill: bool) -> None:
    """Replace every projection of `module` (GPT-2's `Conv1D`, `nnx.Linear`) by an `Int8Linear`, in place; a
    tied LM head (`lm_head` None) gets its own from the token table's transpose. With `fill`, the int8 weights
    are quantized from the float ones (concrete arrays); without, they are zeros (building the graph definition).
    """
    projections = [(path, node) for path, node in nnx.iter_graph(module) if isinstance(node, (Conv1D, nnx.Linear))]
    for path, node in projections:
        parent = module
        for name in path[:-1]:
            parent = getattr(parent, str(name))
        out_axis = 0 if isinstance(node, Conv1D) else 1
        bias = node.bias[...] if node.bias is not None else None
        quantized = Int8Linear(tuple(node.kernel.shape), out_axis, bias is not None, dtype=dtype)
        if fill:
            quantized.set_weight(node.kernel[...], bias)
        setattr(parent, str(path[-1]), quantized)
    if getattr(module, "lm_head", False) is None:  # tied: logits were `hidden @ wte.embedding.T`
        table = module.transformer.wte.embedding  # (V, D)
        head = Int8Linear(tuple(table.shape[::-1]), 1, False, dtype=dtype)
        if fill:
            head.set_weight(table[...].T, None)
        module.lm_head = nnx.data(head)  # it was a static None


class QuantizationMixin:
    """`quantize(mode)` and `from_quantized(path)` for every Flax model."""

    @property
    def quantization_mode(self) -> str | None:
        """"int8" once quantized, else None."""
        return (getattr(self.config, "quantization_config", None) or {}).get("mode")

    def quantize(self, mode: str) -> QuantizationMixin:
        """Replace every projection and the LM head by an `Int8Linear` (weight-only, per output channel).

        Embeddings and layer norms stay float; a tied LM head gets its own int8 copy. `self.params` becomes the
        quantized tree (int8 `kernel` + float32 `kernel_scale` per projection); the model runs in its `dtype`.

        Args:
            mode: "int8".
        Returns:
            The model (quantized in place).
        Raises:
            ValueError: an unsupported mode, a model already quantized, or one with LoRA adapters (merge or
                delete them first).
        """
        mode = check_mode(mode, self.quantization_mode)
        if self.peft_config:
            raise ValueError(f"quantize: LoRA adapters are attached ({', '.join(self.peft_config)}); merge or "
                             "delete them first")
        module = self.nnx_module
        quantize_projections(module, self.dtype, fill=True)
        params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
        self.config = copy.deepcopy(self.config)  # another model may share the float config object
        self.config.quantization_config = quantization_config(mode, [])  # new programs: see `_compiled`
        self._params_shape_tree = jax.eval_shape(self._compiled().init, self.key, self.input_shape)
        self.config.quantization_config["modules"] = scaled_modules(self._canonical_plan().values())
        self.params = params
        return self

    @classmethod
    def from_quantized(cls, path: str | os.PathLike, dtype: Any = jnp.float32, **hub: Any) -> QuantizationMixin:
        """Load a checkpoint written by `save_pretrained` of a quantized model (config has `quantization_config`),
        from any twin.

        Args:
            path: checkpoint directory (or Hub id). dtype: computation dtype. **hub: revision, cache_dir,
                local_files_only, token.
        Raises:
            ValueError: the checkpoint is not quantized, or its tensors do not fit the model.
        """
        config = cls.config_class.from_pretrained(path, **hub)
        if not getattr(config, "quantization_config", None):
            raise ValueError(f"{os.fspath(path)}: config.json has no quantization_config; use from_pretrained")
        check_mode(config.quantization_config.get("mode"), None)
        model = cls(config, dtype=dtype, _do_init=False)
        params, info = model._load_params(open_checkpoint(path, **hub))
        if info["missing_keys"]:
            raise ValueError(f"{os.fspath(path)}: the quantized checkpoint lacks {', '.join(info['missing_keys'][:5])}")
        model.params = params
        return model

