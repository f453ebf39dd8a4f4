"""GPT-J in Flax: the base model and its causal-LM, classification and QA heads.

Module and parameter names are Hugging Face's, so `model.params` is exactly the `flax_model.msgpack` tree.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..configuration import GPTJConfig
from ..outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)
from .heads import (
    ModelForQuestionAnsweringModule,
    ModelForSequenceClassificationModule,
    ModelForTokenClassificationModule,
)
from .modeling_utils import PreTrainedModel
from .ops import (
    ModuleList,
    apply_rotary,
    attention,
    cache_key_length,
    causal_lm_loss,
    causal_rows,
    causal_table,
    check_ids,
    check_inputs,
    default_position_ids,
    expand_head_mask,
    get_activation,
    init_normal,
    lm_head_logits,
    merge_heads,
    pack_presents,
    padding_mask,
    past_length,
    rotary_table,
    static_cache_index,
    static_padding,
    update_cache,
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

Array = jax.Array
PastKeyValues = Any  # tuple of one (key, value) per layer, or a StaticCache


class GPTJAttention(nnx.Module):
    """Multi-head self-attention with rotary position embeddings on the first `rotary_dim` dims of each head."""

    def __init__(self, config: GPTJConfig, layer_idx: int = 0, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        self.rotary_dim = config.rotary_dim or self.head_dim
        self.scale = self.head_dim**-0.5
        init = init_normal(config.initializer_range)
        layer_args = dict(kernel_init=init, dtype=dtype, rngs=rngs)
        # Declared k, v, q as in Hugging Face: the params' order decides how checkpoints are sharded.
        self.k_proj = nnx.Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.v_proj = nnx.Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.q_proj = nnx.Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.out_proj = nnx.Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.attn_dropout = nnx.Dropout(config.attn_pdrop, rngs=rngs)
        self.resid_dropout = nnx.Dropout(config.resid_pdrop, rngs=rngs)

    @property
    def bias(self) -> np.ndarray:
        """Hugging Face's name for the causal table; a constant, not state."""
        return causal_table(self.config.n_positions)

    @property
    def rotary_sin_cos(self) -> tuple[np.ndarray, np.ndarray]:
        """NumPy constants, not state: float32 whatever the computation dtype."""
        return rotary_table(self.config.n_positions, self.rotary_dim)

    def __call__(
        self,
        hidden_states: Array,
        layer_past: tuple[Array, Array] | None = None,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        head_mask: Array | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Array | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None, Array | None]:
        """hidden_states (B, T, H*D); attention_mask (B, 1, 1, S) bool; position_ids (B or 1, T) →
        (B, T, H*D), present, attn_weights."""
        batch_size, query_len = hidden_states.shape[:2]
        # (B, T, H*D) -> (B, T, H, D): the rotation is applied per head before the heads move forward
        query = self.q_proj(hidden_states).reshape(batch_size, query_len, self.num_heads, self.head_dim)
        key = self.k_proj(hidden_states).reshape(batch_size, query_len, self.num_heads, self.head_dim)
        value = self.v_proj(hidden_states).reshape(batch_size, query_len, self.num_heads, self.head_dim)

        # Rotary only on the first `rotary_dim` dims of each head; the rest pass through.
        rotary_sin, rotary_cos = self.rotary_sin_cos
        sin = jnp.asarray(rotary_sin)[position_ids][:, :, None, :]  # (B, T, 1, R/2)
        cos = jnp.asarray(rotary_cos)[position_ids][:, :, None, :]
        query = jnp.concatenate(
            (apply_rotary(query[..., : self.rotary_dim], sin, cos), query[..., self.rotary_dim :]), -1
        )
        key = jnp.concatenate((apply_rotary(key[..., : self.rotary_dim], sin, cos), key[..., self.rotary_dim :]), -1)
        query, key, value = (x.transpose(0, 2, 1, 3) for x in (query, key, value))  # -> (B, H, T, D)

        if layer_past is not None:
            key, value = update_cache(layer_past, key, value, cache_index)
        present = (key, value) if use_cache else None
        key_len = key.shape[-2]
        mask = causal_rows(self.bias, query_len, key_len, cache_index)  # (1, 1, T, S)
        if attention_mask is not None:
            mask = mask & attention_mask

        # Scores in float32, as the checkpoints were trained.
        attn_output, attn_weights = attention(
            query, key, value, mask, self.scale, self.attn_dropout, self.config._attn_implementation,
            head_mask, output_attentions, upcast=True,
        )
        attn_output = merge_heads(attn_output)  # (B, H, T, D) -> (B, T, H*D)
        attn_output = self.resid_dropout(self.out_proj(attn_output))
        return attn_output, present, attn_weights


class GPTJMLP(nnx.Module):
    def __init__(self, intermediate_size: int, config: GPTJConfig, *, dtype: Any = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        init = init_normal(config.initializer_range)
        self.fc_in = nnx.Linear(config.n_embd, intermediate_size, kernel_init=init, dtype=dtype, rngs=rngs)
        self.fc_out = nnx.Linear(intermediate_size, config.n_embd, kernel_init=init, dtype=dtype, rngs=rngs)
        self.act = get_activation(config.activation_function)
        self.dropout = nnx.Dropout(config.resid_pdrop, rngs=rngs)

    def __call__(self, hidden_states: Array) -> Array:
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
        hidden_states: Array,
        layer_past: tuple[Array, Array] | None = None,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        head_mask: Array | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Array | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None, Array | None]:
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


class GPTJModelModule(nnx.Module):
    """The bare GPT-J transformer: token embedding (no position table), `n_layer` blocks, final LayerNorm."""

    def __init__(self, config: GPTJConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.embed_dim = config.n_embd
        self.wte = nnx.Embed(
            config.vocab_size, self.embed_dim, embedding_init=init_normal(config.initializer_range), dtype=dtype,
            rngs=rngs,
        )
        self.drop = nnx.Dropout(config.embd_pdrop, rngs=rngs)
        self.h = ModuleList([GPTJBlock(config, layer_idx=i, dtype=dtype, rngs=rngs) for i in range(config.n_layer)])
        self.ln_f = nnx.LayerNorm(self.embed_dim, epsilon=config.layer_norm_epsilon, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        input_ids: Array | None = None,
        past_key_values: PastKeyValues | None = None,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        head_mask: Array | None = None,
        inputs_embeds: Array | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPast | tuple:
        """Args:
            input_ids: (B, T) int token ids. inputs_embeds: (B, T, H*D) instead of input_ids.
            past_key_values: per layer (key, value), each (B, H, S - T, D); or a `StaticCache`.
            attention_mask: (B, S) 1 = attend, 0 = padding, covering past and current tokens (with a static
                cache: up to its max_length).
            token_type_ids, position_ids: (B, T); token types are embedded with `wte`, positions (which pick
                the rotary angles) default to consecutive ids after the cache.
            head_mask: (H,) or (L, H), 1 keeps a head.
        """
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        use_cache = config.use_cache if use_cache is None else use_cache
        return_dict = config.use_return_dict if return_dict is None else return_dict

        input_shape = check_inputs(input_ids, inputs_embeds, config.vocab_size)
        seq_len = input_shape[-1]
        batch_size = math.prod(input_shape[:-1])
        past = past_length(past_key_values, config.n_layer)
        cache_index = static_cache_index(past_key_values)
        if position_ids is None:
            position_ids = default_position_ids(past, seq_len, config.n_positions)
        else:
            default_position_ids(past, seq_len, config.n_positions)  # the same length check
            check_ids(position_ids, config.n_positions, "position_ids", "n_positions")
            position_ids = position_ids.reshape(-1, seq_len)

        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids.reshape(-1, seq_len))
        hidden_states = inputs_embeds.reshape(batch_size, seq_len, self.embed_dim)
        if token_type_ids is not None:
            check_ids(token_type_ids, config.vocab_size, "token_type_ids", "vocab_size")
            hidden_states = hidden_states + self.wte(token_type_ids.reshape(-1, seq_len))
        hidden_states = self.drop(hidden_states)

        attention_mask = static_padding(attention_mask, past_key_values)
        key_len = cache_key_length(past_key_values, past, seq_len)
        attention_mask = padding_mask(attention_mask, batch_size, key_len, "attention_mask")
        head_masks = expand_head_mask(head_mask, config.n_layer, config.n_head)

        output_shape = (*input_shape, self.embed_dim)
        presents = () if use_cache else None
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, block in enumerate(self.h):
            if output_hidden_states:
                all_hidden_states += (hidden_states.reshape(output_shape),)
            layer_past = past_key_values[i] if past_key_values is not None else None
            hidden_states, present, attn_weights = block(
                hidden_states, layer_past, attention_mask, position_ids, head_masks[i], use_cache, output_attentions,
                cache_index,
            )
            if use_cache:
                presents += (present,)
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = self.ln_f(hidden_states).reshape(output_shape)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=pack_presents(presents, past_key_values, seq_len),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()


class GPTJModel(GPTJPreTrainedModel):
    """The bare GPT-J transformer: token embedding (no position table), `n_layer` blocks, final LayerNorm."""

    module_class = GPTJModelModule


class GPTJForCausalLMModule(nnx.Module):
    """GPT-J with a language-modeling head: its own matrix and bias unless `tie_word_embeddings`."""

    def __init__(self, config: GPTJConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.transformer = GPTJModelModule(config, dtype=dtype, rngs=rngs)
        self.lm_head = None if config.tie_word_embeddings else nnx.Linear(
            config.n_embd, config.vocab_size, kernel_init=init_normal(config.initializer_range), dtype=dtype,
            rngs=rngs,
        )

    def __call__(
        self,
        input_ids: Array | None = None,
        past_key_values: PastKeyValues | None = None,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        head_mask: Array | None = None,
        inputs_embeds: Array | None = None,
        labels: Array | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        """As `GPTJModelModule.__call__`, plus `labels` (B, T): next-token targets, shifted inside; -100 is
        ignored. Returns logits (B, T, V)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache, output_attentions, output_hidden_states, return_dict=True,
        )
        logits = lm_head_logits(self.lm_head, self.transformer.wte, transformer_outputs.last_hidden_state)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=transformer_outputs.past_key_values,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class GPTJForCausalLM(GPTJPreTrainedModel):
    """GPT-J with a language-modeling head: its own matrix and bias unless `tie_word_embeddings`."""

    module_class = GPTJForCausalLMModule
    _is_generative = True


class GPTJForSequenceClassificationModule(ModelForSequenceClassificationModule):
    """GPT-J with a bias-free linear `score` head on the last non-padding token."""

    base_model_class = GPTJModelModule


class GPTJForSequenceClassification(GPTJPreTrainedModel):
    """GPT-J with a bias-free linear `score` head on the last non-padding token."""

    module_class = GPTJForSequenceClassificationModule


class GPTJForTokenClassificationModule(ModelForTokenClassificationModule):
    """GPT-J with dropout and a linear `classifier` on every token (Hugging Face has no such class)."""

    base_model_class = GPTJModelModule


class GPTJForTokenClassification(GPTJPreTrainedModel):
    """GPT-J with dropout and a linear `classifier` on every token (Hugging Face has no such class)."""

    module_class = GPTJForTokenClassificationModule


class GPTJForQuestionAnsweringModule(ModelForQuestionAnsweringModule):
    """GPT-J with a linear `qa_outputs` head (`num_labels` outputs, as Hugging Face) giving span scores."""

    base_model_class = GPTJModelModule
    qa_outputs_from_num_labels = True


class GPTJForQuestionAnswering(GPTJPreTrainedModel):
    """GPT-J with a linear `qa_outputs` head (`num_labels` outputs, as Hugging Face) giving span scores."""

    module_class = GPTJForQuestionAnsweringModule
