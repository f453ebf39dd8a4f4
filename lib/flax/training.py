"""Training with optax: a jitted train step for any head, with dropout on and a fresh dropout key per step.

Example (causal LM; `labels` default to `input_ids`, shifted inside the model)::

    model = GPT2LMHeadModel(config)
    state = create_train_state(model, optax.adamw(3e-4))
    train_step = make_train_step(model)
    rng = jax.random.PRNGKey(0)
    for batch in batches:  # {"input_ids": (B, T), "attention_mask": (B, T), optional "labels"}
        state, loss, rng = train_step(state, batch, rng)

With a LoRA adapter (`model.add_adapter(LoraConfig(...))` before `create_train_state`), the state's params are
the base params plus the adapter's leaves and the optimizer is masked to the adapter: the base params get no
updates and no optimizer state. `model.set_adapter_params(state.params)` stores the trained adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax.training.train_state import TrainState

from ..adapters.mixin import is_adapter_name
from .lora import split_adapter_params
from .modeling_utils import PreTrainedModel, flatten_params, unflatten_params

__all__ = ["TrainState", "create_train_state", "adapter_mask", "make_train_step"]

Batch = dict[str, Any]


def create_train_state(
    model: PreTrainedModel, optimizer: optax.GradientTransformation, params: Any = None
) -> TrainState:
    """A `flax.training.train_state.TrainState` over `params` and `optimizer`.

    `params` default to `model.params`, or with an active LoRA adapter to `model.params_with_adapter()`; when
    they hold adapter leaves the optimizer only sees those (`adapter_mask`).
    """
    if params is None:
        params = model.params if model.active_adapter is None else model.params_with_adapter()
    base, adapter = split_adapter_params(params)
    model.check_params(base)
    if adapter:
        labels = jax.tree_util.tree_map(lambda trains: "adapter" if trains else "frozen", adapter_mask(params))
        optimizer = optax.multi_transform({"adapter": optimizer, "frozen": optax.set_to_zero()}, labels)
    return TrainState.create(apply_fn=model.__call__, params=params, tx=optimizer)


def adapter_mask(params: Any) -> Any:
    """A tree like `params` of bools: True on LoRA adapter leaves (the ones that train)."""
    return unflatten_params({path: is_adapter_name(path) for path in flatten_params(params)})


TrainStep = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, jax.Array, jax.Array]]


def make_train_step(model: PreTrainedModel) -> TrainStep:
    """A jitted `train_step(state, batch, dropout_rng) -> (state, loss, next_dropout_rng)`; each batch's ids and
    shapes are checked on the host first (InputError).

    `batch` holds the model's inputs by name (`input_ids`, `attention_mask`, `labels`, `mc_labels`, ...);
    for language-modeling heads without `labels`, the labels are the `input_ids`. The loss is the model's
    own (`outputs.loss`, plus `mc_loss` for GPT2DoubleHeadsModel), computed with dropout on.
    """

    def loss_fn(params: Any, batch: Batch, dropout_rng: jax.Array) -> jax.Array:
        if model.can_generate() and "labels" not in batch:
            batch = {**batch, "labels": batch["input_ids"]}
        outputs = model(**batch, params=params, dropout_rng=dropout_rng, train=True)
        loss = outputs.loss if outputs.loss is not None else 0.0
        return loss + outputs.mc_loss if getattr(outputs, "mc_loss", None) is not None else loss

    @jax.jit
    def compiled_step(state: TrainState, batch: Batch, dropout_rng: jax.Array) -> tuple[TrainState, Any, jax.Array]:
        dropout_rng, step_rng = jax.random.split(dropout_rng)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_rng)
        return state.apply_gradients(grads=grads), loss, dropout_rng

    def train_step(state: TrainState, batch: Batch, dropout_rng: jax.Array) -> tuple[TrainState, jax.Array, jax.Array]:
        # Ids and shapes are checked on the host before dispatch: inside jit an out-of-range id would be clamped.
        model._check_values(batch)
        return compiled_step(state, batch, dropout_rng)

    return train_step
