"""GPT-J in Flax: the base model and its causal-LM, classification and QA heads.

Module and parameter names are Hugging Face's, so `model.params` is exactly the `flax_model.msgpack` tree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..configuration import GPTJConfig
from .heads import (
    Attention,
    DecoderModel,
    ModelForCausalLM,
    ModelForQuestionAnswering,
    ModelForSequenceClassification,
    ModelForTokenClassification,
)
from .modeling_utils import PreTrainedModel
from .ops import (
    Linear,
    apply_rotary,
    get_activation,
    init_normal,
    rotary_table,
)

__all__ = [
    "GPTJAttention",
    "GPTJMLP",
    "GPTJBlock",
    "GPTJPreTrainedModel",
    "GPTJModel",
    "GPTJForCausalLM",
    "GPTJForSequenceClassification",
    "GPTJForTokenClassification",
    "GPTJForQuestionAnswering",
]

Tensor = jax.Array  # the twins' name for the framework's array type (torch.Tensor, tf.Tensor)
PastKeyValues = Any  # tuple of one (key, value) per layer, or a StaticCache


class GPTJAttention(Attention):
    """Multi-head self-attention with rotary position embeddings on the first `rotary_dim` dims of each head."""

    def __init__(self, config: GPTJConfig, layer_idx: int = 0, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        self.rotary_dim = config.rotary_dim or self.head_dim
        self.scale = self.head_dim**-0.5
        layer_args = dict(kernel_init=init_normal(config.initializer_range), dtype=dtype, rngs=rngs)
        # Declared k, v, q as in Hugging Face: the params' order decides how checkpoints are sharded.
        self.k_proj = Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.v_proj = Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.q_proj = Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.out_proj = Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.attn_dropout = nnx.Dropout(config.attn_pdrop, rngs=rngs)
        self.resid_dropout = nnx.Dropout(config.resid_pdrop, rngs=rngs)
        self.register_causal_table(config.n_positions)

    def __call__(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """hidden_states (B, T, H*D); attention_mask (B, 1, 1, S) bool; position_ids (B or 1, T) →
        (B, T, H*D), present, attn_weights."""
        batch_size, query_len = hidden_states.shape[:2]
        # (B, T, H*D) -> (B, T, H, D): the rotation is applied per head before the heads move forward
        query = self.q_proj(hidden_states).reshape(batch_size, query_len, self.num_heads, self.head_dim)
        key = self.k_proj(hidden_states).reshape(batch_size, query_len, self.num_heads, self.head_dim)
        value = self.v_proj(hidden_states).reshape(batch_size, query_len, self.num_heads, self.head_dim)

        # Rotary only on the first `rotary_dim` dims of each head; the rest pass through.
        # NumPy constants, not state: float32 whatever the computation dtype.
        rotary_sin, rotary_cos = rotary_table(self.config.n_positions, self.rotary_dim)
        sin = jnp.asarray(rotary_sin)[position_ids][:, :, None, :]  # (B, T, 1, R/2)
        cos = jnp.asarray(rotary_cos)[position_ids][:, :, None, :]
        query = jnp.concatenate(
            (apply_rotary(query[..., : self.rotary_dim], sin, cos), query[..., self.rotary_dim :]), -1
        )
        key = jnp.concatenate((apply_rotary(key[..., : self.rotary_dim], sin, cos), key[..., self.rotary_dim :]), -1)
        query, key, value = (x.transpose(0, 2, 1, 3) for x in (query, key, value))  # -> (B, H, T, D)

        # Scores in float32, as the checkpoints were trained.
        attn_output, present, attn_weights = self.attend(
            query, key, value, layer_past, attention_mask, head_mask, use_cache, output_attentions, cache_index,
            upcast=True,
        )
        attn_output = self.resid_dropout(self.out_proj(attn_output))
        return attn_output, present, attn_weights


class GPTJMLP(nnx.Module):
    def __init__(self, intermediate_size: int, config: GPTJConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        init = init_normal(config.initializer_range)
        self.fc_in = Linear(config.n_embd, intermediate_size, kernel_init=init, dtype=dtype, rngs=rngs)
        self.fc_out = Linear(intermediate_size, config.n_embd, kernel_init=init, dtype=dtype, rngs=rngs)
        self.act = get_activation(config.activation_function)
        self.dropout = nnx.Dropout(config.resid_pdrop, rngs=rngs)

    def __call__(self, hidden_states: Tensor) -> Tensor:
        hidden_states = self.act(self.fc_in(hidden_states))
        return self.dropout(self.fc_out(hidden_states))


class GPTJBlock(nnx.Module):
    """Parallel block: attention and MLP both read `ln_1(x)` and are added to the residual together."""

    def __init__(self, config: GPTJConfig, layer_idx: int = 0, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        inner_dim = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = nnx.LayerNorm(config.n_embd, epsilon=config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
        self.attn = GPTJAttention(config, layer_idx, dtype=dtype, rngs=rngs)
        self.mlp = GPTJMLP(inner_dim, config, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """Returns hidden_states (B, T, H*D), present, attn_weights."""
        residual = hidden_states
        hidden_states = self.ln_1(hidden_states)
        attn_output, present, attn_weights = self.attn(
            hidden_states, layer_past, attention_mask, position_ids, head_mask, use_cache, output_attentions,
            cache_index,
        )
        hidden_states = attn_output + self.mlp(hidden_states) + residual
        return hidden_states, present, attn_weights


class GPTJPreTrainedModel(PreTrainedModel):
    config_class = GPTJConfig


class GPTJModel(DecoderModel, GPTJPreTrainedModel):
    """The bare GPT-J transformer: token embedding (no position table), `n_layer` blocks, final LayerNorm."""

    block_class = GPTJBlock
    # The positions pick the rotary angles inside each block.
    block_arguments = (
        "layer_past", "attention_mask", "position_ids", "head_mask", "use_cache", "output_attentions", "cache_index",
    )
    position_embeddings = False


class GPTJForCausalLM(ModelForCausalLM, GPTJPreTrainedModel):
    """GPT-J with a language-modeling head: its own matrix and bias unless `tie_word_embeddings`."""

    base_model_class = GPTJModel
    lm_head_bias = True


class GPTJForSequenceClassification(ModelForSequenceClassification, GPTJPreTrainedModel):
    """GPT-J with a bias-free linear `score` head on the last non-padding token."""

    base_model_class = GPTJModel


class GPTJForTokenClassification(ModelForTokenClassification, GPTJPreTrainedModel):
    """GPT-J with dropout and a linear `classifier` on every token (Hugging Face has no such class)."""

    base_model_class = GPTJModel


class GPTJForQuestionAnswering(ModelForQuestionAnswering, GPTJPreTrainedModel):
    """GPT-J with a linear `qa_outputs` head (`num_labels` outputs, as Hugging Face) giving span scores."""

    base_model_class = GPTJModel
    qa_outputs_from_num_labels = True
