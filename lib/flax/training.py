"""Training with optax: a jitted train step for any head, with dropout on and a fresh dropout key per step.

Example (causal LM; `labels` default to `input_ids`, shifted inside the model)::

    model = GPT2LMHeadModel(config)
    state = create_train_state(model, optax.adamw(3e-4))
    train_step = make_train_step(model)
    rng = jax.random.PRNGKey(0)
    for batch in batches:  # {"input_ids": (B, T), "attention_mask": (B, T), optional "labels"}
        state, loss, rng = train_step(state, batch, rng)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax.training.train_state import TrainState

from .modeling_utils import PreTrainedModel

__all__ = ["TrainState", "create_train_state", "make_train_step"]

Batch = dict[str, Any]


def create_train_state(
    model: PreTrainedModel, optimizer: optax.GradientTransformation, params: Any = None
) -> TrainState:
    """A `flax.training.train_state.TrainState` over `params` (default `model.params`) and `optimizer`."""
    params = model.params if params is None else params
    model.check_params(params)
    return TrainState.create(apply_fn=model.__call__, params=params, tx=optimizer)


TrainStep = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, jax.Array, jax.Array]]


def make_train_step(model: PreTrainedModel) -> TrainStep:
    """A jitted `train_step(state, batch, dropout_rng) -> (state, loss, next_dropout_rng)`.

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
    def train_step(state: TrainState, batch: Batch, dropout_rng: jax.Array) -> tuple[TrainState, jax.Array, jax.Array]:
        dropout_rng, step_rng = jax.random.split(dropout_rng)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_rng)
        return state.apply_gradients(grads=grads), loss, dropout_rng

    return train_step
