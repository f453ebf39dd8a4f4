"""Task heads in TensorFlow (Keras 3), written once for every family: sequence classification, token
classification and question answering over a base model held as `transformer`.

A family file declares each head under its Hugging Face name as a thin subclass that names the base model
(`base_model_class = GPT2Model`) and inherits the family's `PreTrainedModel` (config class, weight init):
`class GPT2ForSequenceClassification(ModelForSequenceClassification, GPT2PreTrainedModel)`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ..configuration import PretrainedConfig, classifier_dropout
from ..outputs import QuestionAnsweringModelOutput, SequenceClassifierOutputWithPast, TokenClassifierOutput
from .modeling_utils import PreTrainedModel
from .ops import (
    cross_entropy_loss,
    init_normal,
    pool_last_token,
    question_answering_loss,
    sequence_classification_loss,
)

__all__ = ["ModelForSequenceClassification", "ModelForTokenClassification", "ModelForQuestionAnswering"]

Tensor = tf.Tensor
PastKeyValues = tuple[tuple[Tensor, Tensor], ...]


class ModelForSequenceClassification(PreTrainedModel):
    """The base model with a bias-free linear `score` head on the last non-padding token."""

    base_model_class: type[PreTrainedModel]

    def __init__(self, config: PretrainedConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.transformer = self.base_model_class(config, name="transformer")
        initializer = init_normal(config.initializer_range)
        self.score = keras.layers.Dense(self.num_labels, use_bias=False, kernel_initializer=initializer, name="score")

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
    ) -> SequenceClassifierOutputWithPast | tuple:
        """As the base model's `call`, plus `labels`: (B,) class ids, (B,) or (B, num_labels) floats for
        regression, (B, num_labels) 0/1 for multi-label. Returns logits (B, num_labels)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True,
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


class ModelForTokenClassification(PreTrainedModel):
    """The base model with dropout and a linear `classifier` on every token."""

    base_model_class: type[PreTrainedModel]

    def __init__(self, config: PretrainedConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.transformer = self.base_model_class(config, name="transformer")
        self.dropout = keras.layers.Dropout(classifier_dropout(config), name="dropout")
        initializer = init_normal(config.initializer_range)
        self.classifier = keras.layers.Dense(config.num_labels, kernel_initializer=initializer, name="classifier")

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
    ) -> TokenClassifierOutput | tuple:
        """As the base model's `call`, plus `labels` (B, T) class ids (-100 ignored). Returns logits
        (B, T, num_labels)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = self.dropout(transformer_outputs.last_hidden_state)
        logits = self.classifier(hidden_states)
        loss = cross_entropy_loss(logits, labels) if labels is not None else None
        output = TokenClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


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
