"""GPT-Neo in TensorFlow (Keras 3): the base model and its causal-LM, classification and QA heads.

Layer and variable names are Hugging Face's, so a variable's path (minus the model's name) equals the
checkpoint's TF name.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from ..configuration import GPTNeoConfig
from ..outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)
from .heads import ModelForQuestionAnswering, ModelForSequenceClassification, ModelForTokenClassification
from .modeling_utils import PreTrainedModel
from .ops import (
    Embedding,
    LMHead,
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
    merge_heads,
    pack_presents,
    padding_mask,
    past_length,
    shape_list,
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

Tensor = tf.Tensor
PastKeyValues = tuple[tuple[Tensor, Tensor], ...]


class GPTNeoSelfAttention(keras.layers.Layer):
    """Multi-head self-attention, global or local (each query sees only the last `window_size` positions)."""

    def __init__(self, config: GPTNeoConfig, attention_type: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = self.embed_dim // self.num_heads
        initializer = init_normal(config.initializer_range)
        dense = dict(use_bias=False, kernel_initializer=initializer)
        self.q_proj = keras.layers.Dense(self.embed_dim, **dense, name="q_proj")
        self.k_proj = keras.layers.Dense(self.embed_dim, **dense, name="k_proj")
        self.v_proj = keras.layers.Dense(self.embed_dim, **dense, name="v_proj")
        self.out_proj = keras.layers.Dense(self.embed_dim, kernel_initializer=initializer, name="out_proj")
        self.attn_dropout = keras.layers.Dropout(config.attention_dropout, name="attn_dropout")
        self.resid_dropout = keras.layers.Dropout(config.resid_dropout, name="resid_dropout")
        window = config.window_size if attention_type == "local" else None
        # Hugging Face's name for the causal table; a constant, not a variable, so it is not in the weights.
        self.bias = causal_table(config.max_position_embeddings, window)

    def call(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """hidden_states (B, T, H*D); attention_mask (B, 1, 1, S) bool → (B, T, H*D), present, attn_weights."""
        query = split_heads(self.q_proj(hidden_states), self.num_heads)  # (B, T, H*D) -> (B, H, T, D)
        key = split_heads(self.k_proj(hidden_states), self.num_heads)
        value = split_heads(self.v_proj(hidden_states), self.num_heads)

        if layer_past is not None:
            key, value = update_cache(layer_past, key, value, cache_index)
        present = (key, value) if use_cache else None
        query_len, key_len = shape_list(query)[-2], shape_list(key)[-2]
        # The local window is part of the table, so it holds in the eager and the sdpa path alike.
        mask = causal_rows(self.bias, query_len, key_len, cache_index)  # (1, 1, T, S)
        if attention_mask is not None:
            mask = mask & attention_mask

        # GPT-Neo has no 1/sqrt(D) scale; scores in float32, as the checkpoints were trained.
        attn_output, attn_weights = attention(
            query, key, value, mask, 1.0, self.attn_dropout, "eager",
            head_mask, output_attentions, upcast=True,
        )
        attn_output = merge_heads(attn_output)  # (B, H, T, D) -> (B, T, H*D)
        attn_output = self.resid_dropout(self.out_proj(attn_output))
        return attn_output, present, attn_weights


class GPTNeoAttention(keras.layers.Layer):
    """Picks the layer's attention type from `config.attention_layers` (Hugging Face's extra nesting level)."""

    def __init__(self, config: GPTNeoConfig, layer_id: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.attention_type = config.attention_layers[layer_id]
        self.attention = GPTNeoSelfAttention(config, self.attention_type, name="attention")

    def call(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        return self.attention(
            hidden_states, layer_past, attention_mask, head_mask,
            use_cache=use_cache, output_attentions=output_attentions, cache_index=cache_index,
        )


class GPTNeoMLP(keras.layers.Layer):
    def __init__(self, intermediate_size: int, config: GPTNeoConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        initializer = init_normal(config.initializer_range)
        self.c_fc = keras.layers.Dense(intermediate_size, kernel_initializer=initializer, name="c_fc")
        self.c_proj = keras.layers.Dense(config.hidden_size, kernel_initializer=initializer, name="c_proj")
        self.act = get_activation(config.activation_function)
        self.dropout = keras.layers.Dropout(config.resid_dropout, name="dropout")

    def call(self, hidden_states: Tensor) -> Tensor:
        hidden_states = self.act(self.c_fc(hidden_states))
        return self.dropout(self.c_proj(hidden_states))


class GPTNeoBlock(keras.layers.Layer):
    """Pre-LayerNorm block: attention, then MLP, each added to the residual."""

    def __init__(self, config: GPTNeoConfig, layer_id: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        inner_dim = config.intermediate_size if config.intermediate_size is not None else 4 * config.hidden_size
        self.ln_1 = keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name="ln_1")
        self.attn = GPTNeoAttention(config, layer_id, name="attn")
        self.ln_2 = keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name="ln_2")
        self.mlp = GPTNeoMLP(inner_dim, config, name="mlp")

    def call(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """Returns hidden_states (B, T, H*D), present, attn_weights."""
        residual = hidden_states
        attn_output, present, attn_weights = self.attn(
            self.ln_1(hidden_states), layer_past, attention_mask, head_mask,
            use_cache=use_cache, output_attentions=output_attentions, cache_index=cache_index,
        )
        hidden_states = residual + attn_output
        residual = hidden_states
        hidden_states = residual + self.mlp(self.ln_2(hidden_states))
        return hidden_states, present, attn_weights


class GPTNeoPreTrainedModel(PreTrainedModel):
    config_class = GPTNeoConfig


class GPTNeoModel(GPTNeoPreTrainedModel):
    """The bare GPT-Neo transformer: token + position embeddings, `num_layers` blocks, final LayerNorm."""

    def __init__(self, config: GPTNeoConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.embed_dim = config.hidden_size
        self.wte = Embedding(config.vocab_size, self.embed_dim, config.initializer_range, name="wte")
        self.wpe = Embedding(config.max_position_embeddings, self.embed_dim, config.initializer_range, name="wpe")
        self.drop = keras.layers.Dropout(config.embed_dropout, name="drop")
        self.h = [GPTNeoBlock(config, layer_id=i, name=f"h_._{i}") for i in range(config.num_layers)]
        self.ln_f = keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name="ln_f")

    def call(
        self,
        input_ids: Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> BaseModelOutputWithPast | tuple:
        """Args:
            input_ids: (B, T) int token ids. inputs_embeds: (B, T, H*D) instead of input_ids.
            past_key_values: per layer (key, value), each (B, H, S - T, D).
            attention_mask: (B, S) 1 = attend, 0 = padding, covering past and current tokens.
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
            position_ids = tf.reshape(position_ids, (-1, seq_len))

        if inputs_embeds is None:
            inputs_embeds = self.wte(tf.reshape(input_ids, (-1, seq_len)))
        inputs_embeds = tf.reshape(inputs_embeds, (batch_size, seq_len, self.embed_dim))
        hidden_states = inputs_embeds + self.wpe(position_ids)
        if token_type_ids is not None:
            check_ids(token_type_ids, config.vocab_size, "token_type_ids", "vocab_size")
            hidden_states = hidden_states + self.wte(tf.reshape(token_type_ids, (-1, seq_len)))
        hidden_states = self.drop(hidden_states)

        attention_mask = static_padding(attention_mask, past_key_values)
        key_len = cache_key_length(past_key_values, past, seq_len)
        attention_mask = padding_mask(attention_mask, batch_size, key_len, "attention_mask")
        head_masks = expand_head_mask(head_mask, config.num_layers, config.num_heads)

        output_shape = [*input_shape, self.embed_dim]
        presents = () if use_cache else None
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, block in enumerate(self.h):
            if output_hidden_states:
                all_hidden_states += (tf.reshape(hidden_states, output_shape),)
            layer_past = past_key_values[i] if past_key_values is not None else None
            hidden_states, present, attn_weights = block(
                hidden_states, layer_past, attention_mask, head_masks[i], use_cache=use_cache,
                output_attentions=output_attentions, cache_index=cache_index,
            )
            if use_cache:
                presents += (present,)
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = tf.reshape(self.ln_f(hidden_states), output_shape)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=pack_presents(presents, past_key_values, seq_len),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()


class GPTNeoForCausalLM(GPTNeoPreTrainedModel):
    """GPT-Neo with a language-modeling head tied to the token embedding (unless `tie_word_embeddings` is off)."""

    _is_generative = True

    def __init__(self, config: GPTNeoConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.transformer = GPTNeoModel(config, name="transformer")
        tied = self.transformer.wte if config.tie_word_embeddings else None
        self.lm_head = LMHead(config.vocab_size, config.hidden_size, embedding=tied,
                              initializer_range=config.initializer_range, name="lm_head")

    def call(
        self,
        input_ids: Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> CausalLMOutputWithPast | tuple:
        """As `GPTNeoModel.call`, plus `labels` (B, T): next-token targets, shifted inside; -100 is ignored.
        Returns logits (B, T, V)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache, output_attentions, output_hidden_states, return_dict=True,
        )
        logits = self.lm_head(transformer_outputs.last_hidden_state)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=transformer_outputs.past_key_values,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class GPTNeoForSequenceClassification(ModelForSequenceClassification, GPTNeoPreTrainedModel):
    """GPT-Neo with a bias-free linear `score` head on the last non-padding token."""

    base_model_class = GPTNeoModel


class GPTNeoForTokenClassification(ModelForTokenClassification, GPTNeoPreTrainedModel):
    """GPT-Neo with dropout and a linear `classifier` on every token."""

    base_model_class = GPTNeoModel


class GPTNeoForQuestionAnswering(ModelForQuestionAnswering, GPTNeoPreTrainedModel):
    """GPT-Neo with a linear `qa_outputs` head giving span start and end scores per token."""

    base_model_class = GPTNeoModel

