"""Shared pieces of the Flax tests: the class registry, seeded tiny models (built once per session) and inputs."""

from __future__ import annotations

import functools

import jax
import numpy as np

import twinformers.flax as fx
from helpers import BASE_CLASSES, CLASSES, FAMILIES, LM_CLASSES, tiny_config  # noqa: F401 (re-exported)

CLASS_IDS = [name for _, name, _ in CLASSES]
KIND = {name: kind for _, name, kind in CLASSES}
FAMILY = {name: family for family, name, _ in CLASSES}
BATCH, SEQ, CHOICES = 3, 7, 2
PAD = 0


def perturb(params: dict, seed: int = 0) -> dict:
    """Random values for every parameter (LayerNorm scales around 1): default init would hide mapping bugs.
    Only the shapes of `params` are used, so `params_shape_tree` will do."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    rng = np.random.default_rng(seed)
    new = []
    for path, leaf in leaves:
        noise = rng.normal(0.0, 0.1, size=leaf.shape).astype(np.float32)
        is_scale = getattr(path[-1], "key", None) == "scale"
        new.append(1.0 + noise if is_scale else 2 * noise)
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in new])


@functools.cache
def make_model(name: str, seed: int = 0, **overrides):
    """A tiny model of class `name` with perturbed params (cached: models are immutable in these tests). Built
    with `_do_init=False` and given params made from the shapes: no init program is compiled."""
    config = tiny_config(FAMILY[name], **{"pad_token_id": PAD, **overrides})
    model = getattr(fx, name)(config, _do_init=False)
    model.params = perturb(model.params_shape_tree, seed)
    return model


def random_ids(shape: tuple[int, ...], seed: int = 1, low: int = 1, high: int = 97) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=shape).astype(np.int32)


def model_inputs(kind: str, seq: int = SEQ, seed: int = 1) -> dict[str, np.ndarray]:
    """Token inputs for a head kind ((B, C, T) for double heads); ids avoid the PAD id 0."""
    if kind == "double_heads":
        return {"input_ids": random_ids((BATCH, CHOICES, seq), seed)}
    return {"input_ids": random_ids((BATCH, seq), seed)}


def main_output(kind: str) -> str:
    return {"base": "last_hidden_state", "qa": "start_logits"}.get(kind, "logits")


def logits_of(kind: str, output) -> np.ndarray:
    """The per-token output of a head: hidden states, LM logits, token logits, or stacked QA logits."""
    if kind == "qa":
        return np.stack((np.asarray(output.start_logits), np.asarray(output.end_logits)), -1)
    return np.asarray(output[main_output(kind)])
