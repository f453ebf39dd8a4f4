"""GPT-Neo in Flax: the base model and its causal-LM, classification and QA heads.

Module and parameter names are Hugging Face's, so `model.params` is exactly the `flax_model.msgpack` tree.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..configuration import GPTNeoConfig
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
    split_heads,
    static_cache_index,
    static_padding,
    update_cache,
)

__all__ = [
    "GPTNeoSelfAttention",
    "GPTNeoAttention",
    "GPTNeoMLP",
    "GPTNeoBlock",
    "GPTNeoPreTrainedModel",
    "GPTNeoModel",
    "GPTNeoForCausalLM",
    "GPTNeoForSequenceClassification",
    "GPTNeoForTokenClassification",
    "GPTNeoForQuestionAnswering",
]

Array = jax.Array
PastKeyValues = Any  # tuple of one (key, value) per layer, or a StaticCache


class GPTNeoSelfAttention(nnx.Module):
    """Multi-head self-attention, global or local (each query sees only the last `window_size` positions)."""

    def __init__(self, config: GPTNeoConfig, attention_type: str, *, dtype: Any = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        self.config = config
        self.attention_type = attention_type
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = self.embed_dim // self.num_heads
        init = init_normal(config.initializer_range)
        layer_args = dict(kernel_init=init, dtype=dtype, rngs=rngs)
        # Declared k, v, q as in Hugging Face: the params' order decides how checkpoints are sharded.
        self.k_proj = nnx.Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.v_proj = nnx.Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.q_proj = nnx.Linear(self.embed_dim, self.embed_dim, use_bias=False, **layer_args)
        self.out_proj = nnx.Linear(self.embed_dim, self.embed_dim, use_bias=True, **layer_args)
        self.attn_dropout = nnx.Dropout(config.attention_dropout, rngs=rngs)
        self.resid_dropout = nnx.Dropout(config.resid_dropout, rngs=rngs)

    @property
    def bias(self) -> np.ndarray:
        """Hugging Face's name for the causal table (with the local window); a constant, not state."""
        window = self.config.window_size if self.attention_type == "local" else None
        return causal_table(self.config.max_position_embeddings, window)

    def __call__(
        self,
        hidden_states: Array,
        layer_past: tuple[Array, Array] | None = None,
        attention_mask: Array | None = None,
        head_mask: Array | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Array | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None, Array | None]:
        """hidden_states (B, T, H*D); attention_mask (B, 1, 1, S) bool → (B, T, H*D), present, attn_weights."""
        query = split_heads(self.q_proj(hidden_states), self.num_heads)  # (B, T, H*D) -> (B, H, T, D)
        key = split_heads(self.k_proj(hidden_states), self.num_heads)
        value = split_heads(self.v_proj(hidden_states), self.num_heads)

        if layer_past is not None:
            key, value = update_cache(layer_past, key, value, cache_index)
        present = (key, value) if use_cache else None
        query_len, key_len = query.shape[-2], key.shape[-2]
        # The local window is part of the table, so it holds in the eager and the sdpa path alike.
        mask = causal_rows(self.bias, query_len, key_len, cache_index)  # (1, 1, T, S)
        if attention_mask is not None:
            mask = mask & attention_mask

        # GPT-Neo has no 1/sqrt(D) scale; scores in float32, as the checkpoints were trained.
        attn_output, attn_weights = attention(
            query, key, value, mask, 1.0, self.attn_dropout, self.config._attn_implementation,
            head_mask, output_attentions, upcast=True,
        )
        attn_output = merge_heads(attn_output)  # (B, H, T, D) -> (B, T, H*D)
        attn_output = self.resid_dropout(self.out_proj(attn_output))
        return attn_output, present, attn_weights


class GPTNeoAttention(nnx.Module):
    """Picks the layer's attention type from `config.attention_layers` (Hugging Face's extra nesting level)."""

    def __init__(self, config: GPTNeoConfig, layer_id: int = 0, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.attention_type = config.attention_layers[layer_id]
        self.attention = GPTNeoSelfAttention(config, self.attention_type, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        hidden_states: Array,
        layer_past: tuple[Array, Array] | None = None,
        attention_mask: Array | None = None,
        head_mask: Array | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Array | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None, Array | None]:
        return self.attention(
            hidden_states, layer_past, attention_mask, head_mask, use_cache, output_attentions, cache_index,
        )


class GPTNeoMLP(nnx.Module):
    def __init__(self, intermediate_size: int, config: GPTNeoConfig, *, dtype: Any = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        init = init_normal(config.initializer_range)
        self.c_fc = nnx.Linear(config.hidden_size, intermediate_size, kernel_init=init, dtype=dtype, rngs=rngs)
        self.c_proj = nnx.Linear(intermediate_size, config.hidden_size, kernel_init=init, dtype=dtype, rngs=rngs)
        self.act = get_activation(config.activation_function)
        self.dropout = nnx.Dropout(config.resid_dropout, rngs=rngs)

    def __call__(self, hidden_states: Array) -> Array:
        hidden_states = self.act(self.c_fc(hidden_states))
        return self.dropout(self.c_proj(hidden_states))


class GPTNeoBlock(nnx.Module):
    """Pre-LayerNorm block: attention, then MLP, each added to the residual."""

    def __init__(self, config: GPTNeoConfig, layer_id: int = 0, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        hidden_size = config.hidden_size
        inner_dim = config.intermediate_size if config.intermediate_size is not None else 4 * hidden_size
        self.ln_1 = nnx.LayerNorm(hidden_size, epsilon=config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
        self.attn = GPTNeoAttention(config, layer_id, dtype=dtype, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(hidden_size, epsilon=config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
        self.mlp = GPTNeoMLP(inner_dim, config, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        hidden_states: Array,
        layer_past: tuple[Array, Array] | None = None,
        attention_mask: Array | None = None,
        head_mask: Array | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Array | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None, Array | None]:
        """Returns hidden_states (B, T, H*D), present, attn_weights."""
        residual = hidden_states
        attn_output, present, attn_weights = self.attn(
            self.ln_1(hidden_states), layer_past, attention_mask, head_mask, use_cache, output_attentions,
            cache_index,
        )
        hidden_states = residual + attn_output
        residual = hidden_states
        hidden_states = residual + self.mlp(self.ln_2(hidden_states))
        return hidden_states, present, attn_weights


class GPTNeoPreTrainedModel(PreTrainedModel):
    config_class = GPTNeoConfig


class GPTNeoModelModule(nnx.Module):
    """The bare GPT-Neo transformer: token + position embeddings, `num_layers` blocks, final LayerNorm."""

    def __init__(self, config: GPTNeoConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.embed_dim = config.hidden_size
        embedding_init = init_normal(config.initializer_range)
        self.wte = nnx.Embed(config.vocab_size, self.embed_dim, embedding_init=embedding_init, dtype=dtype, rngs=rngs)
        self.wpe = nnx.Embed(
            config.max_position_embeddings, self.embed_dim, embedding_init=embedding_init, dtype=dtype, rngs=rngs
        )
        self.drop = nnx.Dropout(config.embed_dropout, rngs=rngs)
        self.h = ModuleList(
            [GPTNeoBlock(config, layer_id=i, dtype=dtype, rngs=rngs) for i in range(config.num_layers)]
        )
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
            token_type_ids, position_ids: (B, T); token types are embedded with `wte`, positions default to
                consecutive ids after the cache.
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
        past = past_length(past_key_values, config.num_layers)
        cache_index = static_cache_index(past_key_values)
        if position_ids is None:
            position_ids = default_position_ids(past, seq_len, config.max_position_embeddings)
        else:
            default_position_ids(past, seq_len, config.max_position_embeddings)  # the same length check
            check_ids(position_ids, config.max_position_embeddings, "position_ids", "max_position_embeddings")
            position_ids = position_ids.reshape(-1, seq_len)

        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids.reshape(-1, seq_len))
        inputs_embeds = inputs_embeds.reshape(batch_size, seq_len, self.embed_dim)
        hidden_states = inputs_embeds + self.wpe(position_ids)
        if token_type_ids is not None:
            check_ids(token_type_ids, config.vocab_size, "token_type_ids", "vocab_size")
            hidden_states = hidden_states + self.wte(token_type_ids.reshape(-1, seq_len))
        hidden_states = self.drop(hidden_states)

        attention_mask = static_padding(attention_mask, past_key_values)
        key_len = cache_key_length(past_key_values, past, seq_len)
        attention_mask = padding_mask(attention_mask, batch_size, key_len, "attention_mask")
        head_masks = expand_head_mask(head_mask, config.num_layers, config.num_heads)

        output_shape = (*input_shape, self.embed_dim)
        presents = () if use_cache else None
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, block in enumerate(self.h):
            if output_hidden_states:
                all_hidden_states += (hidden_states.reshape(output_shape),)
            layer_past = past_key_values[i] if past_key_values is not None else None
            hidden_states, present, attn_weights = block(
                hidden_states, layer_past, attention_mask, head_masks[i], use_cache, output_attentions, cache_index,
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


class GPTNeoModel(GPTNeoPreTrainedModel):
    """The bare GPT-Neo transformer: token + position embeddings, `num_layers` blocks, final LayerNorm."""

    module_class = GPTNeoModelModule


class GPTNeoForCausalLMModule(nnx.Module):
    """GPT-Neo with a language-modeling head tied to the token embedding (unless `tie_word_embeddings` is off)."""

    def __init__(self, config: GPTNeoConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.transformer = GPTNeoModelModule(config, dtype=dtype, rngs=rngs)
        self.lm_head = None if config.tie_word_embeddings else nnx.Linear(
            config.hidden_size, config.vocab_size, use_bias=False, kernel_init=init_normal(config.initializer_range),
            dtype=dtype, rngs=rngs,
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
        """As `GPTNeoModelModule.__call__`, plus `labels` (B, T): next-token targets, shifted inside; -100 is
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


class GPTNeoForCausalLM(GPTNeoPreTrainedModel):
    """GPT-Neo with a language-modeling head tied to the token embedding (unless `tie_word_embeddings` is off)."""

    module_class = GPTNeoForCausalLMModule
    _is_generative = True


class GPTNeoForSequenceClassificationModule(ModelForSequenceClassificationModule):
    """GPT-Neo with a bias-free linear `score` head on the last non-padding token."""

    base_model_class = GPTNeoModelModule


class GPTNeoForSequenceClassification(GPTNeoPreTrainedModel):
    """GPT-Neo with a bias-free linear `score` head on the last non-padding token."""

    module_class = GPTNeoForSequenceClassificationModule


class GPTNeoForTokenClassificationModule(ModelForTokenClassificationModule):
    """GPT-Neo with dropout and a linear `classifier` on every token."""

    base_model_class = GPTNeoModelModule


class GPTNeoForTokenClassification(GPTNeoPreTrainedModel):
    """GPT-Neo with dropout and a linear `classifier` on every token."""

    module_class = GPTNeoForTokenClassificationModule


class GPTNeoForQuestionAnsweringModule(ModelForQuestionAnsweringModule):
    """GPT-Neo with a linear `qa_outputs` head giving span start and end scores per token."""

    base_model_class = GPTNeoModelModule


class GPTNeoForQuestionAnswering(GPTNeoPreTrainedModel):
    """GPT-Neo with a linear `qa_outputs` head giving span start and end scores per token."""

    module_class = GPTNeoForQuestionAnsweringModule
