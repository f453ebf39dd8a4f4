"""A freshly built model is a twin of a freshly built PyTorch one: every parameter, read back under its
canonical key, has the same kind of init — constant tensors (zero biases, unit LayerNorm weights) equal, random
ones with the same mean and standard deviation up to sampling error (GPT-2's residual projections included:
N(0, initializer_range / √(2·n_layer)))."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from equivalence_suite import SPECS

from helpers import tiny_config

# Wide enough that every random matrix has thousands of entries, so sampling error is small.
OVERRIDES = {
    "gpt2": dict(n_embd=64, n_layer=3, n_head=4, initializer_range=0.05),
    "gptj": dict(n_embd=64, n_layer=3, n_head=4, rotary_dim=8, initializer_range=0.05),
    "gpt_neo": dict(hidden_size=64, num_layers=3, num_heads=4,
                    attention_types=[[["global", "local"], 1], [["global"], 1]], initializer_range=0.05),
}
HEAD_SPECS = [spec for spec in SPECS if not spec.variant]


def _pt_params(spec, config) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    module = importlib.import_module(f"twinformers.pt.{spec.family}")
    torch.manual_seed(0)
    model = getattr(module, spec.class_name)(config)
    return {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}


def _flax_params(spec, config) -> dict[str, np.ndarray]:
    pytest.importorskip("flax")
    from twinformers.flax.modeling_utils import flatten_params

    module = importlib.import_module(f"twinformers.flax.{spec.family}")
    model = getattr(module, spec.class_name)(config, seed=0)
    flat = flatten_params(model.params)
    return {key: transform.to_canonical(np.asarray(flat[path]))
            for path, (key, transform) in model._canonical_plan().items()}


@pytest.mark.parametrize("spec", HEAD_SPECS, ids=lambda spec: spec.id)
def test_fresh_flax_params_have_pytorch_statistics(spec):
    config = tiny_config(spec.family, **OVERRIDES[spec.family], pad_token_id=0,
                         **({"num_labels": 3} if spec.head in ("seq_cls", "token_cls") else {}))
    pt = _pt_params(spec, config)
    flax = _flax_params(spec, config)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    assert set(flax) == set(pt) - tied, f"{spec.id}: keys differ {sorted(set(flax) ^ (set(pt) - tied))}"
    problems = []
    for key, pt_value in pt.items():
        if key in tied:
            continue
        flax_value = flax[key]
        pt_std, flax_std = float(pt_value.std()), float(flax_value.std())
        if pt_std == 0.0:  # a constant tensor: the same constant
            if not np.array_equal(flax_value, pt_value):
                problems.append(f"{key}: PyTorch constant {pt_value.flat[0]}, Flax mean {flax_value.mean():.4g}")
            continue
        # The sample std of n normal draws has relative error ~1/√(2n); the sample mean, std/√n.
        n = pt_value.size
        if abs(flax_std - pt_std) > 6 * pt_std / math.sqrt(2 * n):
            problems.append(f"{key}: std PyTorch {pt_std:.4g} vs Flax {flax_std:.4g} (n={n})")
        if abs(float(flax_value.mean()) - float(pt_value.mean())) > 6 * pt_std / math.sqrt(n):
            problems.append(f"{key}: mean PyTorch {pt_value.mean():.4g} vs Flax {flax_value.mean():.4g} (n={n})")
    assert not problems, f"{spec.id}:\n" + "\n".join(problems)
