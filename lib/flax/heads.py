"""The classification, token-classification and question-answering heads, written once over a base model.

Each family file subclasses these with its Hugging Face class name and sets `base_model_class` (the family's
`*ModelModule`), so the heads read the same for GPT-2, GPT-J and GPT-Neo and their parameters stay at
`transformer/...` plus the head's own `score` / `classifier` / `qa_outputs`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..configuration import PretrainedConfig, classifier_dropout
from ..outputs import QuestionAnsweringModelOutput, SequenceClassifierOutputWithPast, TokenClassifierOutput
from .ops import (
    cross_entropy_loss,
    init_normal,
    pool_last_token,
    question_answering_loss,
    sequence_classification_loss,
)

__all__ = [
    "ModelForSequenceClassificationModule",
    "ModelForTokenClassificationModule",
    "ModelForQuestionAnsweringModule",
]

Array = jax.Array
PastKeyValues = Any  # tuple of one (key, value) per layer, or a StaticCache


class ModelForSequenceClassificationModule(nnx.Module):
    """A base model with a bias-free linear `score` head on the last non-padding token."""

    base_model_class: type[nnx.Module]

    def __init__(self, config: PretrainedConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.num_labels = config.num_labels
        self.transformer = self.base_model_class(config, dtype=dtype, rngs=rngs)
        self.score = nnx.Linear(
            config.hidden_size, self.num_labels, use_bias=False, kernel_init=init_normal(config.initializer_range),
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
    ) -> SequenceClassifierOutputWithPast | tuple:
        """As the base model's `__call__`, plus `labels`: (B,) class ids, (B,) or (B, num_labels) floats for
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


class ModelForTokenClassificationModule(nnx.Module):
    """A base model with dropout and a linear `classifier` on every token."""

    base_model_class: type[nnx.Module]

    def __init__(self, config: PretrainedConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.num_labels = config.num_labels
        self.transformer = self.base_model_class(config, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(classifier_dropout(config), rngs=rngs)
        self.classifier = nnx.Linear(
            config.hidden_size, config.num_labels, kernel_init=init_normal(config.initializer_range), dtype=dtype,
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
    ) -> TokenClassifierOutput | tuple:
        """As the base model's `__call__`, plus `labels` (B, T) class ids (-100 ignored). Returns logits
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


class ModelForQuestionAnsweringModule(nnx.Module):
    """A base model with a linear `qa_outputs` head giving span start and end scores per token.

    `qa_outputs` has 2 outputs, or `num_labels` where the family's Hugging Face class uses that (GPT-J)."""

    base_model_class: type[nnx.Module]
    qa_outputs_from_num_labels = False

    def __init__(self, config: PretrainedConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.num_labels = config.num_labels
        self.transformer = self.base_model_class(config, dtype=dtype, rngs=rngs)
        num_outputs = config.num_labels if self.qa_outputs_from_num_labels else 2
        self.qa_outputs = nnx.Linear(
            config.hidden_size, num_outputs, kernel_init=init_normal(config.initializer_range), dtype=dtype,
            rngs=rngs,
        )

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
    ) -> QuestionAnsweringModelOutput | tuple:
        """As the base model's `__call__` (no cache), plus `start_positions`/`end_positions` (B,) span targets,
        clamped to the sequence. Returns start_logits and end_logits (B, T)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, None, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache=False, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True,
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
