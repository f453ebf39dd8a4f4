"""LoRA in TensorFlow (Keras 3): `LoraLayer` (one adapter on one projection) and `LoraMixin` (the adapter
methods of every model). Keras has no forward hooks, so a targeted projection's `call` is wrapped on the
instance; the projection's own variables keep their names, and `save_pretrained` skips adapter variables
(`save_adapter` writes them)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..adapters import LoraConfig, LoraTarget
from ..adapters.mixin import ADAPTERS_ATTR, AdapterMixin, is_adapter_name

__all__ = ["LoraLayer", "LoraMixin", "keras_adapter_config", "restore_adapters"]


class LoraLayer(keras.layers.Layer):
    """`scaling · B A dropout(x)`, added to one projection's output: kernels `lora_A` (in, r), `lora_B` (r, out)
    — the transposes of PEFT's matrices, as every Keras kernel is (in, out)."""

    def __init__(self, target: LoraTarget, config: LoraConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_features = target.in_features
        self.out_features = target.out_features
        self.r = config.r
        self.lora_dropout = keras.layers.Dropout(config.lora_dropout, name="lora_dropout")
        self.scaling = config.scaling
        self.init_lora_weights = config.init_lora_weights
        self.active = False

    def build(self, input_shape: tuple[int | None, ...] | None = None) -> None:
        # PEFT's init: A Kaiming-uniform (bound 1/sqrt(in)), B zero, so a new adapter changes nothing until it trains.
        bound = 1.0 / math.sqrt(self.in_features)
        uniform = keras.initializers.RandomUniform(-bound, bound)
        self.lora_A = self.add_weight(name="lora_A", shape=(self.in_features, self.r), initializer=uniform)
        b_init = "zeros" if self.init_lora_weights else keras.initializers.RandomUniform(-bound, bound)
        self.lora_B = self.add_weight(name="lora_B", shape=(self.r, self.out_features), initializer=b_init)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        # (..., in) -> (..., r) -> (..., out); dropout acts in training mode only
        x = self.lora_dropout(tf.cast(x, self.lora_A.dtype), training=training)
        return tf.matmul(tf.matmul(x, self.lora_A), self.lora_B) * self.scaling

    def delta_weight(self) -> tf.Tensor:
        """The update in the base weight's layout, (in, out) for Conv1D weights and Dense kernels alike."""
        return tf.matmul(self.lora_A, self.lora_B) * self.scaling  # (in, r) @ (r, out) -> (in, out)

    def get_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(A (r, in), B (out, r)) as float NumPy arrays, PEFT's layout."""
        return np.ascontiguousarray(self.lora_A.numpy().T), np.ascontiguousarray(self.lora_B.numpy().T)

    def set_arrays(self, lora_a: np.ndarray, lora_b: np.ndarray) -> None:
        self.lora_A.assign(np.asarray(lora_a).T.astype(self.lora_A.dtype))
        self.lora_B.assign(np.asarray(lora_b).T.astype(self.lora_B.dtype))


def _apply_adapters(module: keras.layers.Layer) -> None:
    """Wrap a targeted projection's `call`: add the active adapter's update to its output."""
    base_call = module.call

    def call(x: tf.Tensor, *args, **kwargs) -> tf.Tensor:
        output = base_call(x, *args, **kwargs)
        for layer in getattr(module, ADAPTERS_ATTR).values():
            if layer.active:
                output = output + tf.cast(layer(x), output.dtype)
        return output

    module.call = call


def _get_layer(model: keras.layers.Layer, module: str) -> keras.layers.Layer:
    """The sublayer at a PyTorch module path (`transformer.h.0.attn.c_attn`; numbers index block lists)."""
    layer = model
    for part in module.split("."):
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    return layer


def _base_weight(module: keras.layers.Layer) -> keras.Variable:
    """A projection's (in, out) matrix: Conv1D's `weight` or Dense's `kernel`."""
    return module.kernel if isinstance(module, keras.layers.Dense) else module.weight


class LoraMixin(AdapterMixin):
    """The adapter methods of every TensorFlow model (see `twinformers.adapters.mixin.AdapterMixin`).

    The flags that switch adapters are Python values, fixed in a traced function: every change drops the
    model's own traced functions (`fit`/`evaluate`/`predict`, `generate`); a `tf.function` of your own that
    calls the model must be traced again.
    """

    def _create_adapter(self, adapter_name: str, config: LoraConfig, targets: dict[str, LoraTarget]) -> None:
        if not self.built:
            self.build()
        for module_name, target in targets.items():
            module = _get_layer(self, module_name)
            with contextlib.ExitStack() as scopes:  # variables named `<projection path>/lora_adapters/<name>/...`
                for part in [*module.path.split("/"), ADAPTERS_ATTR]:
                    scopes.enter_context(keras.name_scope(part))
                layer = LoraLayer(target, config, name=adapter_name, dtype=module.dtype_policy)
                layer.build()
            # Keras locks a built layer's state; its own Dense.enable_lora unlocks it the same way.
            module._tracker.unlock()
            if not hasattr(module, ADAPTERS_ATTR):
                setattr(module, ADAPTERS_ATTR, {})
                _apply_adapters(module)
            getattr(module, ADAPTERS_ATTR)[adapter_name] = layer
            module._tracker.lock()

    def _adapter_layers(self, adapter_name: str) -> dict[str, LoraLayer]:
        return {module: getattr(_get_layer(self, module), ADAPTERS_ATTR)[adapter_name]
                for module in self._adapter_state().targets[adapter_name]}

    def _merge_layer(self, module: str, layer: LoraLayer, sign: float) -> None:
        weight = _base_weight(_get_layer(self, module))
        weight.assign(weight + tf.cast(sign * tf.cast(layer.delta_weight(), tf.float32), weight.dtype))

    def _freeze_base(self) -> None:
        for variable in self.weights:
            variable.trainable = is_adapter_name(variable.path)

    def _adapters_changed(self) -> None:
        """Drop the programs traced with the old adapter state — Keras' train/test/predict functions and
        `generate`'s XLA programs — so the next call retraces."""
        self.train_function = self.test_function = self.predict_function = None
        self.__dict__.get("_generation_programs", {}).clear()


def keras_adapter_config(model: LoraMixin) -> dict[str, Any]:
    """The model's `get_config` entry for a `.keras` file: `{"adapters": {"configs", "active", "enabled",
    "merged"}}` as plain data ({} without adapters), so `keras.models.load_model` rebuilds the adapted model."""
    state = model._adapter_state()
    if not state.configs:
        return {}
    configs = {name: config.to_dict() for name, config in state.configs.items()}
    return {"adapters": {"configs": configs, "active": state.active, "enabled": state.enabled, "merged": state.merged}}


def restore_adapters(model: LoraMixin, adapters: dict[str, Any]) -> None:
    """Add the adapters `keras_adapter_config` described to a freshly built model (Keras then loads their
    variables from the file), with the same active adapter and flags. A merged adapter is already in the saved
    base weights: it is marked merged, not merged again, so `unmerge_adapter` still works."""
    for name, config in adapters["configs"].items():
        model.add_adapter(LoraConfig.from_dict(config, source=f".keras config of adapter {name!r}"), name)
    model.set_adapter(adapters["active"])
    state = model._adapter_state()
    state.enabled, state.merged = bool(adapters["enabled"]), bool(adapters["merged"])
    model._update_layers()
