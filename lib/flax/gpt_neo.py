"""GPT-Neo in Flax: the base model and its causal-LM, classification and QA heads.

Module and parameter names are Hugging Face's, so `model.params` is exactly the `flax_model.msgpack` tree.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..configuration import GPTNeoConfig
from ..outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
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
    classifier_dropout,
    cross_entropy_loss,
    default_position_ids,
    expand_head_mask,
    get_activation,
    init_normal,
    lm_head_logits,
    merge_heads,
    pack_presents,
    padding_mask,
    past_length,
    pool_last_token,
    question_answering_loss,
    sequence_classification_loss,
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


class GPTNeoSelfAttention(nn.Module):
    """Multi-head self-attention, global or local (each query sees only the last `window_size` positions)."""

    config: GPTNeoConfig
    attention_type: str
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = self.embed_dim // self.num_heads
        init = init_normal(config.initializer_range)
        # Declared k, v, q as in Hugging Face: the params' order decides how checkpoints are sharded.
        self.k_proj = nn.Dense(self.embed_dim, use_bias=False, kernel_init=init, dtype=self.dtype)
        self.v_proj = nn.Dense(self.embed_dim, use_bias=False, kernel_init=init, dtype=self.dtype)
        self.q_proj = nn.Dense(self.embed_dim, use_bias=False, kernel_init=init, dtype=self.dtype)
        self.out_proj = nn.Dense(self.embed_dim, use_bias=True, kernel_init=init, dtype=self.dtype)
        self.attn_dropout = nn.Dropout(config.attention_dropout)
        self.resid_dropout = nn.Dropout(config.resid_dropout)
        window = config.window_size if self.attention_type == "local" else None
        self.bias = causal_table(config.max_position_embeddings, window)

    def __call__(
        self,
        hidden_states: Array,
        layer_past: tuple[Array, Array] | None = None,
        attention_mask: Array | None = None,
        head_mask: Array | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Array | None = None,
        deterministic: bool = True,
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
            query, key, value, mask, 1.0, self.attn_dropout, self.config._attn_implementation, deterministic,
            head_mask, output_attentions, upcast=True,
        )
        attn_output = merge_heads(attn_output)  # (B, H, T, D) -> (B, T, H*D)
        attn_output = self.resid_dropout(self.out_proj(attn_output), deterministic=deterministic)
        return attn_output, present, attn_weights


class GPTNeoAttention(nn.Module):
    """Picks the layer's attention type from `config.attention_layers` (Hugging Face's extra nesting level)."""

    config: GPTNeoConfig
    layer_id: int = 0
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.attention_type = self.config.attention_layers[self.layer_id]
        self.attention = GPTNeoSelfAttention(self.config, self.attention_type, dtype=self.dtype)

    def __call__(
        self,
        hidden_states: Array,
        layer_past: tuple[Array, Array] | None = None,
        attention_mask: Array | None = None,
        head_mask: Array | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, tuple[Array, Array] | None, Array | None]:
        return self.attention(
            hidden_states, layer_past, attention_mask, head_mask, use_cache, output_attentions, cache_index,
            deterministic,
        )


class GPTNeoMLP(nn.Module):
    intermediate_size: int
    config: GPTNeoConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        init = init_normal(config.initializer_range)
        self.c_fc = nn.Dense(self.intermediate_size, kernel_init=init, dtype=self.dtype)
        self.c_proj = nn.Dense(config.hidden_size, kernel_init=init, dtype=self.dtype)
        self.act = get_activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_dropout)

    def __call__(self, hidden_states: Array, deterministic: bool = True) -> Array:
        hidden_states = self.act(self.c_fc(hidden_states))
        return self.dropout(self.c_proj(hidden_states), deterministic=deterministic)


class GPTNeoBlock(nn.Module):
    """Pre-LayerNorm block: attention, then MLP, each added to the residual."""

    config: GPTNeoConfig
    layer_id: int = 0
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        inner_dim = config.intermediate_size if config.intermediate_size is not None else 4 * config.hidden_size
        self.ln_1 = nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=self.dtype)
        self.attn = GPTNeoAttention(config, self.layer_id, dtype=self.dtype)
        self.ln_2 = nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=self.dtype)
        self.mlp = GPTNeoMLP(inner_dim, config, dtype=self.dtype)

    def __call__(
        self,
        hidden_states: Array,
        layer_past: tuple[Array, Array] | None = None,
        attention_mask: Array | None = None,
        head_mask: Array | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, tuple[Array, Array] | None, Array | None]:
        """Returns hidden_states (B, T, H*D), present, attn_weights."""
        residual = hidden_states
        attn_output, present, attn_weights = self.attn(
            self.ln_1(hidden_states), layer_past, attention_mask, head_mask, use_cache, output_attentions,
            cache_index, deterministic,
        )
        hidden_states = residual + attn_output
        residual = hidden_states
        hidden_states = residual + self.mlp(self.ln_2(hidden_states), deterministic)
        return hidden_states, present, attn_weights


class GPTNeoPreTrainedModel(PreTrainedModel):
    config_class = GPTNeoConfig


class GPTNeoModelModule(nn.Module):
    """The bare GPT-Neo transformer: token + position embeddings, `num_layers` blocks, final LayerNorm."""

    config: GPTNeoConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        self.embed_dim = config.hidden_size
        embedding_init = init_normal(config.initializer_range)
        self.wte = nn.Embed(config.vocab_size, self.embed_dim, embedding_init=embedding_init, dtype=self.dtype)
        self.wpe = nn.Embed(
            config.max_position_embeddings, self.embed_dim, embedding_init=embedding_init, dtype=self.dtype
        )
        self.drop = nn.Dropout(config.embed_dropout)
        self.h = ModuleList([GPTNeoBlock(config, layer_id=i, dtype=self.dtype) for i in range(config.num_layers)])
        self.ln_f = nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=self.dtype)

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
        deterministic: bool = True,
    ) -> BaseModelOutputWithPast | tuple:
        """Args:
            input_ids: (B, T) int token ids. inputs_embeds: (B, T, H*D) instead of input_ids.
            past_key_values: per layer (key, value), each (B, H, S - T, D); or a `StaticCache`.
            attention_mask: (B, S) 1 = attend, 0 = padding, covering past and current tokens (with a static
                cache: up to its max_length).
            token_type_ids, position_ids: (B, T); token types are embedded with `wte`, positions default to
                consecutive ids after the cache.
            head_mask: (H,) or (L, H), 1 keeps a head.
            deterministic: False turns dropout on (needs a "dropout" PRNG key).
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
        hidden_states = self.drop(hidden_states, deterministic=deterministic)

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
                deterministic,
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


class GPTNeoForCausalLMModule(nn.Module):
    """GPT-Neo with a language-modeling head tied to the token embedding (unless `tie_word_embeddings` is off)."""

    config: GPTNeoConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        self.transformer = GPTNeoModelModule(config, dtype=self.dtype)
        self.lm_head = None if config.tie_word_embeddings else nn.Dense(
            config.vocab_size, use_bias=False, kernel_init=init_normal(config.initializer_range), dtype=self.dtype
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
        deterministic: bool = True,
    ) -> CausalLMOutputWithPast | tuple:
        """As `GPTNeoModelModule.__call__`, plus `labels` (B, T): next-token targets, shifted inside; -100 is
        ignored. Returns logits (B, T, V)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache, output_attentions, output_hidden_states, return_dict=True, deterministic=deterministic,
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


class GPTNeoForSequenceClassificationModule(nn.Module):
    """GPT-Neo with a bias-free linear `score` head on the last non-padding token."""

    config: GPTNeoConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        self.num_labels = config.num_labels
        self.transformer = GPTNeoModelModule(config, dtype=self.dtype)
        self.score = nn.Dense(
            self.num_labels, use_bias=False, kernel_init=init_normal(config.initializer_range), dtype=self.dtype
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
        deterministic: bool = True,
    ) -> SequenceClassifierOutputWithPast | tuple:
        """As `GPTNeoModelModule.__call__`, plus `labels`: (B,) class ids, (B,) or (B, num_labels) floats for
        regression, (B, num_labels) 0/1 for multi-label. Returns logits (B, num_labels)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache, output_attentions, output_hidden_states, return_dict=True, deterministic=deterministic,
        )
        logits = self.score(transformer_outputs.last_hidden_state)  # (B, T, num_labels)
        pooled_logits = pool_last_token(logits, input_ids, self.config.pad_token_id, type(self).__name__)
        loss = sequence_classification_loss(pooled_logits, labels, self.config) if labels is not None else None
        output = SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            past_key_values=transformer_outputs.past_key_values,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class GPTNeoForSequenceClassification(GPTNeoPreTrainedModel):
    """GPT-Neo with a bias-free linear `score` head on the last non-padding token."""

    module_class = GPTNeoForSequenceClassificationModule


class GPTNeoForTokenClassificationModule(nn.Module):
    """GPT-Neo with dropout and a linear `classifier` on every token."""

    config: GPTNeoConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        self.num_labels = config.num_labels
        self.transformer = GPTNeoModelModule(config, dtype=self.dtype)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Dense(
            config.num_labels, kernel_init=init_normal(config.initializer_range), dtype=self.dtype
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
        deterministic: bool = True,
    ) -> TokenClassifierOutput | tuple:
        """As `GPTNeoModelModule.__call__`, plus `labels` (B, T) class ids (-100 ignored). Returns logits
        (B, T, num_labels)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache, output_attentions, output_hidden_states, return_dict=True, deterministic=deterministic,
        )
        hidden_states = self.dropout(transformer_outputs.last_hidden_state, deterministic=deterministic)
        logits = self.classifier(hidden_states)
        loss = cross_entropy_loss(logits, labels) if labels is not None else None
        output = TokenClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class GPTNeoForTokenClassification(GPTNeoPreTrainedModel):
    """GPT-Neo with dropout and a linear `classifier` on every token."""

    module_class = GPTNeoForTokenClassificationModule


class GPTNeoForQuestionAnsweringModule(nn.Module):
    """GPT-Neo with a linear `qa_outputs` head giving span start and end scores per token."""

    config: GPTNeoConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        self.num_labels = config.num_labels
        self.transformer = GPTNeoModelModule(config, dtype=self.dtype)
        self.qa_outputs = nn.Dense(2, kernel_init=init_normal(config.initializer_range), dtype=self.dtype)

    def __call__(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        head_mask: Array | None = None,
        inputs_embeds: Array | None = None,
        start_positions: Array | None = None,
        end_positions: Array | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        deterministic: bool = True,
    ) -> QuestionAnsweringModelOutput | tuple:
        """As `GPTNeoModelModule.__call__` (no cache), plus `start_positions`/`end_positions` (B,) span targets,
        clamped to the sequence. Returns start_logits and end_logits (B, T)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, None, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache=False, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, deterministic=deterministic,
        )
        logits = self.qa_outputs(transformer_outputs.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = (x.squeeze(-1) for x in jnp.split(logits, logits.shape[-1], axis=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        output = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class GPTNeoForQuestionAnswering(GPTNeoPreTrainedModel):
    """GPT-Neo with a linear `qa_outputs` head giving span start and end scores per token."""

    module_class = GPTNeoForQuestionAnsweringModule
