"""TensorFlow helpers shared by the three families; `lib/pt/ops.py` and `lib/flax/ops.py` have the same names.

Mask and rotary tables come from `twinformers.model_math`; this module only turns them into tensors and
applies them. Shapes are read with `shape_list`, so every function traces under `tf.function` (and XLA)
with static shapes and still works with dynamic ones.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python.xla import dynamic_slice, dynamic_update_slice
from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext

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
    "Conv1D",
    "matmul_f32",
    "Linear",
    "Embedding",
    "LMHead",
    "causal_table",
    "rotary_table",
    "apply_rotary",
    "split_heads",
    "merge_heads",
    "masked_softmax",
    "eager_attention",
    "attention",
    "StaticCache",
    "static_cache_index",
    "update_cache",
    "causal_rows",
    "traced_dynamic_slice",
    "cache_key_length",
    "static_padding",
    "pack_presents",
    "shape_list",
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
    "init_normal",
]


# --------------------------------------------------------------------------------------------- activations
def gelu_new(x: tf.Tensor) -> tf.Tensor:
    """GPT-2's GELU, the tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`."""
    return tf.nn.gelu(x, approximate=True)


def gelu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.gelu(x, approximate=False)


def quick_gelu(x: tf.Tensor) -> tf.Tensor:
    return x * tf.sigmoid(tf.cast(1.702, x.dtype) * x)


def linear(x: tf.Tensor) -> tf.Tensor:
    return x


ACT_FNS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "gelu": gelu,
    "gelu_new": gelu_new,
    "gelu_fast": gelu_new,  # the same tanh formula, factored differently
    "gelu_pytorch_tanh": gelu_new,
    "quick_gelu": quick_gelu,
    "relu": tf.nn.relu,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "linear": linear,
}
assert set(ACT_FNS) == set(ACTIVATIONS), "ACT_FNS must cover configuration.ACTIVATIONS"


def get_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation function called `name` (one of `configuration.ACTIVATIONS`)."""
    if name not in ACT_FNS:
        raise ValueError(f"activation_function {name!r} is not supported; choose one of {', '.join(ACT_FNS)}")
    return ACT_FNS[name]


# --------------------------------------------------------------------------------------------- layers
class Conv1D(keras.layers.Layer):
    """GPT-2's projection: `x @ weight + bias` with `weight` stored (in, out), as in Hugging Face checkpoints.

    The bias is (out,) like PyTorch's and Flax's; only Hugging Face's `tf_model.h5` stores it (1, out), which
    the conversion table's `reshape_row` transform handles.

    Args:
        nf: output features. nx: input features. initializer_range: std of the weight's normal init.
    """

    def __init__(self, nf: int, nx: int, initializer_range: float = 0.02, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nf = nf
        self.nx = nx
        self.initializer_range = initializer_range

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        # Both sizes are known from the config, so the variables never depend on the input.
        initializer = init_normal(self.initializer_range)
        self.weight = self.add_weight(name="weight", shape=(self.nx, self.nf), initializer=initializer)
        self.bias = self.add_weight(name="bias", shape=(self.nf,), initializer="zeros")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        # (..., in) -> (..., out)
        size_out = shape_list(x)[:-1] + [self.nf]
        x = matmul_f32(tf.reshape(x, [-1, self.nx]), self.weight) + self.bias
        return tf.reshape(x, size_out)


def matmul_f32(a: tf.Tensor, b: tf.Tensor, transpose_b: bool = False) -> tf.Tensor:
    """`tf.matmul(a, b)` of (N, in) rows that, under XLA, accumulates bfloat16 and float16 in float32 and returns
    their dtype; float32, and any matmul outside XLA, go through `tf.matmul` unchanged.

    XLA on CPU has no half-precision dot with a half-precision result: it converts both operands to float32
    first, and in `generate`'s while loop it hoists the weights' converts out of the loop, so a float32 copy of
    every weight stayed live (3.2x the checkpoint). `BatchMatMulV3` with a float32 `Tout` (XLA only: TF's CPU
    kernels lack it) is a half-precision dot with a float32 result, which XLA runs as it is, except for one row
    (batch-1 decoding), which it still rewrites into a converted float32 dot: one row gets a second, zero row,
    dropped after. The products of two half-precision numbers are exact in float32, so only the summation
    order can differ from the converted dot.
    """
    if a.dtype not in (tf.bfloat16, tf.float16) or not GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return tf.matmul(a, b, transpose_b=transpose_b)
    one_row = a.shape[0] == 1  # static: decided while tracing
    if one_row:
        a = tf.concat([a, tf.zeros_like(a)], 0)  # (1, in) -> (2, in)
    out = tf.raw_ops.BatchMatMulV3(x=a, y=b, Tout=tf.float32, adj_y=transpose_b)
    if one_row:
        out = out[:1]
    return tf.cast(out, a.dtype)


class Linear(keras.layers.Dense):
    """`keras.layers.Dense` whose bfloat16/float16 matmuls under XLA accumulate in float32 (`matmul_f32`), so
    `generate` holds no float32 copy of the weights; float32 is unchanged. Same arguments as `Dense`."""

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        # (..., in) -> (..., out)
        size_out = shape_list(inputs)[:-1] + [self.units]
        x = matmul_f32(tf.reshape(inputs, [-1, shape_list(inputs)[-1]]), self.kernel)
        if self.bias is not None:
            x = x + self.bias
        if self.activation is not None:
            x = self.activation(x)
        return tf.reshape(x, size_out)


class Embedding(keras.layers.Layer):
    """A token or position table, `(...) ids -> (..., D)`, whose variable is named like Hugging Face's TF model:
    `embeddings` (Keras' name: GPT-2, GPT-Neo) or `weight` (GPT-J's shared embedding).

    Args:
        input_dim: table rows (vocabulary or positions). output_dim: D. initializer_range: std of the init.
        weight_name: the variable's name.
    """

    def __init__(
        self, input_dim: int, output_dim: int, initializer_range: float = 0.02, weight_name: str = "embeddings",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.initializer_range = initializer_range
        self.weight_name = weight_name

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        initializer = init_normal(self.initializer_range)
        self.embeddings = self.add_weight(
            name=self.weight_name, shape=(self.input_dim, self.output_dim), initializer=initializer
        )

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        # (...) -> (..., D)
        return tf.gather(self.embeddings, ids)


class LMHead(keras.layers.Layer):
    """The language-modeling projection `(..., D) -> (..., V)`.

    Tied (`embedding` given: GPT-2, GPT-Neo) it multiplies by the token table's transpose and owns no
    kernel, as Hugging Face's TF models; untied (GPT-J) it owns `kernel` (D, V) like a Keras `Dense`. `bias`
    (V,) when `use_bias` (GPT-J).

    Args:
        vocab_size: V. hidden_size: D. use_bias: add a bias. embedding: the tied `Embedding`, or None.
        initializer_range: std of the kernel's init.
    """

    def __init__(
        self, vocab_size: int, hidden_size: int, use_bias: bool = False, embedding: Embedding | None = None,
        initializer_range: float = 0.02, **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.use_bias = use_bias
        self.embedding = embedding
        self.initializer_range = initializer_range

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if self.embedding is None:
            initializer = init_normal(self.initializer_range)
            self.kernel = self.add_weight(
                name="kernel", shape=(self.hidden_size, self.vocab_size), initializer=initializer
            )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")

    def call(self, hidden_states: tf.Tensor) -> tf.Tensor:
        # (..., D) -> (..., V)
        output_shape = shape_list(hidden_states)[:-1] + [self.vocab_size]
        hidden_states = tf.reshape(hidden_states, (-1, self.hidden_size))
        if self.embedding is not None:
            logits = matmul_f32(hidden_states, self.embedding.embeddings, transpose_b=True)
        else:
            logits = matmul_f32(hidden_states, self.kernel)
        if self.use_bias:
            logits = logits + self.bias
        return tf.reshape(logits, output_shape)


# --------------------------------------------------------------------------------------------- tables
@functools.cache
def causal_table(num_positions: int, window: int | None = None) -> tf.Tensor:
    """(1, 1, P, P) bool table of `model_math.causal_mask`, built once per size and shared by every layer."""
    # init_scope: a table first asked for while tracing must still be an eager constant, or the cache would
    # hand one graph's tensor to the next.
    with tf.init_scope():
        return tf.constant(causal_mask(num_positions, num_positions, window)[None, None])


@functools.cache
def rotary_table(num_positions: int, rotary_dim: int) -> tuple[tf.Tensor, tf.Tensor]:
    """GPT-J's float32 (sin, cos) tables, each (P, rotary_dim // 2), from `model_math.rotary_tables`."""
    sin, cos = rotary_tables(num_positions, rotary_dim)
    with tf.init_scope():
        return tf.constant(sin), tf.constant(cos)


def apply_rotary(x: tf.Tensor, sin: tf.Tensor, cos: tf.Tensor) -> tf.Tensor:
    """Rotate adjacent pairs (2k, 2k+1) of `x` by the angles behind `sin`/`cos` ("rotate every two").

    Args:
        x: (B, T, H, R) the rotary part of query or key heads.
        sin, cos: (B, T, 1, R/2) float32 tables gathered at the token positions.
    Returns:
        (B, T, H, R), in x's dtype.
    """
    x_float = tf.cast(x, tf.float32)
    x1, x2 = x_float[..., 0::2], x_float[..., 1::2]  # (B, T, H, R/2) each
    rotated = tf.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), axis=-1)  # (B, T, H, R/2, 2)
    return tf.cast(tf.reshape(rotated, shape_list(x)), x.dtype)


# --------------------------------------------------------------------------------------------- attention
def split_heads(x: tf.Tensor, num_heads: int) -> tf.Tensor:
    # (B, T, H*D) -> (B, H, T, D)
    batch_size, seq_len, hidden = shape_list(x)
    x = tf.reshape(x, (batch_size, seq_len, num_heads, hidden // num_heads))
    return tf.transpose(x, (0, 2, 1, 3))


def merge_heads(x: tf.Tensor) -> tf.Tensor:
    # (B, H, T, D) -> (B, T, H*D)
    batch_size, num_heads, seq_len, head_dim = shape_list(x)
    return tf.reshape(tf.transpose(x, (0, 2, 1, 3)), (batch_size, seq_len, num_heads * head_dim))


def masked_softmax(attn_weights: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """Softmax over keys in float32, with positions where the boolean `mask` is False set to MASK_VALUE.

    Args:
        attn_weights: (B, H, T, S) scores. mask: bool, broadcastable to (B, H, T, S), True = may attend.
    Returns:
        (B, H, T, S) float32 probabilities.
    """
    attn_weights = tf.cast(attn_weights, tf.float32)
    if mask is not None:
        attn_weights = tf.where(mask, attn_weights, MASK_VALUE)
    return tf.nn.softmax(attn_weights, axis=-1)


def eager_attention(
    query: tf.Tensor,
    key: tf.Tensor,
    value: tf.Tensor,
    mask: tf.Tensor | None,
    scale: float,
    dropout: keras.layers.Dropout,
    head_mask: tf.Tensor | None = None,
    upcast: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Attention written out, returning the probabilities too.

    Args:
        query: (B, H, T, D). key, value: (B, H, S, D). mask: bool (B or 1, 1, T, S), True = may attend.
        scale: factor applied to the scores. head_mask: (1, H, 1, 1) multiplier of the probabilities.
        upcast: compute the scores in float32 (GPT-J, GPT-Neo, GPT-2's `reorder_and_upcast_attn`).
    Returns:
        attn_output (B, H, T, D) in value's dtype, attn_weights (B, H, T, S).
    """
    if upcast:
        query, key = tf.cast(query, tf.float32), tf.cast(key, tf.float32)
    attn_weights = tf.matmul(query * tf.cast(scale, query.dtype), key, transpose_b=True)  # (B, H, T, S)
    # Softmax in float32, then back to the value dtype as the checkpoints' authors trained with.
    attn_weights = tf.cast(masked_softmax(attn_weights, mask), value.dtype)
    attn_weights = dropout(attn_weights)
    if head_mask is not None:
        attn_weights = attn_weights * tf.cast(head_mask, attn_weights.dtype)
    attn_output = tf.matmul(attn_weights, value)  # (B, H, T, D)
    return attn_output, attn_weights


def attention(
    query: tf.Tensor,
    key: tf.Tensor,
    value: tf.Tensor,
    mask: tf.Tensor | None,
    scale: float,
    dropout: keras.layers.Dropout,
    implementation: str,
    head_mask: tf.Tensor | None = None,
    output_attentions: bool = False,
    upcast: bool = False,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The PyTorch twin's dispatcher. TensorFlow has no fused kernel to prefer (XLA fuses the written-out
    attention itself), so every `implementation` runs `eager_attention`. Returns attn_output (B, H, T, D)
    and attn_weights (B, H, T, S) or None."""
    attn_output, attn_weights = eager_attention(query, key, value, mask, scale, dropout, head_mask, upcast)
    return attn_output, attn_weights if output_attentions else None


# --------------------------------------------------------------------------------------------- cache
@dataclasses.dataclass
class StaticCache:
    """A pre-allocated key/value cache (from `init_cache`): fixed-size buffers and a fill index, so every
    decoding step has the same shapes and one compiled loop (`tf.while_loop` under XLA) serves them all.

    It reads like the tuple form of `past_key_values` (`len(cache)` layers, `cache[i]` = (key, value)), and
    is a `tf.nest` structure, so it can be a loop variable.

    Attributes:
        key_values: per layer a (key, value) pair, each (B, H, M, D) with M the cache's max_length.
        index: () int32, how many positions are filled (the next token's position).
    """

    key_values: tuple[tuple[tf.Tensor, tf.Tensor], ...]
    index: tf.Tensor

    def __len__(self) -> int:
        return len(self.key_values)

    def __getitem__(self, layer: int) -> tuple[tf.Tensor, tf.Tensor]:
        return self.key_values[layer]

    def __iter__(self) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
        return iter(self.key_values)

    @property
    def max_length(self) -> int:
        return self.key_values[0][0].shape[-2]

    # tf.nest protocol (TensorFlow >= 2.13).
    def __tf_flatten__(self) -> tuple[None, tuple[Any, ...]]:
        return None, (self.key_values, self.index)

    @classmethod
    def __tf_unflatten__(cls, metadata: None, components: tuple[Any, ...]) -> StaticCache:
        return cls(*components)


def update_cache(
    layer_past: tuple[tf.Tensor, tf.Tensor] | None, key: tf.Tensor, value: tf.Tensor, cache_index: tf.Tensor | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Append this step's (B, H, T, D) key and value to a layer's cache.

    The tuple form concatenates along S; a static cache (`cache_index` given) writes them into its
    buffers at `cache_index`, keeping the buffers' shape.
    """
    if layer_past is None:
        return key, value
    past_key, past_value = layer_past
    if cache_index is None:
        return tf.concat((past_key, key), axis=-2), tf.concat((past_value, value), axis=-2)
    start = tf.stack([0, 0, tf.cast(cache_index, tf.int32), 0])
    key = dynamic_update_slice(past_key, tf.cast(key, past_key.dtype), start)
    value = dynamic_update_slice(past_value, tf.cast(value, past_value.dtype), start)
    return key, value


def causal_rows(bias: tf.Tensor, query_len: int, key_len: int, cache_index: tf.Tensor | None) -> tf.Tensor:
    """The rows of a (1, 1, P, P) causal table for the T queries against the first S keys: (1, 1, T, S).

    The queries are the last T of the S keys, or sit at `cache_index` in a static cache."""
    query_start = key_len - query_len if cache_index is None else tf.cast(cache_index, tf.int32)
    # XLA's dynamic_slice, not tf.slice: XLA treats tf.slice's `begin` as a compile-time constant where it can,
    # so a compiled step taking the cache index as an argument would recompile for every index value.
    return traced_dynamic_slice(bias, tf.stack([0, 0, query_start, 0]), tf.stack([1, 1, query_len, key_len]))


def traced_dynamic_slice(x: tf.Tensor, begin: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """XLA's `dynamic_slice` in a traced function; `tf.slice` when executing eagerly (same values).

    Run eagerly, the XLA op compiles itself with XLA's CPU JIT, whose first use left ~60 MB resident: a plain
    eager forward of GPT-2 124M added 0.14x of its checkpoint to the load's peak (benchmarks/bench_load.py)."""
    if tf.executing_eagerly():
        return tf.slice(x, begin, size)
    return dynamic_slice(x, begin, size)


def static_cache_index(past_key_values: Any) -> tf.Tensor | None:
    """A static cache's fill index (where this call's tokens are written), None for the tuple form."""
    return past_key_values.index if isinstance(past_key_values, StaticCache) else None


def cache_key_length(past_key_values: Any, past: int | tf.Tensor, seq_len: int | tf.Tensor) -> int | tf.Tensor:
    """S, the key length attention sees: past + T, or a static cache's max_length."""
    if isinstance(past_key_values, StaticCache):
        return past_key_values.max_length
    return past + seq_len


def static_padding(attention_mask: tf.Tensor | None, past_key_values: Any) -> tf.Tensor | None:
    """A static cache's attention mask may cover only the positions written so far: extend it with ones to
    the cache's max_length (the causal table masks the positions not yet written)."""
    if attention_mask is None or not isinstance(past_key_values, StaticCache):
        return attention_mask
    attention_mask = tf.convert_to_tensor(attention_mask)
    missing = past_key_values.max_length - attention_mask.shape[-1]
    if missing < 0:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions, more than the cache's max_length "
            f"{past_key_values.max_length}"
        )
    return tf.pad(attention_mask, [(0, 0)] * (attention_mask.shape.rank - 1) + [(0, missing)], constant_values=1)


def pack_presents(presents: tuple | None, past_key_values: Any, seq_len: int | tf.Tensor) -> Any:
    """The `past_key_values` to return: the layers' presents, as a `StaticCache` advanced by T when one came in."""
    if presents is None or not isinstance(past_key_values, StaticCache):
        return presents
    return StaticCache(key_values=presents, index=past_key_values.index + seq_len)


# --------------------------------------------------------------------------------------------- inputs
def shape_list(x: tf.Tensor) -> list[int | tf.Tensor]:
    """The shape of `x` as a list: Python ints where the size is static, scalar tensors where it is not."""
    static = x.shape.as_list()
    if None not in static:
        return static
    dynamic = tf.shape(x)
    return [dynamic[i] if size is None else size for i, size in enumerate(static)]


def check_ids(ids: tf.Tensor, limit: int, name: str, limit_name: str) -> tf.Tensor:
    """Raise InputError (a ValueError) unless every entry of `ids` lies in [0, limit); returns `ids`.

    Eagerly the values are checked here; while tracing, assertions are added to the graph instead (they raise
    `InvalidArgumentError` with the same message when the function runs), and the returned tensor depends on them:
    a gather that reads it cannot run first and fail with its own message. XLA (`jit_compile=True`) drops graph
    assertions, so `fit` and `evaluate` check their data before it reaches the compiled step (`check_dataset`).
    """
    if tf.executing_eagerly():
        values = ids.numpy() if hasattr(ids, "numpy") else np.asarray(ids)
        if values.size:
            check_id_range(int(values.min()), int(values.max()), limit, name, limit_name)
        return ids
    checks = [
        tf.debugging.assert_non_negative(ids, message=f"{name} contains a negative id"),
        tf.debugging.assert_less(
            ids, tf.cast(limit, ids.dtype), message=f"{name} contains an id >= {limit_name}={limit}"
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(ids)


def check_inputs(
    input_ids: tf.Tensor | None, inputs_embeds: tf.Tensor | None, vocab_size: int
) -> list[int | tf.Tensor]:
    """Validate the token input and return its shape without the hidden axis ((B, T) or (B, C, T))."""
    check_model_inputs({"input_ids": input_ids, "inputs_embeds": inputs_embeds})
    if input_ids is not None and inputs_embeds is not None:
        raise InputError("You cannot specify both input_ids and inputs_embeds at the same time")
    if input_ids is not None:
        if input_ids.shape.rank is not None and input_ids.shape.rank < 2:
            raise InputError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating:
            raise InputError(f"input_ids must hold integer ids, got dtype {input_ids.dtype.name}")
        check_ids(input_ids, vocab_size, "input_ids", "vocab_size")
        return shape_list(input_ids)
    if inputs_embeds is not None:
        if inputs_embeds.shape.rank is not None and inputs_embeds.shape.rank < 3:
            raise InputError(f"inputs_embeds must be (batch, seq_len, hidden), got {tuple(inputs_embeds.shape)}")
        return shape_list(inputs_embeds)[:-1]
    raise InputError("You have to specify either input_ids or inputs_embeds")


def past_length(past_key_values: Sequence[tuple[tf.Tensor, tf.Tensor]] | None, num_layers: int) -> int | tf.Tensor:
    """Cached length S - T of `past_key_values`: a tuple of one (key, value) per layer, each (B, H, S, D),
    or a `StaticCache` (then its fill index, an int32 scalar tensor)."""
    if past_key_values is None:
        return 0
    if len(past_key_values) != num_layers:
        raise ValueError(f"past_key_values has {len(past_key_values)} entries, expected one per layer ({num_layers})")
    if isinstance(past_key_values, StaticCache):
        return past_key_values.index
    return shape_list(past_key_values[0][0])[-2]


def default_position_ids(past: int | tf.Tensor, seq_len: int | tf.Tensor, max_positions: int) -> tf.Tensor:
    """(1, T) consecutive positions after the cache (Hugging Face's default); ValueError past the table."""
    if isinstance(past, int) and isinstance(seq_len, int) and past + seq_len > max_positions:
        raise ValueError(
            f"sequence length {past + seq_len} (past_key_values {past} + input {seq_len}) exceeds the "
            f"model's maximum of {max_positions} positions (n_positions / max_position_embeddings)"
        )
    return (past + tf.range(seq_len))[None]  # not tf.range(past, ...): XLA needs the static length


def padding_mask(
    attention_mask: tf.Tensor | None, batch_size: int | tf.Tensor, key_len: int | tf.Tensor, name: str
) -> tf.Tensor | None:
    """(B, S) 0/1 `attention_mask` (1 = keep) → (B, 1, 1, S) bool, ValueError on a shape mismatch."""
    if attention_mask is None:
        return None
    check_mask_shape(static_shape(attention_mask), batch_size, key_len, name)
    return tf.cast(tf.reshape(attention_mask, (batch_size, 1, 1, key_len)), tf.bool)


def expand_head_mask(head_mask: tf.Tensor | None, num_layers: int, num_heads: int) -> list[tf.Tensor | None]:
    """(H,) or (L, H) head mask (1 keeps a head) → per layer a (1, H, 1, 1) multiplier (or None)."""
    if head_mask is None:
        return [None] * num_layers
    head_mask = tf.convert_to_tensor(head_mask)
    if head_mask.shape.rank == 1 and head_mask.shape[0] == num_heads:
        head_mask = tf.broadcast_to(head_mask[None], (num_layers, num_heads))
    if tuple(head_mask.shape) != (num_layers, num_heads):
        raise InputError(
            f"head_mask has shape {tuple(head_mask.shape)}, expected ({num_heads},) or ({num_layers}, {num_heads})"
        )
    return tf.unstack(head_mask[:, None, :, None, None])


# --------------------------------------------------------------------------------------------- losses
def _cross_entropy(logits: tf.Tensor, labels: tf.Tensor, ignore_index: int = -100) -> tf.Tensor:
    """Mean cross-entropy of (N, C) logits against (N,) labels over the labels that are not `ignore_index`
    (NaN when none counts, as PyTorch's `F.cross_entropy`)."""
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_index)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.where(valid, labels, 0), logits=tf.cast(logits, tf.float32)
    )  # (N,)
    valid = tf.cast(valid, tf.float32)
    return tf.reduce_sum(losses * valid) / tf.reduce_sum(valid)


def causal_lm_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Next-token cross-entropy: logits (..., T, V) at t predict labels (..., T) at t+1; -100 is ignored.
    Computed in float32 and averaged over the counted tokens."""
    check_labels_shape(static_shape(labels), static_shape(logits)[:-1])
    shift_logits = logits[..., :-1, :]
    shift_labels = labels[..., 1:]
    return _cross_entropy(tf.reshape(shift_logits, (-1, shape_list(logits)[-1])), tf.reshape(shift_labels, (-1,)))


def sequence_classification_loss(logits: tf.Tensor, labels: tf.Tensor, config: PretrainedConfig) -> tf.Tensor:
    """Loss of (B, num_labels) logits by `config.problem_type` (inferred as Hugging Face does when unset):
    regression → MSE, single_label_classification → cross-entropy, multi_label_classification → BCE."""
    num_labels = config.num_labels
    problem_type = config.problem_type
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype.is_integer:
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    check_sequence_labels_shape(static_shape(labels), static_shape(logits), problem_type)
    logits = tf.cast(logits, tf.float32)
    if problem_type == "regression":
        if num_labels == 1:
            return tf.reduce_mean(tf.square(tf.squeeze(logits) - tf.squeeze(tf.cast(labels, tf.float32))))
        return tf.reduce_mean(tf.square(logits - tf.cast(labels, tf.float32)))
    if problem_type == "single_label_classification":
        return _cross_entropy(tf.reshape(logits, (-1, num_labels)), tf.reshape(labels, (-1,)))
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32), logits=logits)
    )


def cross_entropy_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of (..., C) logits against (...) class ids, in float32; -100 is ignored (token
    classification, multiple choice)."""
    return _cross_entropy(tf.reshape(logits, (-1, shape_list(logits)[-1])), tf.reshape(labels, (-1,)))


def question_answering_loss(
    start_logits: tf.Tensor, end_logits: tf.Tensor, start_positions: tf.Tensor, end_positions: tf.Tensor
) -> tf.Tensor:
    """Mean of the start and end cross-entropies over (B, T) logits; positions outside the sequence are
    clamped to T and ignored."""
    ignored_index = shape_list(start_logits)[1]
    losses = []
    for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
        if positions.shape.rank > 1:
            positions = tf.squeeze(positions, -1)
        positions = tf.clip_by_value(tf.cast(positions, tf.int32), 0, ignored_index)
        losses.append(_cross_entropy(logits, positions, ignore_index=ignored_index))
    return (losses[0] + losses[1]) / 2


# --------------------------------------------------------------------------------------------- heads
def pool_last_token(
    logits: tf.Tensor, input_ids: tf.Tensor | None, pad_token_id: int | None, owner: str
) -> tf.Tensor:
    """Pick each row's logits at its last non-padding token.

    Args:
        logits: (B, T, C). input_ids: (B, T) or None (inputs_embeds were given).
        pad_token_id: the padding id, or None (then the last position is used, and batches > 1 are refused
            because padding could not be told apart). owner: the model class name, for messages.
    Returns:
        (B, C) pooled logits.
    """
    batch_size, seq_len = shape_list(logits)[:2]
    if pad_token_id is None and batch_size != 1:
        raise ValueError(f"{owner}: cannot handle batch sizes > 1 if no padding token is defined (pad_token_id)")
    if pad_token_id is None:
        last = tf.fill((batch_size,), seq_len - 1)
    elif input_ids is None:
        logger.warning(
            "%s will not detect padding tokens in `inputs_embeds`. Results may be unexpected if using padding "
            "tokens in conjunction with `inputs_embeds.`",
            owner,
        )
        last = tf.fill((batch_size,), seq_len - 1)
    else:
        # The rightmost non-pad token, so left- and right-padded rows both pool their last real token.
        positions = tf.range(seq_len)
        last = tf.argmax(tf.cast(input_ids != pad_token_id, tf.int32) * positions, axis=-1, output_type=tf.int32)
    return tf.gather(logits, last, batch_dims=1)


def init_normal(std: float) -> keras.initializers.Initializer:
    """N(0, std²) initializer (the PyTorch twin applies the same one in `_init_weights`)."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=std)
