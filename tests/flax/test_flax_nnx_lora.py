"""Flax's own `nnx.LoRA` on `model.nnx_module` (the recipe of docs/quickstart-flax.md): one optax step trains
only the LoRA matrices, and the trained matrices moved into twinformers' PEFT-compatible adapter
(`lora_alpha = r`) give the wrapper the same logits as the NNX module."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import twinformers.flax as fx
from helpers import tiny_config
from twinformers import LoraConfig

IDS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]], dtype=np.int32)
RANK = 4
# family: (wrapper class, projection names under `block.attn`, whether the kernel is (out, in) (GPT-2's Conv1D))
CASES = {
    "gpt2": (fx.GPT2LMHeadModel, ["c_attn"], True),
    "gptj": (fx.GPTJForCausalLM, ["q_proj", "v_proj"], False),
}


def _wrap_with_nnx_lora(module: nnx.Module, names: list[str], out_in: bool) -> None:
    rngs = nnx.Rngs(params=0)
    for block in module.transformer.h:
        for name in names:
            layer = getattr(block.attn, name)
            shape = layer.kernel.shape
            in_features, out_features = shape[::-1] if out_in else shape
            setattr(block.attn, name, nnx.LoRA(in_features, RANK, out_features, base_module=layer, rngs=rngs))


@pytest.mark.parametrize("family", list(CASES))
def test_nnx_lora_trains_only_its_matrices_and_moves_into_a_twinformers_adapter(family, tmp_path):
    model_class, names, out_in = CASES[family]
    model = model_class(tiny_config(family), seed=3)
    module = model.nnx_module
    _wrap_with_nnx_lora(module, names, out_in)
    # lora_b starts at zero: the wrapped module is still the base model.
    np.testing.assert_allclose(np.asarray(module(jnp.asarray(IDS)).logits), np.asarray(model(IDS).logits),
                               atol=1e-6, rtol=0)

    optimizer = nnx.Optimizer(module, optax.sgd(0.5), wrt=nnx.LoRAParam)

    @nnx.jit
    def train_step(module, optimizer, input_ids):
        def loss_fn(module):
            return module(input_ids, labels=input_ids).loss
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(module)
        optimizer.update(module, grads)
        return loss

    before = float(module(jnp.asarray(IDS), labels=jnp.asarray(IDS)).loss)
    assert np.isclose(float(train_step(module, optimizer, jnp.asarray(IDS))), before, atol=1e-6)
    assert float(module(jnp.asarray(IDS), labels=jnp.asarray(IDS)).loss) < before
    for i, block in enumerate(module.transformer.h):
        for name in names:
            lora = getattr(block.attn, name)
            assert np.abs(np.asarray(lora.lora_b[...])).max() > 0, f"h.{i}.attn.{name}.lora_b did not train"
            np.testing.assert_array_equal(  # the base weights are not trained
                np.asarray(lora.base_module.kernel[...]),
                np.asarray(model.params["transformer"]["h"][str(i)]["attn"][name]["kernel"]))

    model.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=names))
    tree = model.params_with_adapter()
    for i, block in enumerate(module.transformer.h):
        for name in names:
            leaves = tree["transformer"]["h"][str(i)]["attn"][name]["lora_adapters"]["default"]
            lora = getattr(block.attn, name)
            leaves["lora_A"], leaves["lora_B"] = lora.lora_a[...], lora.lora_b[...]
    model.set_adapter_params(tree)
    want = np.asarray(module(jnp.asarray(IDS)).logits)
    np.testing.assert_allclose(np.asarray(model(IDS).logits), want, atol=1e-5, rtol=0)
    model.save_adapter(tmp_path / "adapter")
    loaded = model_class(tiny_config(family), seed=3)
    loaded.load_adapter(tmp_path / "adapter")
    np.testing.assert_allclose(np.asarray(loaded(IDS).logits), want, atol=1e-5, rtol=0)
