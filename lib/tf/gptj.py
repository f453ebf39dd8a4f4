"""GPT-J in TensorFlow (Keras 3): the base model and its causal-LM, classification and QA heads.

Layer and variable names are Hugging Face's, so a variable's path (minus the model's name) equals the
checkpoint's TF name.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from ..configuration import GPTJConfig
from ..outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)
from .heads import ModelForQuestionAnswering, ModelForSequenceClassification, ModelForTokenClassification
from .modeling_utils import PreTrainedModel
from .ops import (
    Embedding,
    LMHead,
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
    merge_heads,
    pack_presents,
    padding_mask,
    past_length,
    rotary_table,
    shape_list,
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

Tensor = tf.Tensor
PastKeyValues = tuple[tuple[Tensor, Tensor], ...]


class GPTJAttention(keras.layers.Layer):
    """Multi-head self-attention with rotary position embeddings on the first `rotary_dim` dims of each head."""

    def __init__(self, config: GPTJConfig, layer_idx: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        self.rotary_dim = config.rotary_dim or self.head_dim
        self.scale = self.head_dim**-0.5
        dense = dict(use_bias=False, kernel_initializer=init_normal(config.initializer_range))
        # Declared q, k, v as in Hugging Face's TF GPT-J: variable order decides the order in tf_model.h5.
        self.q_proj = keras.layers.Dense(self.embed_dim, **dense, name="q_proj")
        self.k_proj = keras.layers.Dense(self.embed_dim, **dense, name="k_proj")
        self.v_proj = keras.layers.Dense(self.embed_dim, **dense, name="v_proj")
        self.out_proj = keras.layers.Dense(self.embed_dim, **dense, name="out_proj")
        self.attn_dropout = keras.layers.Dropout(config.attn_pdrop, name="attn_dropout")
        self.resid_dropout = keras.layers.Dropout(config.resid_pdrop, name="resid_dropout")
        # Hugging Face's name for the causal table; a constant, not a variable, so it is not in the weights.
        self.bias = causal_table(config.n_positions)
        # Constants, not variables: a mixed-precision policy must not round the float32 tables.
        self.rotary_sin, self.rotary_cos = rotary_table(config.n_positions, self.rotary_dim)

    def call(
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
        batch_size, query_len = shape_list(hidden_states)[:2]
        # (B, T, H*D) -> (B, T, H, D): the rotation is applied per head before the heads move forward
        heads_shape = (batch_size, query_len, self.num_heads, self.head_dim)
        query = tf.reshape(self.q_proj(hidden_states), heads_shape)
        key = tf.reshape(self.k_proj(hidden_states), heads_shape)
        value = tf.reshape(self.v_proj(hidden_states), heads_shape)

        # Rotary only on the first `rotary_dim` dims of each head; the rest pass through.
        sin = tf.gather(self.rotary_sin, position_ids)[:, :, None, :]  # (B, T, 1, R/2)
        cos = tf.gather(self.rotary_cos, position_ids)[:, :, None, :]
        query = tf.concat((apply_rotary(query[..., : self.rotary_dim], sin, cos), query[..., self.rotary_dim :]), -1)
        key = tf.concat((apply_rotary(key[..., : self.rotary_dim], sin, cos), key[..., self.rotary_dim :]), -1)
        query, key, value = (tf.transpose(x, (0, 2, 1, 3)) for x in (query, key, value))  # -> (B, H, T, D)

        if layer_past is not None:
            key, value = update_cache(layer_past, key, value, cache_index)
        present = (key, value) if use_cache else None
        key_len = shape_list(key)[-2]
        mask = causal_rows(self.bias, query_len, key_len, cache_index)  # (1, 1, T, S)
        if attention_mask is not None:
            mask = mask & attention_mask

        # Scores in float32, as the checkpoints were trained.
        attn_output, attn_weights = attention(
            query, key, value, mask, self.scale, self.attn_dropout, "eager",
            head_mask, output_attentions, upcast=True,
        )
        attn_output = merge_heads(attn_output)  # (B, H, T, D) -> (B, T, H*D)
        attn_output = self.resid_dropout(self.out_proj(attn_output))
        return attn_output, present, attn_weights


class GPTJMLP(keras.layers.Layer):
    def __init__(self, intermediate_size: int, config: GPTJConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        initializer = init_normal(config.initializer_range)
        self.fc_in = keras.layers.Dense(intermediate_size, kernel_initializer=initializer, name="fc_in")
        self.fc_out = keras.layers.Dense(config.n_embd, kernel_initializer=initializer, name="fc_out")
        self.act = get_activation(config.activation_function)
        self.dropout = keras.layers.Dropout(config.resid_pdrop, name="dropout")

    def call(self, hidden_states: Tensor) -> Tensor:
        hidden_states = self.act(self.fc_in(hidden_states))
        return self.dropout(self.fc_out(hidden_states))


class GPTJBlock(keras.layers.Layer):
    """Parallel block: attention and MLP both read `ln_1(x)` and are added to the residual together."""

    def __init__(self, config: GPTJConfig, layer_idx: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        inner_dim = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name="ln_1")
        self.attn = GPTJAttention(config, layer_idx, name="attn")
        self.mlp = GPTJMLP(inner_dim, config, name="mlp")

    def call(
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
            hidden_states, layer_past, attention_mask, position_ids, head_mask,
            use_cache=use_cache, output_attentions=output_attentions, cache_index=cache_index,
        )
        hidden_states = attn_output + self.mlp(hidden_states) + residual
        return hidden_states, present, attn_weights


class GPTJPreTrainedModel(PreTrainedModel):
    config_class = GPTJConfig


class GPTJModel(GPTJPreTrainedModel):
    """The bare GPT-J transformer: token embedding (no position table), `n_layer` blocks, final LayerNorm."""

    def __init__(self, config: GPTJConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.embed_dim = config.n_embd
        # Hugging Face's TF GPT-J names this matrix `weight` (TFSharedEmbeddings), not Keras' `embeddings`.
        self.wte = Embedding(config.vocab_size, self.embed_dim, config.initializer_range, "weight", name="wte")
        self.drop = keras.layers.Dropout(config.embd_pdrop, name="drop")
        self.h = [GPTJBlock(config, layer_idx=i, name=f"h_._{i}") for i in range(config.n_layer)]
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
            position_ids = tf.reshape(position_ids, (-1, seq_len))

        if inputs_embeds is None:
            inputs_embeds = self.wte(tf.reshape(input_ids, (-1, seq_len)))
        hidden_states = tf.reshape(inputs_embeds, (batch_size, seq_len, self.embed_dim))
        if token_type_ids is not None:
            check_ids(token_type_ids, config.vocab_size, "token_type_ids", "vocab_size")
            hidden_states = hidden_states + self.wte(tf.reshape(token_type_ids, (-1, seq_len)))
        hidden_states = self.drop(hidden_states)

        attention_mask = static_padding(attention_mask, past_key_values)
        key_len = cache_key_length(past_key_values, past, seq_len)
        attention_mask = padding_mask(attention_mask, batch_size, key_len, "attention_mask")
        head_masks = expand_head_mask(head_mask, config.n_layer, config.n_head)

        output_shape = [*input_shape, self.embed_dim]
        presents = () if use_cache else None
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, block in enumerate(self.h):
            if output_hidden_states:
                all_hidden_states += (tf.reshape(hidden_states, output_shape),)
            layer_past = past_key_values[i] if past_key_values is not None else None
            hidden_states, present, attn_weights = block(
                hidden_states, layer_past, attention_mask, position_ids, head_masks[i],
                use_cache=use_cache, output_attentions=output_attentions, cache_index=cache_index,
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


class GPTJForCausalLM(GPTJPreTrainedModel):
    """GPT-J with a language-modeling head: its own matrix and bias unless `tie_word_embeddings`."""

    _is_generative = True

    def __init__(self, config: GPTJConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.transformer = GPTJModel(config, name="transformer")
        tied = self.transformer.wte if config.tie_word_embeddings else None
        self.lm_head = LMHead(config.vocab_size, config.n_embd, use_bias=True, embedding=tied,
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
        """As `GPTJModel.call`, plus `labels` (B, T): next-token targets, shifted inside; -100 is ignored.
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

