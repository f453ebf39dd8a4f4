"""The Flax model wrapper base class: parameters, the jitted call, the static cache, checkpoints.

Each user-facing class (`GPT2LMHeadModel`, ...) wraps one `flax.linen` module (`GPT2LMHeadModelModule`) with
Hugging Face's Flax API: `Model(config, input_shape=(1, 1), seed=0, dtype=jnp.float32, _do_init=True)`,
`model.params` (a plain nested dict, exactly the tree of `flax_model.msgpack`), `model(input_ids, ...,
params=None, dropout_rng=None, train=False)`, `init_cache`, `to_fp16/to_bf16/to_fp32`, `from_pretrained`
and `save_pretrained`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..configuration import PretrainedConfig
from . import ops

__all__ = ["PreTrainedModel", "StaticCache", "flatten_params", "unflatten_params"]

Array = jax.Array
Params = dict[str, Any]

# Module arguments that change the traced program (Python values, not arrays).
_STATIC_ARGS = ("deterministic", "use_cache", "output_attentions", "output_hidden_states", "return_dict")


@flax.struct.dataclass
class StaticCache:
    """A pre-allocated key/value cache (from `init_cache`): fixed-size buffers and a fill index, so every
    decoding step has the same shapes and reuses one compiled program.

    It reads like the tuple form of `past_key_values` (`len(cache)` layers, `cache[i]` = (key, value)).

    Attributes:
        key_values: per layer a (key, value) pair, each (B, H, M, D) with M the cache's max_length.
        index: () int32, how many positions are filled (the next token's position).
    """

    key_values: tuple[tuple[Array, Array], ...]
    index: Array

    def __len__(self) -> int:
        return len(self.key_values)

    def __getitem__(self, layer: int) -> tuple[Array, Array]:
        return self.key_values[layer]

    def __iter__(self) -> Iterator[tuple[Array, Array]]:
        return iter(self.key_values)

    @property
    def max_length(self) -> int:
        return self.key_values[0][0].shape[-2]


def update_cache(layer_past: tuple[Array, Array] | None, key: Array, value: Array, cache_index: Array | None):
    """Append this step's (B, H, T, D) key and value to a layer's cache.

    The tuple form concatenates along S; a static cache (`cache_index` given) writes them into its
    buffers at `cache_index`, keeping the buffers' shape.
    """
    if layer_past is None:
        return key, value
    past_key, past_value = layer_past
    if cache_index is None:
        return jnp.concatenate((past_key, key), axis=-2), jnp.concatenate((past_value, value), axis=-2)
    key = jax.lax.dynamic_update_slice_in_dim(past_key, key.astype(past_key.dtype), cache_index, axis=-2)
    value = jax.lax.dynamic_update_slice_in_dim(past_value, value.astype(past_value.dtype), cache_index, axis=-2)
    return key, value


def causal_rows(bias: np.ndarray, query_len: int, key_len: int, cache_index: Array | None) -> Array:
    """The rows of a (1, 1, P, P) causal table for the T queries against the first S keys: (1, 1, T, S).

    The queries are the last T of the S keys, or sit at `cache_index` in a static cache."""
    query_start = key_len - query_len if cache_index is None else cache_index
    return jax.lax.dynamic_slice_in_dim(jnp.asarray(bias[:, :, :, :key_len]), query_start, query_len, axis=2)


def cache_key_length(past_key_values: Any, past: int | Array, seq_len: int) -> int:
    """S, the key length attention sees: past + T, or a static cache's max_length."""
    if isinstance(past_key_values, StaticCache):
        return past_key_values.max_length
    return past + seq_len


def static_padding(attention_mask: Array | None, past_key_values: Any) -> Array | None:
    """A static cache's attention mask may cover only the positions written so far: extend it with ones to
    the cache's max_length (the causal table masks the positions not yet written)."""
    if attention_mask is None or not isinstance(past_key_values, StaticCache):
        return attention_mask
    attention_mask = jnp.asarray(attention_mask)
    missing = past_key_values.max_length - attention_mask.shape[-1]
    if missing < 0:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions, more than the cache's max_length "
            f"{past_key_values.max_length}"
        )
    return jnp.pad(attention_mask, [(0, 0)] * (attention_mask.ndim - 1) + [(0, missing)], constant_values=1)


def pack_presents(presents: tuple | None, past_key_values: Any, seq_len: int) -> Any:
    """The `past_key_values` to return: the layers' presents, as a `StaticCache` advanced by T when one came in."""
    if presents is None or not isinstance(past_key_values, StaticCache):
        return presents
    return StaticCache(key_values=presents, index=past_key_values.index + seq_len)


# --------------------------------------------------------------------------------------------- param trees
def flatten_params(params: Params, sep: str = "/") -> dict[str, Any]:
    """{"transformer": {"wte": {"embedding": x}}} → {"transformer/wte/embedding": x}."""
    flat: dict[str, Any] = {}

    def walk(tree: Any, prefix: str) -> None:
        if isinstance(tree, dict) or hasattr(tree, "items") and not hasattr(tree, "shape"):
            for name, child in tree.items():
                walk(child, f"{prefix}{sep}{name}" if prefix else str(name))
        else:
            flat[prefix] = tree

    walk(params, "")
    return flat


def unflatten_params(flat: dict[str, Any], sep: str = "/") -> Params:
    """Inverse of `flatten_params`."""
    tree: Params = {}
    for path, leaf in flat.items():
        node = tree
        *parents, name = path.split(sep)
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = leaf
    return tree


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


# --------------------------------------------------------------------------------------------- the wrapper
class PreTrainedModel:
    """Base of every Flax model wrapper.

    Args:
        config: the family's config. input_shape: shape of the dummy `input_ids` used to create the params.
        seed: PRNG seed of the random init. dtype: computation dtype (the params keep theirs; see `to_bf16`).
        _do_init: False skips the random init: the params are only described (`params_shape_tree`, via
            `jax.eval_shape`) and must be passed to every call, as `from_pretrained(..., _do_init=False)` does.
    """

    config_class: type[PretrainedConfig] = PretrainedConfig
    module_class: type[nn.Module]
    base_model_prefix = "transformer"
    main_input_name = "input_ids"

    def __init__(
        self,
        config: PretrainedConfig,
        input_shape: tuple[int, ...] = (1, 1),
        seed: int = 0,
        dtype: Any = jnp.float32,
        _do_init: bool = True,
    ) -> None:
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.dtype = dtype
        self.input_shape = tuple(input_shape)
        self.key = jax.random.PRNGKey(seed)
        self.module = self.module_class(config=config, dtype=dtype)
        self._module_args = frozenset(inspect.signature(self.module_class.__call__).parameters) - {"self"}
        self._jitted_apply = jax.jit(self._apply, static_argnames=_STATIC_ARGS)
        self._init = jax.jit(self.init_weights, static_argnums=1)
        # Abstract shapes only: no random numbers are drawn for this.
        self._params_shape_tree = jax.eval_shape(self._init, self.key, self.input_shape)
        self._params: Params | None = self._init(self.key, self.input_shape) if _do_init else None
        self._is_initialized = _do_init

    # ----------------------------------------------------------------------------------------- params
    def dummy_inputs(self, input_shape: tuple[int, ...]) -> dict[str, Array]:
        """Inputs that reach every parameter when the module is initialized."""
        input_ids = jnp.zeros(input_shape, dtype=jnp.int32)
        return {"input_ids": input_ids, "attention_mask": jnp.ones_like(input_ids)}

    def init_weights(self, rng: Array, input_shape: tuple[int, ...]) -> Params:
        """Random params for `input_shape` dummy inputs (the config's `initializer_range`)."""
        params_rng, dropout_rng = jax.random.split(rng)
        variables = self.module.init(
            {"params": params_rng, "dropout": dropout_rng}, **self.dummy_inputs(input_shape), deterministic=True
        )
        return nn.meta.unbox(variables["params"])

    @property
    def params(self) -> Params:
        if not self._is_initialized:
            raise ValueError(
                "this model was built with _do_init=False, so it holds no params: pass `params=` to each call, "
                "or set `model.params = params`"
            )
        return self._params

    @params.setter
    def params(self, params: Params) -> None:
        self.check_params(params)
        self._params = params
        self._is_initialized = True

    @property
    def params_shape_tree(self) -> Params:
        """The params' shapes and dtypes as `jax.ShapeDtypeStruct` leaves (no memory)."""
        return self._params_shape_tree

    def check_params(self, params: Params) -> None:
        """ValueError naming every path that is missing, unexpected or of the wrong shape for this config."""
        expected = flatten_params(self._params_shape_tree)
        given = flatten_params(params)
        problems = [f"  missing {path} {tuple(leaf.shape)}" for path, leaf in expected.items() if path not in given]
        problems += [f"  unexpected {path}" for path in given if path not in expected]
        problems += [
            f"  {path}: shape {tuple(np.shape(given[path]))} vs expected {tuple(leaf.shape)}"
            for path, leaf in expected.items()
            if path in given and tuple(np.shape(given[path])) != tuple(leaf.shape)
        ]
        if problems:
            raise ValueError(
                f"params do not match {type(self).__name__} for this config ({len(problems)} problem(s)):\n"
                + "\n".join(problems)
            )

    def _cast_floating(self, params: Params, dtype: Any, mask: Any = None) -> Params:
        def cast(x: Any, keep: bool = True) -> Any:
            return jnp.asarray(x, dtype) if keep and _is_float(x) else x

        if mask is None:
            return jax.tree_util.tree_map(cast, params)
        return jax.tree_util.tree_map(cast, params, mask)

    def to_bf16(self, params: Params, mask: Any = None) -> Params:
        """Floating params cast to bfloat16 (a new tree; `mask`, a tree of bools, limits which leaves)."""
        return self._cast_floating(params, jnp.bfloat16, mask)

    def to_fp16(self, params: Params, mask: Any = None) -> Params:
        """Floating params cast to float16 (a new tree; `mask`, a tree of bools, limits which leaves)."""
        return self._cast_floating(params, jnp.float16, mask)

    def to_fp32(self, params: Params, mask: Any = None) -> Params:
        """Floating params cast to float32 (a new tree; `mask`, a tree of bools, limits which leaves)."""
        return self._cast_floating(params, jnp.float32, mask)

    # ----------------------------------------------------------------------------------------- cache
    def init_cache(self, batch_size: int, max_length: int) -> StaticCache:
        """A zeroed `StaticCache` for `batch_size` rows and up to `max_length` positions: pass it as
        `past_key_values`, then the `past_key_values` each call returns, so every step keeps its shapes.

        Args:
            batch_size: rows (for GPT2DoubleHeadsModel, batch × choices).
            max_length: positions the cache holds, at most the model's position table.
        """
        config = self.config
        if not 0 < max_length <= config.max_position_embeddings:
            raise ValueError(
                f"max_length={max_length} must be in [1, {config.max_position_embeddings}] "
                "(n_positions / max_position_embeddings)"
            )
        num_heads = config.num_attention_heads
        shape = (batch_size, num_heads, max_length, config.hidden_size // num_heads)
        key_values = tuple(
            (jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)) for _ in range(config.num_hidden_layers)
        )
        return StaticCache(key_values=key_values, index=jnp.zeros((), jnp.int32))

    # ----------------------------------------------------------------------------------------- calling
    def __call__(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        params: Params | None = None,
        past_key_values: Any = None,
        dropout_rng: Array | None = None,
        train: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        token_type_ids: Array | None = None,
        head_mask: Array | None = None,
        inputs_embeds: Array | None = None,
        encoder_hidden_states: Array | None = None,
        encoder_attention_mask: Array | None = None,
        use_cache: bool | None = None,
        labels: Array | None = None,
        mc_token_ids: Array | None = None,
        mc_labels: Array | None = None,
        start_positions: Array | None = None,
        end_positions: Array | None = None,
    ) -> Any:
        """Run the model; jitted, so each new input shape or flag combination compiles once.

        Args:
            input_ids, attention_mask, position_ids, past_key_values, token_type_ids, head_mask, inputs_embeds,
                encoder_hidden_states, encoder_attention_mask, use_cache, labels, mc_token_ids, mc_labels,
                start_positions, end_positions, output_attentions, output_hidden_states, return_dict: as the
                module's `__call__` (e.g. `GPT2ModelModule`); an argument this class does not take raises
                TypeError. NumPy arrays are accepted.
            params: the params to run with (default `self.params`).
            dropout_rng: PRNG key of the dropout layers; needed with `train=True`, which turns dropout on.
        Returns:
            The module's output dataclass (a pytree), or its `to_tuple()` with `return_dict=False`.
        """
        inputs = dict(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask,
            inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, mc_token_ids=mc_token_ids, labels=labels,
            mc_labels=mc_labels, start_positions=start_positions, end_positions=end_positions,
        )
        flags = dict(
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )
        return self._call_module(params, dropout_rng, train, inputs, flags)

    def _apply(self, params: Params, rngs: dict[str, Array], inputs: dict[str, Any], **static: Any) -> Any:
        return self.module.apply({"params": params}, **inputs, **static, rngs=rngs)

    def _call_module(
        self,
        params: Params | None,
        dropout_rng: Array | None,
        train: bool,
        inputs: dict[str, Any],
        static: dict[str, Any],
    ) -> Any:
        """Check the arguments, then run the jitted module (traced once per input shape and flag set)."""
        inputs = {name: value for name, value in inputs.items() if value is not None}
        refused = sorted(set(inputs) - self._module_args)
        if refused:
            raise TypeError(f"{type(self).__name__} does not take {', '.join(refused)}")
        if params is None:
            params = self.params
        else:
            self.check_params(params)
        if train and dropout_rng is None:
            raise ValueError("train=True needs a dropout_rng (a jax.random.PRNGKey) for the dropout layers")
        inputs = {
            name: jnp.asarray(value) if isinstance(value, (np.ndarray, list, tuple, int)) and name != "past_key_values"
            else value
            for name, value in inputs.items()
        }
        self._check_values(inputs)
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        return self._jitted_apply(params, rngs, inputs, deterministic=not train, **static)

    def _check_values(self, inputs: dict[str, Any]) -> None:
        """Checks that need concrete values, done before tracing (inside `jax.jit` they are skipped)."""
        config = self.config
        ops.check_ids(inputs.get("input_ids"), config.vocab_size, "input_ids", "vocab_size")
        ops.check_ids(inputs.get("token_type_ids"), config.vocab_size, "token_type_ids", "vocab_size")
        ops.check_ids(
            inputs.get("position_ids"), config.max_position_embeddings, "position_ids", "max_position_embeddings"
        )
        cache = inputs.get("past_key_values")
        if isinstance(cache, StaticCache) and not isinstance(cache.index, jax.core.Tracer):
            tokens = inputs.get("input_ids", inputs.get("inputs_embeds"))
            seq_len = tokens.shape[-1] if "input_ids" in inputs else tokens.shape[-2]
            if int(cache.index) + seq_len > cache.max_length:
                raise ValueError(
                    f"the static cache holds {cache.max_length} positions: {int(cache.index)} are filled and "
                    f"{seq_len} more do not fit; call init_cache with a larger max_length"
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={jnp.dtype(self.dtype).name}, config={self.config.to_json_string()})"
