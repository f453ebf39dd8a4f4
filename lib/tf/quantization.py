"""Weight-only int8 in TensorFlow: `Int8Linear` (one quantized projection) and `QuantizationMixin` (`quantize`,
`from_quantized`). The scales and the checkpoint format are shared (`twinformers.checkpoints.quantized`).

Each projection keeps an int8 (in, out) kernel variable and a float32 (out,) `<kernel>_scale` variable; its call
computes `(x @ cast(kernel)) * scale + bias` inside the model's (XLA-compiled, in `generate`) program, so the only
weights kept between steps are the int8 ones. (XLA on CPU converts the int8 kernel in a fusion of its own
before the dot rather than inside it: a transient float buffer per projection and step, see
docs/quantization.md for what that costs.)
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..checkpoints.canonical import open_checkpoint
from ..checkpoints.quantized import check_mode, quantization_config, quantize_per_channel, scaled_modules
from .ops import Conv1D, LMHead, shape_list

__all__ = ["Int8Linear", "QuantizationMixin"]


class Int8Linear(keras.layers.Layer):
    """`(x @ q) * scale + bias` with an int8 (in, out) kernel `q` and float32 (out,) scale, in x's dtype.

    The variables take the names of the float layer's (`kernel_name`: "weight" for GPT-2's Conv1D, "kernel" for
    `Dense` and the LM head; the scale `<kernel_name>_scale`), so the conversion tables name them.

    Args:
        kernel_name: the float kernel variable's name. in_features, out_features: the kernel's shape.
        use_bias: whether there is a bias.
    """

    def __init__(self, kernel_name: str, in_features: int, out_features: int, use_bias: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kernel_name = kernel_name
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = use_bias

    def build(self, input_shape: Any = None) -> None:
        shape = (self.in_features, self.out_features)
        self.kernel = self.add_weight(name=self.kernel_name, shape=shape, dtype="int8", initializer="zeros",
                                      trainable=False)
        self.kernel_scale = self.add_weight(name=self.kernel_name + "_scale", shape=(self.out_features,),
                                            dtype="float32", initializer="ones", trainable=False)
        self.bias = self.add_weight(name="bias", shape=(self.out_features,), initializer="zeros",
                                    trainable=False) if self.use_bias else None

    def set_weight(self, kernel: np.ndarray, bias: np.ndarray | None) -> None:
        """Quantize a float (in, out) `kernel` per output channel; keep `bias` as it is."""
        q, scale = quantize_per_channel(np.asarray(kernel, np.float32), out_axis=1)
        self.kernel.assign(q)
        self.kernel_scale.assign(scale)
        if bias is not None:
            self.bias.assign(bias)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        # (..., in) -> (..., out)
        size_out = shape_list(x)[:-1] + [self.out_features]
        y = tf.matmul(tf.reshape(x, [-1, self.in_features]), tf.cast(self.kernel, x.dtype))
        y = y * tf.cast(self.kernel_scale, x.dtype)
        if self.bias is not None:
            y = y + tf.cast(self.bias, x.dtype)
        return tf.reshape(y, size_out)


def _float_projection(layer: keras.layers.Layer) -> tuple[str, np.ndarray, np.ndarray | None] | None:
    """(kernel name, float (in, out) kernel, bias or None) of a projection layer, None for any other layer."""
    if isinstance(layer, Conv1D):
        return "weight", layer.weight.numpy(), layer.bias.numpy()
    if isinstance(layer, keras.layers.Dense):
        return "kernel", layer.kernel.numpy(), layer.bias.numpy() if layer.use_bias else None
    if isinstance(layer, LMHead):  # tied: the token table's transpose, as its call multiplies by
        kernel = layer.embedding.embeddings.numpy().T if layer.embedding is not None else layer.kernel.numpy()
        return "kernel", kernel, layer.bias.numpy() if layer.use_bias else None
    return None


def _replace(parent: keras.layers.Layer, name: str, old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """`parent.<name> = new` in old's place in Keras' tracking (so the weights keep their order)."""
    index = parent._layers.index(old)
    parent._tracker.unlock()  # a built layer's state is locked against new sublayers
    try:
        setattr(parent, name, new)  # tracked: appended to parent._layers
    finally:
        parent._tracker.lock()
    parent._layers.remove(new)
    parent._layers[index] = new
    parent._tracker.stored_ids["layers"].discard(id(old))


class QuantizationMixin:
    """`quantize(mode)` and `from_quantized(path)` for every TensorFlow model. It comes before `keras.Model` in
    the bases: Keras' own `Model.quantize` (int8 activations too, Dense layers only) is replaced, as is the
    wrapper Keras' `Layer.__new__` puts on each instance's `quantize` (it validates Keras' modes and returns
    None)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> QuantizationMixin:
        model = super().__new__(cls, *args, **kwargs)
        model.__dict__.pop("quantize", None)  # Keras' per-instance wrapper: the class's method applies
        return model

    # No `quantization_mode` property here (the PyTorch and Flax twins have one): Keras' `Layer.quantization_mode`
    # (its dtype policy's) routes `__call__` to Keras' own quantized kernels; ours is `_int8_mode()`.
    def _int8_mode(self) -> str | None:
        """"int8" once quantized, else None (`config.quantization_config["mode"]`)."""
        return (getattr(self.config, "quantization_config", None) or {}).get("mode")

    def quantize(self, mode: str) -> QuantizationMixin:
        """Replace every projection and the LM head by an `Int8Linear` (weight-only, per output channel).

        Embeddings and layer norms stay float; a tied LM head gets its own int8 copy. The model is left with no
        trainable variables (`trainable = False`): a quantized model is for inference.

        Args:
            mode: "int8".
        Returns:
            The model (quantized in place).
        Raises:
            ValueError: an unsupported mode, a model already quantized, or one with LoRA adapters (merge or
                delete them first).
        """
        mode = check_mode(mode, self._int8_mode())
        if self.peft_config:
            raise ValueError(f"quantize: LoRA adapters are attached ({', '.join(self.peft_config)}); merge or "
                             "delete them first")
        if not self.built:
            self.build()
        found = [(parent, name, child) for parent in self._flatten_layers(include_self=True)
                 for name, child in list(vars(parent).items())
                 if not name.startswith("_") and _float_projection(child) is not None]
        for parent, name, old in found:
            kernel_name, kernel, bias = _float_projection(old)
            new = Int8Linear(kernel_name, *kernel.shape, bias is not None, name=old.name, dtype=old.dtype_policy)
            with contextlib.ExitStack() as scopes:  # the variables get the float layer's paths
                for part in old.path.split("/")[:-1]:
                    scopes.enter_context(keras.name_scope(part))
                new.build()
            new.set_weight(kernel, bias)
            _replace(parent, name, old, new)
        self.trainable = False
        self.__dict__.pop("_generation_programs", None)  # compiled around the float layers
        self.config = copy.deepcopy(self.config)  # another model may share the float config object
        self.config.quantization_config = quantization_config(mode, scaled_modules(self._canonical_plan().values()))
        return self

    @classmethod
    def from_quantized(cls, path: str | os.PathLike, dtype: str | None = None, **hub: Any) -> QuantizationMixin:
        """Load a checkpoint written by `save_pretrained` of a quantized model (config has `quantization_config`),
        from any twin.

        Args:
            path: checkpoint directory (or Hub id). dtype: as `from_pretrained`'s (the Keras dtype policy).
            **hub: revision, cache_dir, local_files_only, token.
        Raises:
            ValueError: the checkpoint is not quantized, or its tensors do not fit the model.
        """
        from .modeling_utils import _dtype_policy  # the models' module imports this one

        config = cls.config_class.from_pretrained(path, **hub)
        settings = getattr(config, "quantization_config", None)
        if not settings:
            raise ValueError(f"{os.fspath(path)}: config.json has no quantization_config; use from_pretrained")
        del config.quantization_config
        with _dtype_policy(dtype):
            model = cls(config, **({"dtype": dtype} if dtype is not None else {}))
            model.build()
        model.quantize(settings["mode"])
        info = model._load_weights(open_checkpoint(path, **hub))
        if info["missing_keys"]:
            raise ValueError(f"{os.fspath(path)}: the quantized checkpoint lacks {', '.join(info['missing_keys'][:5])}")
        return model
