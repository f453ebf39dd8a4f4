"""The NNX side of the Flax twin: the module behind the wrapper (`model.nnx_module`), its state tree, training it
the NNX way, and the linen compatibility adapter (`model.module`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import twinformers.flax as fx
from helpers import tiny_config

IDS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]], dtype=np.int32)


def _lm(family: str = "gpt2", **overrides):
    classes = {"gpt2": fx.GPT2LMHeadModel, "gptj": fx.GPTJForCausalLM, "gpt_neo": fx.GPTNeoForCausalLM}
    return classes[family](tiny_config(family, **overrides), seed=3)


@pytest.mark.parametrize("family", ["gpt2", "gptj", "gpt_neo"])
def test_nnx_module_state_is_the_params_dict_and_gives_the_same_logits(family):
    model = _lm(family)
    module = model.nnx_module
    assert isinstance(module, nnx.Module)
    state = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(model.params)
    for got, want in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(model.params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_allclose(np.asarray(module(jnp.asarray(IDS)).logits), np.asarray(model(IDS).logits),
                               atol=1e-6, rtol=0)


def test_one_training_step_the_wrapper_way_and_the_nnx_way_give_the_same_params():
    model = _lm()
    # SGD, not Adam: Adam's first step is ~lr·sign(g), which turns float rounding in near-zero gradients
    # (the two ways compile differently) into full-size differences.
    tx = optax.sgd(0.5, momentum=0.9)
    labels = jnp.asarray(IDS)

    # Hugging Face's Flax way: optax over the params dict, the wrapper's jitted call.
    def loss_fn(params):
        return model(IDS, params=params, labels=labels).loss

    grads = jax.grad(loss_fn)(model.params)
    updates, _ = tx.update(grads, tx.init(model.params), model.params)
    wrapper_params = optax.apply_updates(model.params, updates)

    # The NNX way: nnx.Optimizer over the module's nnx.Param state.
    module = model.nnx_module
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)
    nnx_grads = nnx.grad(lambda m: m(jnp.asarray(IDS), labels=labels).loss)(module)
    optimizer.update(module, nnx_grads)
    nnx_params = nnx.to_pure_dict(nnx.state(module, nnx.Param))

    moved = 0
    for got, want, before in zip(jax.tree_util.tree_leaves(nnx_params), jax.tree_util.tree_leaves(wrapper_params),
                                 jax.tree_util.tree_leaves(model.params), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, rtol=0)
        moved += not np.allclose(np.asarray(got), np.asarray(before))
    assert moved > 0  # the step changed the params
    # Written back, the wrapper runs with the NNX-trained params.
    model.params = nnx_params
    np.testing.assert_allclose(np.asarray(model(IDS).logits),
                               np.asarray(model(IDS, params=wrapper_params).logits), atol=1e-5, rtol=0)


def test_dropout_in_the_nnx_module_follows_view_and_reseed():
    model = _lm(resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)
    module = model.nnx_module
    ids = jnp.asarray(IDS)
    eval_logits = module(ids).logits
    np.testing.assert_allclose(np.asarray(eval_logits), np.asarray(model(IDS).logits), atol=1e-6, rtol=0)
    train = nnx.view(module, deterministic=False)
    nnx.reseed(train, dropout=1)
    first = train(ids).logits
    nnx.reseed(train, dropout=1)
    again = train(ids).logits
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.allclose(np.asarray(first), np.asarray(eval_logits))
    # The wrapper's train=True with the same dropout key gives the same masks as the reseeded module.
    wrapped = model(IDS, train=True, dropout_rng=jax.random.PRNGKey(7)).logits
    nnx.reseed(train, dropout=jax.random.PRNGKey(7))
    np.testing.assert_allclose(np.asarray(train(ids).logits), np.asarray(wrapped), atol=1e-6, rtol=0)


def test_linen_compat_adapter_applies_and_inits_with_a_deprecation_warning():
    model = _lm()
    with pytest.warns(DeprecationWarning, match="model.nnx_module"):
        out = model.module.apply({"params": model.params}, jnp.asarray(IDS))
    np.testing.assert_allclose(np.asarray(out.logits), np.asarray(model(IDS).logits), atol=1e-6, rtol=0)
    with pytest.warns(DeprecationWarning):
        hidden = model.module.apply({"params": model.params}, jnp.asarray(IDS),
                                    method=lambda module, ids: module.transformer(ids).last_hidden_state)
    assert hidden.shape == (*IDS.shape, model.config.n_embd)
    with pytest.warns(DeprecationWarning):
        variables = model.module.init(jax.random.PRNGKey(0), jnp.asarray(IDS))
    assert jax.tree_util.tree_structure(variables["params"]) == jax.tree_util.tree_structure(model.params)


@pytest.mark.parametrize("family", ["gpt2", "gptj", "gpt_neo"])
def test_the_dropout_streams_state_is_the_one_a_full_build_gives(family):
    # The wrapper computes the dropout streams' keys from a pruned trace of the module's build (no parameter
    # initializer compiled); they must be exactly the keys and counts of the module a full build makes.
    from twinformers.flax.modeling_utils import _graph_and_rng_state

    model = _lm(family, attn_pdrop=0.1, resid_pdrop=0.1, embd_pdrop=0.1)

    def build(rng):
        params_rng, dropout_rng = jax.random.split(rng)
        return type(model).module_class(model.config, dtype=jnp.float32,
                                        rngs=nnx.Rngs(params=params_rng, dropout=dropout_rng))

    graphdef, rng_state = _graph_and_rng_state(build)
    full = nnx.to_pure_dict(jax.jit(lambda: nnx.split(build(jax.random.PRNGKey(0)), nnx.Param, ...)[2])())
    assert graphdef == nnx.split(nnx.eval_shape(build, jax.random.PRNGKey(0)), nnx.Param, ...)[0]
    assert jax.tree_util.tree_structure(rng_state) == jax.tree_util.tree_structure(full)
    leaves = jax.tree_util.tree_leaves(full)
    assert any(jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) for leaf in leaves)  # the streams' keys are here
    for got, want in zip(jax.tree_util.tree_leaves(rng_state), leaves, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        if jnp.issubdtype(want.dtype, jax.dtypes.prng_key):
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
