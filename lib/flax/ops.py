"""Flax helpers shared by the three families; `lib/pt/ops.py` and `lib/tf/ops.py` have the same names.

Mask and rotary tables come from `twinformers.model_math`; this module only turns them into arrays and
applies them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from ..configuration import ACTIVATIONS, PretrainedConfig
from ..errors import InputError
from ..inputs import (
    check_id_range,
    check_labels_shape,
    check_mask_shape,
    check_model_inputs,
    check_sequence_labels_shape,
    static_shape,
)
from ..model_math import MASK_VALUE, causal_mask, rotary_tables

logger = logging.getLogger(__name__)

__all__ = [
    "ACT_FNS",
    "get_activation",
    "linear",
    "Conv1D",
    "dot_general_f32",
    "Linear",
    "ModuleList",
    "causal_table",
    "rotary_table",
    "apply_rotary",
    "split_heads",
    "merge_heads",
    "masked_softmax",
    "eager_attention",
    "sdpa_attention",
    "attention",
    "StaticCache",
    "static_cache_index",
    "update_cache",
    "causal_rows",
    "cache_key_length",
    "static_padding",
    "pack_presents",
    "check_inputs",
    "check_ids",
    "past_length",
    "default_position_ids",
    "padding_mask",
    "expand_head_mask",
    "causal_lm_loss",
    "sequence_classification_loss",
    "cross_entropy_loss",
    "question_answering_loss",
    "pool_last_token",
    "lm_head_logits",
    "init_normal",
]

Array = jax.Array


# --------------------------------------------------------------------------------------------- activations
def gelu_new(x: Array) -> Array:
    """GPT-2's GELU, the tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`."""
    return jax.nn.gelu(x, approximate=True)


def gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


def quick_gelu(x: Array) -> Array:
    return x * jax.nn.sigmoid(1.702 * x)


def linear(x: Array) -> Array:
    return x


ACT_FNS: dict[str, Callable[[Array], Array]] = {
    "gelu": gelu,
    "gelu_new": gelu_new,
    "gelu_fast": gelu_new,  # the same tanh formula, factored differently
    "gelu_pytorch_tanh": gelu_new,
    "quick_gelu": quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "linear": linear,
}
assert set(ACT_FNS) == set(ACTIVATIONS), "ACT_FNS must cover configuration.ACTIVATIONS"


def get_activation(name: str) -> Callable[[Array], Array]:
    """The activation function called `name` (one of `configuration.ACTIVATIONS`)."""
    if name not in ACT_FNS:
        raise ValueError(f"activation_function {name!r} is not supported; choose one of {', '.join(ACT_FNS)}")
    return ACT_FNS[name]


# --------------------------------------------------------------------------------------------- layers
class Conv1D(nnx.Module):
    """GPT-2's projection: `x @ kernel.T + bias` with `kernel` stored (out, in), as in Hugging Face's Flax
    checkpoints (the transpose of the PyTorch weight).

    Args:
        nf: output features. nx: input features. initializer_range: std of the kernel's normal init.
    """

    def __init__(self, nf: int, nx: int, initializer_range: float = 0.02, *, dtype: Any = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        self.nf = nf
        self.dtype = dtype
        self.kernel = nnx.Param(init_normal(initializer_range)(rngs.params(), (nf, nx), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((nf,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        x, kernel, bias = (jnp.asarray(a, self.dtype) for a in (x, self.kernel[...], self.bias[...]))
        # (..., in) -> (..., out), contracting with the kernel's second axis: no transposed copy of it
        x = dot_general_f32(x, kernel, (((x.ndim - 1,), (1,)), ((), ())))
        return x + bias


def dot_general_f32(lhs: Array, rhs: Array, dimension_numbers: Any, precision: Any = None,
                    preferred_element_type: Any = None, **kwargs: Any) -> Array:
    """`lax.dot_general` (and a drop-in `dot_general=` for `nnx.Linear`) that accumulates bfloat16 and float16
    operands in float32 and returns their dtype; other dtypes go through unchanged.

    XLA on CPU has no half-precision dot with a half-precision result: it converts both operands to float32
    first, and schedules the converts of all the weights together at the start of the program, so a bfloat16
    forward held a float32 copy of the whole model (1.76x the float32 checkpoint, GPT-2 124M). A bfloat16 dot
    with a float32 result runs as it is (no converted copy). The products of two half-precision numbers are
    exact in float32, so only the summation order can differ from the converted dot.

    One row (batch-1 decoding) is the exception: XLA rewrites a one-row half-precision dot into a float32 dot
    of converted operands, and in `generate`'s while loop it hoists the weight's convert out of the loop, so a
    float32 copy of every weight stayed live (3.15x the checkpoint). A second, zero row keeps the dot a
    half-precision one (XLA's library dot reads the bfloat16 weight as it is); the row is dropped after.
    """
    dtype = jnp.result_type(lhs, rhs)
    if preferred_element_type is None and dtype in (jnp.bfloat16, jnp.float16):
        rows_axis = _single_row_axis(lhs, dimension_numbers)
        if rows_axis is None:
            out = lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=jnp.float32,
                                  **kwargs)
            return out.astype(dtype)
        lhs = jnp.concatenate([lhs, jnp.zeros_like(lhs)], axis=rows_axis)  # (..., 1, ...) -> (..., 2, ...)
        (lhs_contract, rhs_contract), _ = dimension_numbers
        if tuple(rhs_contract) == (rhs.ndim - 1,):
            # The weight contracts its last axis ((out, in): GPT-2's Conv1D, the tied LM head): as the dot's
            # left operand it is read as it is stored; as the right one, XLA kept a transposed copy of it.
            out = lax.dot_general(rhs, lhs, ((rhs_contract, lhs_contract), ((), ())), precision,
                                  preferred_element_type=jnp.float32, **kwargs)
            rhs_free = rhs.ndim - 1
            out = jnp.transpose(out, (*range(rhs_free, out.ndim), *range(rhs_free)))  # lhs's axes first
        else:
            out = lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=jnp.float32,
                                  **kwargs)
        out_axis = sum(1 for a in range(rows_axis) if a not in lhs_contract)  # lhs's free axes come first
        return lax.slice_in_dim(out, 0, 1, axis=out_axis).astype(dtype)  # the real row
    return lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type,
                           **kwargs)


def _single_row_axis(lhs: Array, dimension_numbers: Any) -> int | None:
    """The axis to pad when `lhs` has exactly one row (its free axes multiply to 1, no batch axes), else None.
    A static shape check: it decides at trace time, so each compiled program takes one path."""
    (lhs_contract, _), (lhs_batch, _) = dimension_numbers
    free = [a for a in range(lhs.ndim) if a not in lhs_contract]
    if lhs_batch or not free or any(lhs.shape[a] != 1 for a in free):
        return None
    return free[-1]


class Linear(nnx.Linear):
    """`nnx.Linear` whose bfloat16/float16 dots accumulate in float32 (`dot_general_f32`), so a half-precision
    model holds no float32 copy of its weights; float32 is unchanged. Same parameters as `nnx.Linear`."""

    def __init__(self, in_features: int, out_features: int, *, dot_general: Any = dot_general_f32,
                 **kwargs: Any) -> None:
        super().__init__(in_features, out_features, dot_general=dot_general, **kwargs)


class ModuleList(nnx.Module):
    """`torch.nn.ModuleList` for NNX: children are attributes "0", "1", ... so parameter paths read
    `h/0/attn/...` as in Hugging Face's checkpoints."""

    def __init__(self, layers: Sequence[nnx.Module]) -> None:
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)
        self.num_layers = len(layers)

    def __len__(self) -> int:
        return self.num_layers

    def __iter__(self) -> Iterator[nnx.Module]:
        return (getattr(self, str(i)) for i in range(self.num_layers))

    def __getitem__(self, index: int) -> nnx.Module:
        return getattr(self, str(index))


# --------------------------------------------------------------------------------------------- tables
@functools.cache
def causal_table(num_positions: int, window: int | None = None) -> np.ndarray:
    """(1, 1, P, P) bool table of `model_math.causal_mask`, built once per size and shared by every layer
    (a NumPy constant: jit embeds the slice it needs)."""
    table = causal_mask(num_positions, num_positions, window)[None, None]
    table.setflags(write=False)
    return table


@functools.cache
def rotary_table(num_positions: int, rotary_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """GPT-J's float32 (sin, cos) tables, each (P, rotary_dim // 2), from `model_math.rotary_tables`."""
    sin, cos = rotary_tables(num_positions, rotary_dim)
    sin.setflags(write=False)
    cos.setflags(write=False)
    return sin, cos


def apply_rotary(x: Array, sin: Array, cos: Array) -> Array:
    """Rotate adjacent pairs (2k, 2k+1) of `x` by the angles behind `sin`/`cos` ("rotate every two").

    Args:
        x: (B, T, H, R) the rotary part of query or key heads.
        sin, cos: (B, T, 1, R/2) float32 tables gathered at the token positions.
    Returns:
        (B, T, H, R), in x's dtype.
    """
    x_float = x.astype(jnp.float32)
    x1, x2 = x_float[..., 0::2], x_float[..., 1::2]  # (B, T, H, R/2) each
    rotated = jnp.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), axis=-1)  # (B, T, H, R/2, 2)
    return rotated.reshape(x.shape).astype(x.dtype)


# --------------------------------------------------------------------------------------------- attention
def split_heads(x: Array, num_heads: int) -> Array:
    # (B, T, H*D) -> (B, H, T, D)
    return x.reshape(x.shape[:-1] + (num_heads, -1)).transpose(0, 2, 1, 3)


def merge_heads(x: Array) -> Array:
    # (B, H, T, D) -> (B, T, H*D)
    return x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)


def masked_softmax(attn_weights: Array, mask: Array | None) -> Array:
    """Softmax over keys in float32, with positions where the boolean `mask` is False set to MASK_VALUE.

    Args:
        attn_weights: (B, H, T, S) scores. mask: bool, broadcastable to (B, H, T, S), True = may attend.
    Returns:
        (B, H, T, S) float32 probabilities.
    """
    attn_weights = attn_weights.astype(jnp.float32)
    if mask is not None:
        attn_weights = jnp.where(mask, attn_weights, MASK_VALUE)
    return jax.nn.softmax(attn_weights, axis=-1)


def eager_attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    scale: float,
    dropout: nnx.Dropout,
    head_mask: Array | None = None,
    upcast: bool = False,
) -> tuple[Array, Array]:
    """Attention written out, returning the probabilities too.

    Args:
        query: (B, H, T, D). key, value: (B, H, S, D). mask: bool (B or 1, 1, T, S), True = may attend.
        scale: factor applied to the scores. head_mask: (1, H, 1, 1) multiplier of the probabilities.
        upcast: compute the scores in float32 (GPT-J, GPT-Neo, GPT-2's `reorder_and_upcast_attn`).
    Returns:
        attn_output (B, H, T, D) in value's dtype, attn_weights (B, H, T, S).
    """
    if upcast:
        query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    attn_weights = jnp.matmul(query * scale, key.swapaxes(-1, -2))  # (B, H, T, S)
    # Softmax in float32, then back to the value dtype as the checkpoints' authors trained with.
    attn_weights = masked_softmax(attn_weights, mask).astype(value.dtype)
    attn_weights = dropout(attn_weights)
    if head_mask is not None:
        attn_weights = attn_weights * head_mask
    attn_output = jnp.matmul(attn_weights, value)  # (B, H, T, D)
    return attn_output, attn_weights


def sdpa_attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    scale: float,
    upcast: bool = False,
) -> Array:
    """`jax.nn.dot_product_attention` with the same explicit boolean mask as the eager path (so GPT-Neo's
    local window holds here too). Shapes as in `eager_attention`; returns attn_output."""
    dtype = value.dtype
    if upcast:
        query, key, value = query.astype(jnp.float32), key.astype(jnp.float32), value.astype(jnp.float32)
    # jax wants (B, T, H, D)
    query, key, value = (x.transpose(0, 2, 1, 3) for x in (query, key, value))
    attn_output = jax.nn.dot_product_attention(query, key, value, mask=mask, scale=scale)
    return attn_output.transpose(0, 2, 1, 3).astype(dtype)


def attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    scale: float,
    dropout: nnx.Dropout,
    implementation: str,
    head_mask: Array | None = None,
    output_attentions: bool = False,
    upcast: bool = False,
) -> tuple[Array, Array | None]:
    """Dispatch to `sdpa_attention` or `eager_attention`; the eager path is used whenever probabilities are
    returned, heads are masked or dropout is active. Returns attn_output (B, H, T, D) and attn_weights
    (B, H, T, S) or None."""
    dropout_active = not dropout.deterministic and dropout.rate > 0
    if implementation == "sdpa" and not output_attentions and head_mask is None and not dropout_active:
        return sdpa_attention(query, key, value, mask, scale, upcast), None
    return eager_attention(query, key, value, mask, scale, dropout, head_mask, upcast)


# --------------------------------------------------------------------------------------------- cache
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
    # Sliced as a jax array: under jax.export the lengths may be symbolic, which NumPy cannot slice with.
    return jax.lax.dynamic_slice_in_dim(jnp.asarray(bias)[:, :, :, :key_len], query_start, query_len, axis=2)


def static_cache_index(past_key_values: Any) -> Array | None:
    """A static cache's fill index (where this call's tokens are written), None for the tuple form."""
    return past_key_values.index if isinstance(past_key_values, StaticCache) else None


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


# --------------------------------------------------------------------------------------------- inputs
# Off while the programs that check ids on the host first trace (see `host_checked_ids`).
_traced_id_checks: contextvars.ContextVar[bool] = contextvars.ContextVar("traced_id_checks", default=True)


@contextlib.contextmanager
def host_checked_ids() -> Iterator[None]:
    """Trace without `check_ids`'s in-graph check, for programs whose ids were checked on the host before the
    call (the model wrapper's `__call__`, `generate`) or that are serialized (`jax.export` cannot hold host
    callbacks). A host callback in a program costs every call JAX's fast C++ dispatch (a decode step with one
    ran 3× slower in its Python path)."""
    checks = _traced_id_checks.set(False)
    try:
        yield
    finally:
        _traced_id_checks.reset(checks)


def check_ids(ids: Any, limit: int, name: str, limit_name: str) -> None:
    """Raise InputError (a ValueError) unless every entry of `ids` lies in [0, limit).

    Concrete values are checked here. Traced ones (inside `jax.jit`) get an in-graph check that survives XLA:
    a host callback, run only when an id is out of range, raises the same error (surfacing as a
    `JaxRuntimeError` that quotes it). `make_train_step` also checks each batch before dispatch.
    """
    if ids is None or np.size(ids) == 0:
        return
    if isinstance(ids, jax.core.Tracer):
        if not _traced_id_checks.get():
            return
        low, high = jnp.min(ids), jnp.max(ids)

        def report(low: Any, high: Any) -> None:
            check_id_range(int(low), int(high), limit, name, limit_name)

        jax.lax.cond((low < 0) | (high >= limit), lambda: jax.debug.callback(report, low, high), lambda: None)
        return
    ids = np.asarray(ids)
    check_id_range(int(ids.min()), int(ids.max()), limit, name, limit_name)


def check_inputs(input_ids: Array | None, inputs_embeds: Array | None, vocab_size: int) -> tuple[int, ...]:
    """Validate the token input and return its shape without the hidden axis ((B, T) or (B, C, T))."""
    check_model_inputs({"input_ids": input_ids, "inputs_embeds": inputs_embeds})
    if input_ids is not None and inputs_embeds is not None:
        raise InputError("You cannot specify both input_ids and inputs_embeds at the same time")
    if input_ids is not None:
        if input_ids.ndim < 2:
            raise InputError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        if not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise InputError(f"input_ids must hold integer ids, got dtype {input_ids.dtype}")
        check_ids(input_ids, vocab_size, "input_ids", "vocab_size")
        return tuple(input_ids.shape)
    if inputs_embeds is not None:
        if inputs_embeds.ndim < 3:
            raise InputError(f"inputs_embeds must be (batch, seq_len, hidden), got {tuple(inputs_embeds.shape)}")
        return tuple(inputs_embeds.shape[:-1])
    raise InputError("You have to specify either input_ids or inputs_embeds")


def past_length(past_key_values: Any, num_layers: int) -> int | Array:
    """Cached length S - T of `past_key_values`: a tuple of one (key, value) per layer, each (B, H, S, D),
    or a `StaticCache` (then its fill index, an int32 scalar that may be traced)."""
    if past_key_values is None:
        return 0
    if len(past_key_values) != num_layers:
        raise ValueError(f"past_key_values has {len(past_key_values)} entries, expected one per layer ({num_layers})")
    if isinstance(past_key_values, StaticCache):
        return past_key_values.index
    return past_key_values[0][0].shape[-2]


def default_position_ids(past: int | Array, seq_len: int, max_positions: int) -> Array:
    """(1, T) consecutive positions after the cache (Hugging Face's default); ValueError past the table."""
    if not isinstance(past, jax.core.Tracer) and int(past) + seq_len > max_positions:
        raise ValueError(
            f"sequence length {int(past) + seq_len} (past_key_values {int(past)} + input {seq_len}) exceeds the "
            f"model's maximum of {max_positions} positions (n_positions / max_position_embeddings)"
        )
    return (past + jnp.arange(seq_len, dtype=jnp.int32))[None]


def padding_mask(attention_mask: Array | None, batch_size: int, key_len: int, name: str) -> Array | None:
    """(B, S) 0/1 `attention_mask` (1 = keep) → (B, 1, 1, S) bool, ValueError on a shape mismatch."""
    if attention_mask is None:
        return None
    check_mask_shape(static_shape(attention_mask), batch_size, key_len, name)
    return attention_mask.reshape(batch_size, 1, 1, key_len).astype(bool)


def expand_head_mask(head_mask: Array | None, num_layers: int, num_heads: int) -> list[Array | None]:
    """(H,) or (L, H) head mask (1 keeps a head) → per layer a (1, H, 1, 1) multiplier (or None)."""
    if head_mask is None:
        return [None] * num_layers
    head_mask = jnp.asarray(head_mask)
    if head_mask.ndim == 1 and head_mask.shape[0] == num_heads:
        head_mask = jnp.broadcast_to(head_mask[None], (num_layers, num_heads))
    if tuple(head_mask.shape) != (num_layers, num_heads):
        raise InputError(
            f"head_mask has shape {tuple(head_mask.shape)}, expected ({num_heads},) or ({num_layers}, {num_heads})"
        )
    return list(head_mask[:, None, :, None, None])


# --------------------------------------------------------------------------------------------- losses
def causal_lm_loss(logits: Array, labels: Array) -> Array:
    """Next-token cross-entropy: logits (..., T, V) at t predict labels (..., T) at t+1; -100 is ignored.
    Computed in float32 and averaged over the counted tokens."""
    check_labels_shape(static_shape(labels), static_shape(logits)[:-1])
    shift_logits = logits[..., :-1, :].astype(jnp.float32)
    shift_labels = labels[..., 1:]
    return cross_entropy_loss(shift_logits, shift_labels)


def sequence_classification_loss(logits: Array, labels: Array, config: PretrainedConfig) -> Array:
    """Loss of (B, num_labels) logits by `config.problem_type` (inferred as Hugging Face does when unset):
    regression → MSE, single_label_classification → cross-entropy, multi_label_classification → BCE."""
    num_labels = config.num_labels
    problem_type = config.problem_type
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif jnp.issubdtype(labels.dtype, jnp.integer):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    check_sequence_labels_shape(static_shape(labels), static_shape(logits), problem_type)
    if problem_type == "regression":
        if num_labels == 1:
            return jnp.mean((logits.squeeze().astype(jnp.float32) - labels.squeeze().astype(jnp.float32)) ** 2)
        return jnp.mean((logits.astype(jnp.float32) - labels.astype(jnp.float32)) ** 2)
    if problem_type == "single_label_classification":
        return cross_entropy_loss(logits.reshape(-1, num_labels), labels)
    logits, labels = logits.astype(jnp.float32), labels.astype(jnp.float32)
    # max(x, 0) - x·y + log(1 + e^-|x|): binary cross-entropy with logits that cannot overflow
    return jnp.mean(jnp.maximum(logits, 0.0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def cross_entropy_loss(logits: Array, labels: Array, ignore_index: int = -100) -> Array:
    """Cross-entropy of (..., C) logits against (...) class ids, in float32; `ignore_index` is ignored (token
    classification, multiple choice). The mean over counted labels (NaN when none counts, as PyTorch's)."""
    log_probs = jax.nn.log_softmax(logits.reshape(-1, logits.shape[-1]).astype(jnp.float32), axis=-1)
    labels = labels.reshape(-1)
    counted = labels != ignore_index
    nll = -jnp.take_along_axis(log_probs, jnp.where(counted, labels, 0)[:, None], axis=-1)[:, 0]
    return jnp.sum(jnp.where(counted, nll, 0.0)) / jnp.sum(counted)


def question_answering_loss(
    start_logits: Array, end_logits: Array, start_positions: Array, end_positions: Array
) -> Array:
    """Mean of the start and end cross-entropies over (B, T) logits; positions outside the sequence are
    clamped to T and ignored."""
    ignored_index = start_logits.shape[1]
    losses = []
    for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
        if positions.ndim > 1:
            positions = positions.squeeze(-1)
        positions = jnp.clip(positions, 0, ignored_index)
        losses.append(cross_entropy_loss(logits, positions, ignore_index=ignored_index))
    return (losses[0] + losses[1]) / 2


# --------------------------------------------------------------------------------------------- heads
def pool_last_token(logits: Array, input_ids: Array | None, pad_token_id: int | None, owner: str) -> Array:
    """Pick each row's logits at its last non-padding token.

    Args:
        logits: (B, T, C). input_ids: (B, T) or None (inputs_embeds were given).
        pad_token_id: the padding id, or None (then the last position is used, and batches > 1 are refused
            because padding could not be told apart). owner: the model class name, for messages.
    Returns:
        (B, C) pooled logits.
    """
    batch_size, seq_len = logits.shape[:2]
    if pad_token_id is None and batch_size != 1:
        raise ValueError(f"{owner}: cannot handle batch sizes > 1 if no padding token is defined (pad_token_id)")
    if pad_token_id is None:
        last = jnp.full((batch_size,), seq_len - 1)
    elif input_ids is None:
        logger.warning(
            "%s will not detect padding tokens in `inputs_embeds`. Results may be unexpected if using padding "
            "tokens in conjunction with `inputs_embeds.`",
            owner,
        )
        last = jnp.full((batch_size,), seq_len - 1)
    else:
        # The rightmost non-pad token, so left- and right-padded rows both pool their last real token.
        positions = jnp.arange(seq_len)
        last = ((input_ids != pad_token_id).astype(jnp.int32) * positions).argmax(-1)
    return logits[jnp.arange(batch_size), last]


def lm_head_logits(lm_head: nnx.Linear | None, wte: nnx.Embed, hidden_states: Array) -> Array:
    """(..., H*D) → (..., V) logits. With tied word embeddings there is no `lm_head` parameter (as in Hugging
    Face's Flax checkpoints): the logits are `hidden_states @ wte.embedding.T`."""
    if lm_head is None:  # `wte.attend`, accumulating half precision in float32 (see `dot_general_f32`)
        query, embedding = wte.promote_dtype((hidden_states, wte.embedding[...]), dtype=wte.dtype)
        return dot_general_f32(query, embedding, (((query.ndim - 1,), (1,)), ((), ())))
    return lm_head(hidden_states)


def init_normal(std: float) -> Callable[..., Array]:
    """N(0, std²) initializer of kernels and embeddings."""
    return nnx.initializers.normal(stddev=std)
