"""PyTorch helpers shared by the three families; `lib/tf/ops.py` and `lib/flax/ops.py` have the same names.

Mask and rotary tables come from `twinformers.model_math`; this module only turns them into tensors and
applies them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
]


# --------------------------------------------------------------------------------------------- activations
def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, the tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`."""
    return F.gelu(x, approximate="tanh")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def linear(x: torch.Tensor) -> torch.Tensor:
    return x


ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": gelu_new,
    "gelu_fast": gelu_new,  # the same tanh formula, factored differently
    "gelu_pytorch_tanh": gelu_new,
    "quick_gelu": quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": linear,
}
assert set(ACT_FNS) == set(ACTIVATIONS), "ACT_FNS must cover configuration.ACTIVATIONS"


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called `name` (one of `configuration.ACTIVATIONS`)."""
    if name not in ACT_FNS:
        raise ValueError(f"activation_function {name!r} is not supported; choose one of {', '.join(ACT_FNS)}")
    return ACT_FNS[name]


# --------------------------------------------------------------------------------------------- layers
class Conv1D(nn.Module):
    """GPT-2's projection: `x @ weight + bias` with `weight` stored (in, out), as in Hugging Face checkpoints.

    Args:
        nf: output features. nx: input features.
    """

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., out)
        size_out = x.shape[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return x.view(size_out)


# --------------------------------------------------------------------------------------------- tables
@functools.cache
def causal_table(num_positions: int, window: int | None = None) -> torch.Tensor:
    """(1, 1, P, P) bool table of `model_math.causal_mask`, built once per size and shared by every layer
    (a CPU tensor even while a model is built on the meta device)."""
    return torch.from_numpy(causal_mask(num_positions, num_positions, window))[None, None]


@functools.cache
def rotary_table(num_positions: int, rotary_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-J's float32 (sin, cos) tables, each (P, rotary_dim // 2), from `model_math.rotary_tables`."""
    sin, cos = rotary_tables(num_positions, rotary_dim)
    return torch.from_numpy(sin), torch.from_numpy(cos)


def apply_rotary(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2k, 2k+1) of `x` by the angles behind `sin`/`cos` ("rotate every two").

    Args:
        x: (B, T, H, R) the rotary part of query or key heads.
        sin, cos: (B, T, 1, R/2) float32 tables gathered at the token positions.
    Returns:
        (B, T, H, R), in x's dtype.
    """
    x_float = x.float()
    x1, x2 = x_float[..., 0::2], x_float[..., 1::2]  # (B, T, H, R/2) each
    rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)  # (B, T, H, R/2, 2)
    return rotated.flatten(-2).to(x.dtype)


# --------------------------------------------------------------------------------------------- attention
def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # (B, T, H*D) -> (B, H, T, D)
    return x.view(x.shape[:-1] + (num_heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    # (B, H, T, D) -> (B, T, H*D)
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def masked_softmax(attn_weights: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over keys in float32, with positions where the boolean `mask` is False set to MASK_VALUE.

    Args:
        attn_weights: (B, H, T, S) scores. mask: bool, broadcastable to (B, H, T, S), True = may attend.
    Returns:
        (B, H, T, S) float32 probabilities.
    """
    attn_weights = attn_weights.float()
    if mask is not None:
        attn_weights = torch.where(mask, attn_weights, MASK_VALUE)
    return torch.softmax(attn_weights, dim=-1)


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    dropout: nn.Dropout,
    head_mask: torch.Tensor | None = None,
    upcast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out, returning the probabilities too.

    Args:
        query: (B, H, T, D). key, value: (B, H, S, D). mask: bool (B or 1, 1, T, S), True = may attend.
        scale: factor applied to the scores. head_mask: (1, H, 1, 1) multiplier of the probabilities.
        upcast: compute the scores in float32 (GPT-J, GPT-Neo, GPT-2's `reorder_and_upcast_attn`).
    Returns:
        attn_output (B, H, T, D) in value's dtype, attn_weights (B, H, T, S).
    """
    if upcast:
        query, key = query.float(), key.float()
    attn_weights = torch.matmul(query * scale, key.transpose(-1, -2))  # (B, H, T, S)
    # Softmax in float32, then back to the value dtype as the checkpoints' authors trained with.
    attn_weights = masked_softmax(attn_weights, mask).to(value.dtype)
    attn_weights = dropout(attn_weights)
    if head_mask is not None:
        attn_weights = attn_weights * head_mask
    attn_output = torch.matmul(attn_weights, value)  # (B, H, T, D)
    return attn_output, attn_weights


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    dropout: nn.Dropout,
    upcast: bool = False,
) -> torch.Tensor:
    """`torch.nn.functional.scaled_dot_product_attention` with the same explicit boolean mask as the eager
    path (so GPT-Neo's local window holds here too). Shapes as in `eager_attention`; returns attn_output."""
    dtype = value.dtype
    if upcast:
        query, key, value = query.float(), key.float(), value.float()
    dropout_p = dropout.p if dropout.training else 0.0
    attn_output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return attn_output.to(dtype)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    dropout: nn.Dropout,
    implementation: str,
    head_mask: torch.Tensor | None = None,
    output_attentions: bool = False,
    upcast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Dispatch to `sdpa_attention` or `eager_attention`; the eager path is used whenever probabilities are
    returned or heads are masked. Returns attn_output (B, H, T, D) and attn_weights (B, H, T, S) or None."""
    if implementation == "sdpa" and not output_attentions and head_mask is None:
        return sdpa_attention(query, key, value, mask, scale, dropout, upcast), None
    return eager_attention(query, key, value, mask, scale, dropout, head_mask, upcast)


# --------------------------------------------------------------------------------------------- cache
@dataclasses.dataclass
class StaticCache:
    """A pre-allocated key/value cache (from `init_cache`): fixed-size buffers written in place and a fill
    index, so decoding allocates nothing per step and every step has the same shapes.

    It reads like the tuple form of `past_key_values` (`len(cache)` layers, `cache[i]` = (key, value)).

    Attributes:
        key_values: per layer a (key, value) pair, each (B, H, M, D) with M the cache's max_length.
        index: how many positions are filled (the next token's slot).
    """

    key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    index: int

    def __len__(self) -> int:
        return len(self.key_values)

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key_values[layer]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.key_values)

    @property
    def max_length(self) -> int:
        return self.key_values[0][0].shape[-2]


def update_cache(
    layer_past: tuple[torch.Tensor, torch.Tensor] | None,
    key: torch.Tensor,
    value: torch.Tensor,
    cache_index: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append this step's (B, H, T, D) key and value to a layer's cache.

    The tuple form concatenates along S; a static cache (`cache_index` given) writes them into its
    buffers at `cache_index`, keeping the buffers' shape.
    """
    if layer_past is None:
        return key, value
    past_key, past_value = layer_past
    if cache_index is None:
        return torch.cat((past_key, key), dim=-2), torch.cat((past_value, value), dim=-2)
    query_len = key.shape[-2]
    past_key[:, :, cache_index : cache_index + query_len] = key
    past_value[:, :, cache_index : cache_index + query_len] = value
    return past_key, past_value


def causal_rows(bias: torch.Tensor, query_len: int, key_len: int, cache_index: int | None) -> torch.Tensor:
    """The rows of a (1, 1, P, P) causal table for the T queries against the first S keys: (1, 1, T, S).

    The queries are the last T of the S keys, or sit at `cache_index` in a static cache."""
    query_start = key_len - query_len if cache_index is None else cache_index
    return bias[:, :, query_start : query_start + query_len, :key_len]


def static_cache_index(past_key_values: Any) -> int | None:
    """A static cache's fill index (where this call's tokens are written), None for the tuple form."""
    return past_key_values.index if isinstance(past_key_values, StaticCache) else None


def cache_key_length(past_key_values: Any, past: int, seq_len: int) -> int:
    """S, the key length attention sees: past + T, or a static cache's max_length."""
    if isinstance(past_key_values, StaticCache):
        return past_key_values.max_length
    return past + seq_len


def static_padding(attention_mask: torch.Tensor | None, past_key_values: Any) -> torch.Tensor | None:
    """A static cache's attention mask may cover only the positions written so far: extend it with ones to
    the cache's max_length (the causal table masks the positions not yet written)."""
    if attention_mask is None or not isinstance(past_key_values, StaticCache):
        return attention_mask
    missing = past_key_values.max_length - attention_mask.shape[-1]
    if missing < 0:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions, more than the cache's max_length "
            f"{past_key_values.max_length}"
        )
    return F.pad(attention_mask, (0, missing), value=1) if missing else attention_mask


def pack_presents(presents: tuple | None, past_key_values: Any, seq_len: int) -> Any:
    """The `past_key_values` to return: the layers' presents, as a `StaticCache` advanced by T when one came in."""
    if presents is None or not isinstance(past_key_values, StaticCache):
        return presents
    return StaticCache(key_values=presents, index=past_key_values.index + seq_len)


# --------------------------------------------------------------------------------------------- inputs
def check_ids(ids: torch.Tensor, limit: int, name: str, limit_name: str) -> None:
    """Raise InputError (a ValueError) unless every entry of `ids` lies in [0, limit)."""
    if ids.numel() == 0 or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return  # values are unknown while a graph is traced (torch.compile, torch.export / ONNX)
    check_id_range(int(ids.min()), int(ids.max()), limit, name, limit_name)


def check_inputs(
    input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, vocab_size: int
) -> tuple[int, ...]:
    """Validate the token input and return its shape without the hidden axis ((B, T) or (B, C, T))."""
    check_model_inputs({"input_ids": input_ids, "inputs_embeds": inputs_embeds})
    if input_ids is not None and inputs_embeds is not None:
        raise InputError("You cannot specify both input_ids and inputs_embeds at the same time")
    if input_ids is not None:
        if input_ids.dim() < 2:
            raise InputError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point:
            raise InputError(f"input_ids must hold integer ids, got dtype {input_ids.dtype}")
        check_ids(input_ids, vocab_size, "input_ids", "vocab_size")
        return tuple(input_ids.shape)
    if inputs_embeds is not None:
        if inputs_embeds.dim() < 3:
            raise InputError(f"inputs_embeds must be (batch, seq_len, hidden), got {tuple(inputs_embeds.shape)}")
        return tuple(inputs_embeds.shape[:-1])
    raise InputError("You have to specify either input_ids or inputs_embeds")


def past_length(past_key_values: Sequence[tuple[torch.Tensor, torch.Tensor]] | None, num_layers: int) -> int:
    """Cached length S - T of `past_key_values`: a tuple of one (key, value) per layer, each (B, H, S, D),
    or a `StaticCache` (then its fill index)."""
    if past_key_values is None:
        return 0
    if len(past_key_values) != num_layers:
        raise ValueError(f"past_key_values has {len(past_key_values)} entries, expected one per layer ({num_layers})")
    if isinstance(past_key_values, StaticCache):
        return past_key_values.index
    return past_key_values[0][0].shape[-2]


def default_position_ids(past: int, seq_len: int, max_positions: int, device: torch.device) -> torch.Tensor:
    """(1, T) consecutive positions after the cache (Hugging Face's default); ValueError past the table."""
    if past + seq_len > max_positions:
        raise ValueError(
            f"sequence length {past + seq_len} (past_key_values {past} + input {seq_len}) exceeds the "
            f"model's maximum of {max_positions} positions (n_positions / max_position_embeddings)"
        )
    return torch.arange(past, past + seq_len, dtype=torch.long, device=device)[None]


def padding_mask(attention_mask: torch.Tensor | None, batch_size: int, key_len: int, name: str) -> torch.Tensor | None:
    """(B, S) 0/1 `attention_mask` (1 = keep) → (B, 1, 1, S) bool, ValueError on a shape mismatch."""
    if attention_mask is None:
        return None
    check_mask_shape(static_shape(attention_mask), batch_size, key_len, name)
    return attention_mask.reshape(batch_size, 1, 1, key_len).bool()


def expand_head_mask(head_mask: torch.Tensor | None, num_layers: int, num_heads: int) -> list[torch.Tensor | None]:
    """(H,) or (L, H) head mask (1 keeps a head) → per layer a (1, H, 1, 1) multiplier (or None)."""
    if head_mask is None:
        return [None] * num_layers
    if head_mask.dim() == 1 and head_mask.shape[0] == num_heads:
        head_mask = head_mask[None].expand(num_layers, num_heads)
    if tuple(head_mask.shape) != (num_layers, num_heads):
        raise InputError(
            f"head_mask has shape {tuple(head_mask.shape)}, expected ({num_heads},) or ({num_layers}, {num_heads})"
        )
    return list(head_mask[:, None, :, None, None])


# --------------------------------------------------------------------------------------------- losses
def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits (..., T, V) at t predict labels (..., T) at t+1; -100 is ignored.
    Computed in float32 and averaged over the counted tokens."""
    check_labels_shape(static_shape(labels), static_shape(logits)[:-1])
    shift_logits = logits[..., :-1, :].float()
    shift_labels = labels[..., 1:].to(logits.device)
    return F.cross_entropy(shift_logits.reshape(-1, logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
    """Loss of (B, num_labels) logits by `config.problem_type` (inferred as Hugging Face does when unset):
    regression → MSE, single_label_classification → cross-entropy, multi_label_classification → BCE."""
    num_labels = config.num_labels
    labels = labels.to(logits.device)
    problem_type = config.problem_type
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    check_sequence_labels_shape(static_shape(labels), static_shape(logits), problem_type)
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze().float(), labels.squeeze().float())
        return F.mse_loss(logits.float(), labels.float())
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.reshape(-1, num_labels).float(), labels.reshape(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32))


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (..., C) logits against (...) class ids, in float32; -100 is ignored (token
    classification, multiple choice)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.to(logits.device).reshape(-1))


def question_answering_loss(
    start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor, end_positions: torch.Tensor
) -> torch.Tensor:
    """Mean of the start and end cross-entropies over (B, T) logits; positions outside the sequence are
    clamped to T and ignored."""
    ignored_index = start_logits.shape[1]
    losses = []
    for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
        if positions.dim() > 1:
            positions = positions.squeeze(-1)
        positions = positions.to(logits.device).clamp(0, ignored_index)
        losses.append(F.cross_entropy(logits.float(), positions, ignore_index=ignored_index))
    return (losses[0] + losses[1]) / 2


# --------------------------------------------------------------------------------------------- heads
def pool_last_token(
    logits: torch.Tensor, input_ids: torch.Tensor | None, pad_token_id: int | None, owner: str
) -> torch.Tensor:
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
        last = torch.full((batch_size,), seq_len - 1, device=logits.device)
    elif input_ids is None:
        logger.warning(
            "%s will not detect padding tokens in `inputs_embeds`. Results may be unexpected if using padding "
            "tokens in conjunction with `inputs_embeds.`",
            owner,
        )
        last = torch.full((batch_size,), seq_len - 1, device=logits.device)
    else:
        # The rightmost non-pad token, so left- and right-padded rows both pool their last real token.
        positions = torch.arange(seq_len, device=logits.device)
        last = ((input_ids.to(logits.device) != pad_token_id).long() * positions).argmax(-1)
    return logits[torch.arange(batch_size, device=logits.device), last]


def numpy_view(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy array sharing `tensor`'s CPU memory (bfloat16 as `ml_dtypes.bfloat16`)."""
    if tensor.dtype == torch.bfloat16:
        from ..checkpoints.files import bfloat16_dtype

        return tensor.view(torch.int16).numpy().view(bfloat16_dtype())
    return tensor.numpy()


def from_numpy(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor over a copy of `array` (bfloat16 understood)."""
    array = np.array(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
