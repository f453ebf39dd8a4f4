"""The parts of every TensorFlow (Keras 3) family written once: the attention after its projections
(`Attention`), the bare transformer (`DecoderModel`) and the task heads over it (causal LM, sequence
classification, token classification, question answering) held as `transformer`.

A family file declares its base model under its Hugging Face name as a thin subclass that names its block
(`block_class = GPT2Block`), and each head as a thin subclass that names the base model
(`base_model_class = GPT2Model`); both inherit the family's `PreTrainedModel` (config class, weight init):
`class GPT2ForSequenceClassification(ModelForSequenceClassification, GPT2PreTrainedModel)`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from ..configuration import PretrainedConfig, classifier_dropout
from ..outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    ModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
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
    cross_entropy_loss,
    default_position_ids,
    expand_head_mask,
    init_normal,
    merge_heads,
    pack_presents,
    padding_mask,
    past_length,
    pool_last_token,
    question_answering_loss,
    sequence_classification_loss,
    shape_list,
    static_cache_index,
    static_padding,
    update_cache,
)

__all__ = ["Attention", "DecoderModel", "ModelWithHead", "ModelForCausalLM", "ModelForSequenceClassification",
           "ModelForTokenClassification", "ModelForQuestionAnswering"]

Tensor = tf.Tensor
PastKeyValues = tuple[tuple[Tensor, Tensor], ...]


class Attention(keras.layers.Layer):
    """What every family's attention does once its queries, keys and values are projected: the cache, the causal
    (and local) mask from the table `bias` (`register_causal_table`), `attention` at `scale` with `attn_dropout`,
    the heads merged back. A family's attention sets those attributes, projects, calls `attend` and applies its
    output projection."""

    def register_causal_table(self, max_positions: int, window: int | None = None) -> None:
        """Hugging Face's `bias`: the (1, 1, P, P) bool causal table (with GPT-Neo's local `window`), a constant,
        not a variable, so it is not in the weights."""
        self.bias = causal_table(max_positions, window)

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, layer_past: tuple[Tensor, Tensor] | None,
        attention_mask: Tensor | None, head_mask: Tensor | None, use_cache: bool, output_attentions: bool,
        cache_index: Tensor | None, upcast: bool, causal: bool = True,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """query (B, H, T, D); key, value (B, H, S - past, D); attention_mask (B, 1, 1, S) bool, ANDed with the
        causal rows (`causal` off, GPT-2's cross-attention: the encoder's mask alone); upcast: scores in float32.
        Returns attn_output (B, T, H*D) before the output projection, present, attn_weights."""
        if layer_past is not None:
            key, value = update_cache(layer_past, key, value, cache_index)
        present = (key, value) if use_cache else None
        mask = attention_mask
        if causal:
            query_len, key_len = shape_list(query)[-2], shape_list(key)[-2]
            # A local window is part of the table, so it holds in the eager and the sdpa path alike.
            mask = causal_rows(self.bias, query_len, key_len, cache_index)  # (1, 1, T, S)
            if attention_mask is not None:
                mask = mask & attention_mask

        attn_output, attn_weights = attention(
            query, key, value, mask, self.scale, self.attn_dropout, "eager",
            head_mask, output_attentions, upcast=upcast,
        )
        attn_output = merge_heads(attn_output)  # (B, H, T, D) -> (B, T, H*D)
        return attn_output, present, attn_weights


class DecoderModel(PreTrainedModel):
    """The bare transformer: token (and position) embeddings, `num_hidden_layers` blocks, final LayerNorm.

    A family's base model names its `block_class` and sets what differs from GPT-Neo: `block_arguments` (what
    its block takes after hidden_states, in order), `position_embeddings` (GPT-J has no position table: the
    positions pick rotary angles inside each block), `embed_dropout_field` (the config's name for the embedding
    dropout) and `output_class` (GPT-2 adds cross-attentions).
    """

    block_class: type[keras.layers.Layer]
    block_arguments = ("layer_past", "attention_mask", "head_mask", "use_cache", "output_attentions", "cache_index")
    position_embeddings = True
    embed_dropout_field = "embd_pdrop"
    output_class: type[ModelOutput] = BaseModelOutputWithPast
    # Hugging Face's TF name of the token table's variable (GPT-J's TFSharedEmbeddings: `weight`).
    token_table_name = "embeddings"

    def __init__(self, config: PretrainedConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.embed_dim = config.hidden_size
        initializer_range = config.initializer_range
        self.wte = Embedding(config.vocab_size, self.embed_dim, initializer_range, self.token_table_name, name="wte")
        if self.position_embeddings:
            self.wpe = Embedding(config.max_position_embeddings, self.embed_dim, initializer_range, name="wpe")
        self.drop = keras.layers.Dropout(getattr(config, self.embed_dropout_field), name="drop")
        self.h = [self.block_class(config, i, name=f"h_._{i}") for i in range(config.num_hidden_layers)]
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
    ) -> ModelOutput | tuple:
        """Args:
            input_ids: (B, T) int token ids (or (B, C, T) for multiple choice). inputs_embeds: (B, T, H*D)
                instead of input_ids.
            past_key_values: per layer (key, value), each (B, H, S - T, D).
            attention_mask: (B, S) 1 = attend, 0 = padding, covering past and current tokens.
            token_type_ids, position_ids: (B, T); token types are embedded with `wte`, positions (which pick
                GPT-J's rotary angles) default to consecutive ids after the cache.
            head_mask: (H,) or (L, H), 1 keeps a head.
        """
        return self.decode(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            None, None, use_cache, output_attentions, output_hidden_states, return_dict,
        )

    def decode(
        self, input_ids: Tensor | None, past_key_values: PastKeyValues | None, attention_mask: Tensor | None,
        token_type_ids: Tensor | None, position_ids: Tensor | None, head_mask: Tensor | None,
        inputs_embeds: Tensor | None, encoder_hidden_states: Tensor | None, encoder_attention_mask: Tensor | None,
        use_cache: bool | None, output_attentions: bool | None, output_hidden_states: bool | None,
        return_dict: bool | None,
    ) -> ModelOutput | tuple:
        """The forward pass of every family (`call` gives it the family's Hugging Face signature);
        encoder_hidden_states (B, S_enc, H*D) and encoder_attention_mask (B, S_enc) are GPT-2's cross-attention."""
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        use_cache = config.use_cache if use_cache is None else use_cache
        return_dict = config.use_return_dict if return_dict is None else return_dict
        max_positions = config.max_position_embeddings
        # The config's own name for the limit ("n_positions" for GPT-2 and GPT-J), as the errors say it.
        max_positions_name = type(config).attribute_map.get("max_position_embeddings", "max_position_embeddings")

        input_shape = check_inputs(input_ids, inputs_embeds, config.vocab_size)
        seq_len = input_shape[-1]
        batch_size = math.prod(input_shape[:-1])  # choices are folded into the batch
        past = past_length(past_key_values, config.num_hidden_layers)
        cache_index = static_cache_index(past_key_values)
        if position_ids is None:
            position_ids = default_position_ids(past, seq_len, max_positions)
        else:
            default_position_ids(past, seq_len, max_positions)  # the same length check
            check_ids(position_ids, max_positions, "position_ids", max_positions_name)
            position_ids = tf.reshape(position_ids, (-1, seq_len))

        if inputs_embeds is None:
            inputs_embeds = self.wte(tf.reshape(input_ids, (-1, seq_len)))
        hidden_states = tf.reshape(inputs_embeds, (batch_size, seq_len, self.embed_dim))
        if self.position_embeddings:
            hidden_states = hidden_states + self.wpe(position_ids)
        if token_type_ids is not None:
            check_ids(token_type_ids, config.vocab_size, "token_type_ids", "vocab_size")
            hidden_states = hidden_states + self.wte(tf.reshape(token_type_ids, (-1, seq_len)))
        hidden_states = self.drop(hidden_states)

        attention_mask = static_padding(attention_mask, past_key_values)
        key_len = cache_key_length(past_key_values, past, seq_len)
        attention_mask = padding_mask(attention_mask, batch_size, key_len, "attention_mask")
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            encoder_attention_mask = padding_mask(
                encoder_attention_mask, batch_size, shape_list(encoder_hidden_states)[-2], "encoder_attention_mask"
            )
        head_masks = expand_head_mask(head_mask, config.num_hidden_layers, config.num_attention_heads)

        output_shape = [*input_shape, self.embed_dim]
        presents = () if use_cache else None
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        cross_attention = "encoder_hidden_states" in self.block_arguments
        all_cross_attentions = () if output_attentions and cross_attention and config.add_cross_attention else None
        # Everything a block may take; each family's block takes the names in `block_arguments`.
        block_inputs = {
            "attention_mask": attention_mask, "position_ids": position_ids,
            "encoder_hidden_states": encoder_hidden_states, "encoder_attention_mask": encoder_attention_mask,
            "use_cache": use_cache, "output_attentions": output_attentions, "cache_index": cache_index,
        }
        for i, block in enumerate(self.h):
            if output_hidden_states:
                all_hidden_states += (tf.reshape(hidden_states, output_shape),)
            block_inputs["layer_past"] = past_key_values[i] if past_key_values is not None else None
            block_inputs["head_mask"] = head_masks[i]
            # By name: Keras takes only tensors positionally.
            hidden_states, present, attn_weights, *cross_attn_weights = block(
                hidden_states, **{name: block_inputs[name] for name in self.block_arguments}
            )
            if use_cache:
                presents += (present,)
            if output_attentions:
                all_attentions += (attn_weights,)
                if all_cross_attentions is not None:
                    all_cross_attentions += tuple(cross_attn_weights)

        hidden_states = tf.reshape(self.ln_f(hidden_states), output_shape)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        output = self.output_class(
            last_hidden_state=hidden_states,
            past_key_values=pack_presents(presents, past_key_values, seq_len),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            **({"cross_attentions": all_cross_attentions} if cross_attention else {}),
        )
        return output if return_dict else output.to_tuple()


class ModelWithHead(PreTrainedModel):
    """A task head over the base model held as `transformer`: the forward pass is written here once, the
    head's own part (logits, loss, output) in `head_output`."""

    base_model_class: type[PreTrainedModel]

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
    ) -> ModelOutput | tuple:
        """As the base model's `call`, plus `labels`, the targets of the head's loss (see `head_output`)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        output = self.head_output(transformer_outputs, input_ids, labels)
        return output if return_dict else output.to_tuple()

    def head_output(self, transformer_outputs: ModelOutput, input_ids: Tensor | None, labels: Tensor | None
                    ) -> ModelOutput:
        raise NotImplementedError(f"{type(self).__name__} must define head_output")


class ModelForCausalLM(ModelWithHead):
    """The base model with a language-modeling head `lm_head`, tied to the token embedding when
    `tie_word_embeddings` (GPT-J's has a bias: `lm_head_bias`)."""

    _is_generative = True
    lm_head_bias = False
    output_class: type[ModelOutput] = CausalLMOutputWithPast

    def __init__(self, config: PretrainedConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.transformer = self.base_model_class(config, name="transformer")
        tied = self.transformer.wte if config.tie_word_embeddings else None
        self.lm_head = LMHead(config.vocab_size, config.hidden_size, use_bias=self.lm_head_bias, embedding=tied,
                              initializer_range=config.initializer_range, name="lm_head")

    def head_output(self, transformer_outputs: ModelOutput, input_ids: Tensor | None, labels: Tensor | None
                    ) -> ModelOutput:
        """`labels` (B, T): next-token targets, shifted inside; -100 is ignored. Returns logits (B, T, V)."""
        logits = self.lm_head(transformer_outputs.last_hidden_state)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        output = self.output_class(
            loss=loss,
            logits=logits,
            past_key_values=transformer_outputs.past_key_values,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )
        if "cross_attentions" in transformer_outputs:  # GPT-2
            output.cross_attentions = transformer_outputs.cross_attentions
        return output


class ModelForSequenceClassification(ModelWithHead):
    """The base model with a bias-free linear `score` head on the last non-padding token."""

    def __init__(self, config: PretrainedConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.transformer = self.base_model_class(config, name="transformer")
        initializer = init_normal(config.initializer_range)
        self.score = keras.layers.Dense(self.num_labels, use_bias=False, kernel_initializer=initializer, name="score")

    def head_output(self, transformer_outputs: ModelOutput, input_ids: Tensor | None, labels: Tensor | None
                    ) -> ModelOutput:
        """`labels`: (B,) class ids, (B,) or (B, num_labels) floats for regression, (B, num_labels) 0/1 for
        multi-label. Returns logits (B, num_labels)."""
        logits = self.score(transformer_outputs.last_hidden_state)  # (B, T, num_labels)
        pooled_logits = pool_last_token(logits, input_ids, self.config.pad_token_id, type(self).__name__)
        loss = sequence_classification_loss(pooled_logits, labels, self.config) if labels is not None else None
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            past_key_values=transformer_outputs.past_key_values,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )


class ModelForTokenClassification(ModelWithHead):
    """The base model with dropout and a linear `classifier` on every token."""

    def __init__(self, config: PretrainedConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.transformer = self.base_model_class(config, name="transformer")
        self.dropout = keras.layers.Dropout(classifier_dropout(config), name="dropout")
        initializer = init_normal(config.initializer_range)
        self.classifier = keras.layers.Dense(config.num_labels, kernel_initializer=initializer, name="classifier")

    def head_output(self, transformer_outputs: ModelOutput, input_ids: Tensor | None, labels: Tensor | None
                    ) -> ModelOutput:
        """`labels` (B, T) class ids (-100 ignored). Returns logits (B, T, num_labels)."""
        hidden_states = self.dropout(transformer_outputs.last_hidden_state)
        logits = self.classifier(hidden_states)
        loss = cross_entropy_loss(logits, labels) if labels is not None else None
        return TokenClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )


class ModelForQuestionAnswering(PreTrainedModel):
    """The base model with a linear `qa_outputs` head giving span start and end scores per token."""

    base_model_class: type[PreTrainedModel]
    # Hugging Face's GPT-J head has `num_labels` outputs; GPT-2's and GPT-Neo's have 2 (start, end).
    qa_outputs_from_num_labels = False
    label_names = ("start_positions", "end_positions")

    def __init__(self, config: PretrainedConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.transformer = self.base_model_class(config, name="transformer")
        width = config.num_labels if self.qa_outputs_from_num_labels else 2
        initializer = init_normal(config.initializer_range)
        self.qa_outputs = keras.layers.Dense(width, kernel_initializer=initializer, name="qa_outputs")

    def call(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> QuestionAnsweringModelOutput | tuple:
        """As the base model's `call` (no cache), plus `start_positions`/`end_positions` (B,) span targets,
        clamped to the sequence. Returns start_logits and end_logits (B, T)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, None, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache=False, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.qa_outputs(transformer_outputs.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = tf.unstack(logits, axis=-1)
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
