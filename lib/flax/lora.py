"""LoRA in Flax: `LoraLayer` (one adapter on one projection) and `LoraMixin` (the adapter methods of every
model). Flax params are a plain tree, so LoRA is a pure transform of it: `adapted_params` folds the active
adapter into the kernels (`kernel + scaling · A B`, in the kernel's layout) and every call runs the base
module on the result — nothing in the modules changes. In a train step the adapter's leaves sit in the params
tree at `<projection>/lora_adapters/<name>/lora_A|lora_B`, and `create_train_state` masks the optimizer to
them (see `twinformers.flax.training`).

Training with `lora_dropout` > 0 needs the adapter's input, which a folded kernel no longer has: such a call
(`train=True`) runs the base kernels and wraps each targeted projection of the bound module
(`attach_lora_dropout`): `base(x) + dropout(x) A B · scaling`, as PEFT computes it. Evaluation and generation
keep the folded kernels."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from ..adapters import LoraConfig, LoraTarget
from ..adapters.mixin import ADAPTERS_ATTR, AdapterMixin, is_adapter_name

__all__ = ["LoraLayer", "LoraMixin", "split_adapter_params", "attach_lora_dropout"]

Params = dict[str, Any]


class LoraLayer:
    """`scaling · A B`, added to one projection's kernel: `lora_A` (in, r), `lora_B` (r, out) — the transposes of
    PEFT's matrices, as Flax `Dense` kernels are (in, out)."""

    def __init__(self, target: LoraTarget, config: LoraConfig, rng: jax.Array) -> None:
        # PEFT's init: A Kaiming-uniform (bound 1/sqrt(in)), B zero, so a new adapter changes nothing until it trains.
        bound = 1.0 / math.sqrt(target.in_features)
        a_rng, b_rng = jax.random.split(rng)
        self.lora_A = jax.random.uniform(a_rng, (target.in_features, config.r), jnp.float32, -bound, bound)
        self.lora_B = (jnp.zeros((config.r, target.out_features), jnp.float32) if config.init_lora_weights
                       else jax.random.uniform(b_rng, (config.r, target.out_features), jnp.float32, -bound, bound))
        self.lora_dropout = config.lora_dropout
        self.scaling = config.scaling
        self.fan_in_fan_out = target.fan_in_fan_out
        self.active = False

    def delta_weight(self, lora_A: jax.Array | None = None, lora_B: jax.Array | None = None) -> jax.Array:
        """The update in the kernel's layout: (in, out) for Dense, (out, in) for GPT-2's Conv1D; `lora_A` /
        `lora_B` replace the stored matrices (traced ones in a train step)."""
        lora_A = self.lora_A if lora_A is None else lora_A
        lora_B = self.lora_B if lora_B is None else lora_B
        delta = (lora_A @ lora_B) * self.scaling  # (in, r) @ (r, out) -> (in, out)
        return delta.T if self.fan_in_fan_out else delta

    def get_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(A (r, in), B (out, r)) as float NumPy arrays, PEFT's layout."""
        return np.ascontiguousarray(np.asarray(self.lora_A).T), np.ascontiguousarray(np.asarray(self.lora_B).T)

    def set_arrays(self, lora_a: np.ndarray, lora_b: np.ndarray) -> None:
        self.lora_A = jnp.asarray(np.asarray(lora_a).T, self.lora_A.dtype)
        self.lora_B = jnp.asarray(np.asarray(lora_b).T, self.lora_B.dtype)


def _with_adapter(base: Any, lora_A: jax.Array, lora_B: jax.Array, scaling: Any, rate: Any,
                  key: jax.Array) -> Any:
    """A projection with its adapter unfolded, as PEFT applies it in training: `base(x) + dropout(x) A B · scaling`
    with `lora_A` (in, r) and `lora_B` (r, out), whatever the base kernel's layout. The dropout mask is drawn from
    `key`: kept entries are scaled by 1 / (1 - rate)."""

    def call(x: jax.Array) -> jax.Array:
        hidden = base(x)
        x = x.astype(lora_A.dtype)
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        x = jnp.where(keep, x / (1.0 - rate), 0.0)
        # (..., in) -> (..., r) -> (..., out)
        return hidden + ((x @ lora_A) @ lora_B * scaling).astype(hidden.dtype)

    return call


# Folded into the call's dropout key first, so the adapter's masks are not those of the model's dropout layers.
_LORA_DROPOUT_STREAM = 0x4C6F5241


def attach_lora_dropout(module: Any, lora: dict[str, tuple[Any, ...]], dropout_rng: jax.Array) -> None:
    """Replace every projection named in `lora` ({dotted module path: (lora_A, lora_B, scaling, rate)}) of the
    bound module `module` by `base(x) + dropout(x) A B · scaling`; the i-th (in path order) draws its mask from
    `fold_in(fold_in(dropout_rng, _LORA_DROPOUT_STREAM), i)`. Runs inside the jitted call, on its own module."""
    rng = jax.random.fold_in(dropout_rng, _LORA_DROPOUT_STREAM)
    for i, (path, (lora_A, lora_B, scaling, rate)) in enumerate(sorted(lora.items())):
        *parents, name = path.split(".")
        parent = module
        for part in parents:
            parent = getattr(parent, part)
        base = getattr(parent, name)
        setattr(parent, name, _with_adapter(base, lora_A, lora_B, scaling, rate, jax.random.fold_in(rng, i)))


def split_adapter_params(params: Params) -> tuple[Params, dict[str, Any]]:
    """(the base params tree, {"<projection path>/lora_adapters/<name>/lora_A": leaf, ...}) of a params tree."""
    flat = flatten_dict(params, sep="/")
    adapter = {path: leaf for path, leaf in flat.items() if is_adapter_name(path)}
    if not adapter:
        return params, {}
    return unflatten_dict({p: v for p, v in flat.items() if p not in adapter}, sep="/"), adapter


def _adapter_path(module: str, adapter_name: str, which: str) -> str:
    return "/".join([*module.split("."), ADAPTERS_ATTR, adapter_name, f"lora_{which}"])


def _add_to_kernel(params: Params, module: str, delta: jax.Array) -> Params:
    """A copy of `params` (sharing every untouched subtree) with `delta` added to `module`'s kernel."""
    def add(tree: Params, parts: list[str]) -> Params:
        if not parts:
            kernel = tree["kernel"]
            return {**tree, "kernel": kernel + delta.astype(kernel.dtype)}
        return {**tree, parts[0]: add(tree[parts[0]], parts[1:])}

    return add(params, module.split("."))


class LoraMixin(AdapterMixin):
    """The adapter methods of every Flax model (see `twinformers.adapters.mixin.AdapterMixin`), plus the
    functional ones: `adapted_params`, `params_with_adapter`, `set_adapter_params`.

    Every call of the model and `generate` apply the active adapter through `adapted_params`, except a training
    call with `lora_dropout` > 0, which applies it unfolded (`call_params`).
    """

    def call_params(self, params: Params | None, train: bool) -> tuple[Params | None, dict[str, Any] | None]:
        """What a call of the model runs with: `(adapted_params(params), None)`, or, for a training call
        (`train=True`) with an applied adapter whose `lora_dropout` > 0, the base params and the adapter unfolded,
        `{dotted module path: (lora_A, lora_B, scaling, rate)}` (leaves of `params` used where it holds them), for
        `attach_lora_dropout`."""
        state = self._adapter_state()
        name = state.active
        if not (train and name is not None and state.enabled and not state.merged
                and self.peft_config[name].lora_dropout):
            return self.adapted_params(params), None
        base, adapter = split_adapter_params(self.params if params is None else params)
        lora = {}
        for module, layer in self._adapter_layers(name).items():
            lora_A = adapter.get(_adapter_path(module, name, "A"), layer.lora_A)
            lora_B = adapter.get(_adapter_path(module, name, "B"), layer.lora_B)
            lora[module] = (lora_A, lora_B, jnp.float32(layer.scaling), jnp.float32(layer.lora_dropout))
        return base, lora

    def adapted_params(self, params: Params | None = None) -> Params | None:
        """The base params with the active adapter folded in (a new tree; `params` is not changed).

        `params` may hold the adapter's leaves (`params_with_adapter()`, a train state's params): those are
        used, and the returned tree is the base layout. Without adapters `params` is returned as is.
        """
        state = self._adapter_state()
        if not state.configs:
            return params
        base, adapter = split_adapter_params(self.params if params is None else params)
        if state.merged or not state.enabled:
            return base
        name = state.active
        for module, layer in self._adapter_layers(name).items():
            lora_A = adapter.get(_adapter_path(module, name, "A"))
            lora_B = adapter.get(_adapter_path(module, name, "B"))
            base = _add_to_kernel(base, module, layer.delta_weight(lora_A, lora_B))
        return base

    def params_with_adapter(self) -> Params:
        """`model.params` plus the active adapter's leaves: what a train step trains (masked to the adapter)."""
        name = self.active_adapter
        self._check_name(name)
        flat = flatten_dict(self.params, sep="/")
        for module, layer in self._adapter_layers(name).items():
            flat[_adapter_path(module, name, "A")] = layer.lora_A
            flat[_adapter_path(module, name, "B")] = layer.lora_B
        return unflatten_dict(flat, sep="/")

    def set_adapter_params(self, params: Params) -> None:
        """Store the active adapter's leaves of `params` (e.g. a trained `state.params`) in the model."""
        name = self.active_adapter
        self._check_name(name)
        _, adapter = split_adapter_params(params)
        for module, layer in self._adapter_layers(name).items():
            for which in "AB":
                path = _adapter_path(module, name, which)
                if path not in adapter:
                    raise ValueError(f"set_adapter_params: params have no {path}")
                setattr(layer, f"lora_{which}", adapter[path])

    def _create_adapter(self, adapter_name: str, config: LoraConfig, targets: dict[str, LoraTarget]) -> None:
        layers = self.__dict__.setdefault("_lora_layers", {})
        rng = jax.random.fold_in(self.key, len(layers))
        layers[adapter_name] = {
            module: LoraLayer(target, config, jax.random.fold_in(rng, i))
            for i, (module, target) in enumerate(targets.items())
        }

    def _adapter_layers(self, adapter_name: str) -> dict[str, LoraLayer]:
        return self.__dict__["_lora_layers"][adapter_name]

    def _merge_layer(self, module: str, layer: LoraLayer, sign: float) -> None:
        self.params = _add_to_kernel(self.params, module, sign * layer.delta_weight())

    def _freeze_base(self) -> None:
        """Nothing to do: what trains is chosen by the optimizer mask of `create_train_state`."""

    def _adapters_changed(self) -> None:
        """Nothing to do: the folded params are an argument of the jitted programs, never a constant in them."""
