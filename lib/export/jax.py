"""`--format jax`: serialized `jax.export` programs of a Flax twin, run with only JAX installed.

Files written to OUT:
    forward.jaxexport      `exp.call(input_ids, attention_mask)` → logits (B, T, V); batch and length symbolic.
    decode_step.jaxexport  (causal LM) `exp.call(input_ids, attention_mask, position_ids, cache, cache_index)` →
                           (logits (B, V) of the last new token, cache, cache_index): one program for the prompt
                           (T tokens) and for every next token (T = 1). `cache` is (L, 2, B, H, M, D) float32
                           zeros at the start, `attention_mask` (B, M) covers the whole cache (1 = a real token,
                           0 = padding or not yet written), `position_ids` (B, T) = cumsum(mask) - 1 at the new slots.
    config.json            the model config, plus `export` (the cache shape per batch row, the file list).
With `params_as_argument=True` (models too large to embed, or to swap weights) the programs take the
params first instead — a flat dict {"transformer/wte/embedding": array, ...} — stored in params.npz.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from . import check_embeddable, head_kind, staged_output

__all__ = ["export", "MAX_EMBEDDED_BYTES"]

# A serialized jax.export program is one protobuf message, and protobuf refuses messages over 2 GiB.
MAX_EMBEDDED_BYTES = 2**31 - 2**26
_SUPPORTED = ("causal_lm", "sequence_classification", "token_classification")


def export(model: Any, out: str | os.PathLike, force: bool = False, params_as_argument: bool = False,
           max_embedded_bytes: int = MAX_EMBEDDED_BYTES) -> None:
    """Write the `jax.export` artifacts of a Flax twin to the directory `out` (see the module docstring).

    Args:
        model: a Flax causal LM, sequence or token classification twin with params.
        out: output directory; staged next to it, then renamed.
        force: replace an existing `out`.
        params_as_argument: programs take the params as their first argument (params.npz) instead of
            embedding them.
        max_embedded_bytes: above this size of the params, embedding is refused.
    """
    from ..flax.modeling_utils import flatten_params, unflatten_params

    kind = head_kind(model, _SUPPORTED, "jax")
    params = model.params
    flat = {path: np.asarray(leaf) for path, leaf in flatten_params(params).items()}
    if not params_as_argument:
        check_embeddable(sum(a.nbytes for a in flat.values()), max_embedded_bytes, "jax.export",
                         "export with --params-as-argument (params_as_argument=True)")
    config = model.config
    # Lengths are symbolic up to the position table, which the model's own length checks compare them with.
    positions = config.max_position_embeddings
    b, t = jax_export.symbolic_shape("b, t", constraints=(f"t <= {positions}",))
    ids = jax.ShapeDtypeStruct((b, t), jnp.int32)

    def call(flat_params: dict[str, Any], input_ids: Any, attention_mask: Any, **kwargs: Any) -> Any:
        return model(input_ids, attention_mask=attention_mask, params=unflatten_params(flat_params), **kwargs)

    def forward(flat_params: dict[str, Any], input_ids: Any, attention_mask: Any) -> Any:
        return call(flat_params, input_ids, attention_mask).logits

    programs = {"forward": (forward, (ids, ids))}
    cache_shape = None
    if kind == "causal_lm":
        from ..flax.ops import StaticCache

        heads = config.num_attention_heads
        cache_shape = (config.num_hidden_layers, 2, heads, config.hidden_size // heads)

        def decode_step(flat_params: dict[str, Any], input_ids: Any, attention_mask: Any, position_ids: Any,
                        cache: Any, cache_index: Any) -> tuple[Any, Any, Any]:
            # (L, 2, B, H, M, D) ↔ the twin's StaticCache: a plain array keeps the program free of
            # twinformers' pytree classes, so it deserializes with JAX alone.
            static = StaticCache(key_values=tuple((layer[0], layer[1]) for layer in cache), index=cache_index)
            outputs = call(flat_params, input_ids, attention_mask, position_ids=position_ids,
                           past_key_values=static)
            present = outputs.past_key_values
            cache = jnp.stack([jnp.stack(layer) for layer in present.key_values])
            return outputs.logits[:, -1].astype(jnp.float32), cache, present.index

        layers, _, heads, head_dim = cache_shape
        b, t, m = jax_export.symbolic_shape("b, t, m", constraints=("t <= m", f"m <= {positions}"))
        ids = jax.ShapeDtypeStruct((b, t), jnp.int32)
        cache = jax.ShapeDtypeStruct((layers, 2, b, heads, m, head_dim), model.dtype)
        mask = jax.ShapeDtypeStruct((b, m), jnp.int32)
        index = jax.ShapeDtypeStruct((), jnp.int32)
        programs["decode_step"] = (decode_step, (ids, mask, ids, cache, index))

    from ..flax import ops

    with ops.host_checked_ids():  # the in-graph id check is a host callback, which cannot be serialized
        _write(out, force, programs, flat, params_as_argument, config, kind, cache_shape, type(model).__name__)


def _write(out: Any, force: bool, programs: dict, flat: dict, params_as_argument: bool, config: Any, kind: str,
           cache_shape: tuple | None, class_name: str) -> None:
    with staged_output(out, force) as stage:
        suffix = "_params" if params_as_argument else ""
        for name, (fn, specs) in programs.items():
            if params_as_argument:
                param_specs = {path: jax.ShapeDtypeStruct(a.shape, a.dtype) for path, a in flat.items()}
                exported = jax_export.export(jax.jit(fn))(param_specs, *specs)
            else:
                exported = jax_export.export(jax.jit(lambda *args, fn=fn: fn(flat, *args)))(*specs)
            with open(os.path.join(stage, f"{name}{suffix}.jaxexport"), "wb") as f:
                f.write(exported.serialize())
        if params_as_argument:
            np.savez(os.path.join(stage, "params.npz"), **flat)
        info = config.to_dict()
        info["export"] = {
            "format": "jax", "head": kind, "class": class_name,
            "files": sorted(os.listdir(stage)), "cache_shape": list(cache_shape) if cache_shape else None,
            "cache_layout": "(layers, 2 [key, value], batch, heads, max_length, head_dim)",
        }
        with open(os.path.join(stage, "config.json"), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
