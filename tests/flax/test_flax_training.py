"""The optax train step: jitted, dropout on with a fresh key per step, and the loss goes down."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

from flax_testing import make_model, random_ids  # noqa: E402

from twinformers.flax.training import create_train_state, make_train_step  # noqa: E402


def test_causal_lm_loss_decreases_with_dropout_on():
    model = make_model("GPTNeoForCausalLM", resid_dropout=0.1, embed_dropout=0.1, attention_dropout=0.1)
    batch = {"input_ids": random_ids((4, 7), seed=5), "attention_mask": np.ones((4, 7), np.int32)}
    state = create_train_state(model, optax.adam(1e-2))
    train_step = make_train_step(model)
    rng = jax.random.PRNGKey(0)
    losses = []
    for _ in range(25):
        state, loss, next_rng = train_step(state, batch, rng)
        assert not np.array_equal(np.asarray(next_rng), np.asarray(rng)), "each step gets a fresh dropout key"
        rng = next_rng
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    assert int(state.step) == 25
    # The trained params still fit the model and give the lower loss in evaluation.
    out = model(**batch, params=state.params, labels=batch["input_ids"])
    assert float(out.loss) < losses[0]


def test_train_step_for_a_classification_head():
    model = make_model("GPT2ForSequenceClassification")
    batch = {"input_ids": random_ids((4, 7), seed=6), "labels": np.array([0, 1, 1, 0], np.int32)}
    state = create_train_state(model, optax.sgd(0.1))
    train_step = make_train_step(model)
    rng = jax.random.PRNGKey(1)
    first = None
    for _ in range(10):
        state, loss, rng = train_step(state, batch, rng)
        first = float(loss) if first is None else first
    assert float(loss) < first
