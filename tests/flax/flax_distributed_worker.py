"""Run by tests/flax/test_flax_distributed.py in a subprocess whose XLA_FLAGS give 8 host devices (the flag must be
set before JAX starts, and must not leak into other tests).

For each family it runs the tiny causal LM unsharded (the reference: the model's own loss and a plain SGD
update) and sharded on ("data", "model") meshes with `twinformers.flax.partitioning`, and writes both to
`<out>/results.npz`, plus facts about the placement to `<out>/facts.json`. The test compares them.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for helpers
import twinformers.flax as fx  # noqa: E402
from helpers import tiny_config  # noqa: E402
from twinformers.flax.partitioning import (  # noqa: E402
    make_mesh,
    make_train_step,
    match_partition_rules,
    pad_vocab,
    partition_rules,
    shard_params,
    unpad_vocab,
)

LM_CLASSES = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}
# (data, model) meshes per family; the train step runs on the first. One family also runs on a model-only
# mesh (a different padding); the others skip it to keep the test short (compiling for 8 devices is slow).
MESHES = {"gpt2": ((2, 4), (1, 8)), "gptj": ((2, 4),), "gpt_neo": ((2, 4),)}
BATCH, SEQ, LEARNING_RATE = 4, 7, 0.5


def perturbed(params, seed: int):
    """Random values everywhere (LayerNorm scales around 1): the default init's zeros and ones hide bugs."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    rng = np.random.default_rng(seed)
    values = []
    for path, leaf in leaves:
        noise = rng.normal(size=leaf.shape).astype(np.float32) * 0.2
        values.append(jnp.asarray(1.0 + noise / 2 if "scale" in jax.tree_util.keystr(path) else noise))
    return jax.tree_util.tree_unflatten(treedef, values)


def main(out_dir: str) -> None:
    assert jax.device_count() == 8, f"expected 8 host devices, got {jax.device_count()}"
    results, facts = {}, {}
    rng = np.random.default_rng(0)
    input_ids = rng.integers(1, 97, size=(BATCH, SEQ)).astype(np.int32)
    attention_mask = np.ones((BATCH, SEQ), np.int32)
    attention_mask[1, -2:] = 0  # a right-padded row
    labels = np.where(attention_mask > 0, input_ids, -100)
    for family, class_name in LM_CLASSES.items():
        model = getattr(fx, class_name)(tiny_config(family))
        params = perturbed(model.params, seed=1)
        vocab_size = model.config.vocab_size
        reference = model(input_ids, attention_mask=attention_mask, params=params)
        results[f"{family}/forward/expected"] = np.asarray(reference.logits)

        # Reference step: the model's own loss, plain SGD, no partitioning code involved.
        def loss_fn(p, model=model):
            return model(input_ids, attention_mask=attention_mask, params=p, labels=labels).loss

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updated = jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads)
        results[f"{family}/step/expected_loss"] = np.asarray(loss)
        for path, leaf in jax.tree_util.tree_flatten_with_path(updated)[0]:
            results[f"{family}/step/expected{jax.tree_util.keystr(path)}"] = np.asarray(leaf)

        for data, model_axis in MESHES[family]:
            mesh = make_mesh(data, model_axis)
            name = f"{family}/{data}x{model_axis}"
            padded_model, padded = pad_vocab(model, params, model_axis)
            specs = match_partition_rules(partition_rules(model.config), padded)
            try:
                shard_params(params, mesh, specs)  # unpadded vocabulary: 97 rows do not split
            except ValueError as error:
                facts[f"{name}/unpadded_error"] = str(error)
            sharded = shard_params(padded, mesh, specs)
            wte = sharded["transformer"]["wte"]["embedding"]
            facts[f"{name}/padded_vocab"] = padded_model.config.vocab_size
            facts[f"{name}/wte_shard_shape"] = list(wte.sharding.shard_shape(wte.shape))
            facts[f"{name}/wte_spec"] = [str(a) for a in wte.sharding.spec]
            facts[f"{name}/devices_used"] = len(wte.sharding.device_set)
            batch = jax.device_put(input_ids, NamedSharding(mesh, P("data", None)))
            mask = jax.device_put(attention_mask, NamedSharding(mesh, P("data", None)))
            logits = padded_model(batch, attention_mask=mask, params=sharded).logits
            results[f"{name}/forward/actual"] = np.asarray(logits[..., :vocab_size])
            results[f"{name}/forward/padded_logits"] = np.asarray(logits[..., vocab_size:])
            if (data, model_axis) != MESHES[family][0]:
                continue
            train_step, opt_state = make_train_step(padded_model, optax.sgd(LEARNING_RATE), mesh, sharded, specs,
                                                    vocab_size=vocab_size)
            new_params, opt_state, loss = train_step(sharded, opt_state, input_ids, None, attention_mask)
            kernel = new_params["transformer"]["h"]["0"]["mlp"]
            kernel = kernel["c_fc"]["kernel"] if "c_fc" in kernel else kernel["fc_in"]["kernel"]
            facts[f"{family}/step/mlp_in_shard_shape"] = list(kernel.sharding.shard_shape(kernel.shape))
            facts[f"{family}/step/mlp_in_shape"] = list(kernel.shape)
            padded_rows = np.asarray(new_params["transformer"]["wte"]["embedding"])[vocab_size:]
            facts[f"{family}/step/padded_rows_max"] = float(np.abs(padded_rows).max())
            results[f"{family}/step/actual_loss"] = np.asarray(loss)
            for path, leaf in jax.tree_util.tree_flatten_with_path(unpad_vocab(new_params, vocab_size))[0]:
                results[f"{family}/step/actual{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    np.savez(os.path.join(out_dir, "results.npz"), **results)
    with open(os.path.join(out_dir, "facts.json"), "w") as f:
        json.dump(facts, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
