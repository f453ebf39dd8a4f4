"""GPT-2 in Flax: the base model and its LM, double-heads, classification and QA heads.

Module and parameter names are Hugging Face's, so `model.params` is exactly the `flax_model.msgpack` tree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..configuration import GPT2Config, residual_init_std
from ..outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    GPT2DoubleHeadsModelOutput,
)
from .heads import (
    Attention,
    DecoderModel,
    ModelForCausalLM,
    ModelForQuestionAnswering,
    ModelForSequenceClassification,
    ModelForTokenClassification,
)
from .modeling_utils import CrossAttentionPreTrainedModel
from .ops import (
    Conv1D,
    Linear,
    causal_lm_loss,
    check_ids,
    cross_entropy_loss,
    get_activation,
    init_normal,
    linear,
    lm_head_logits,
    split_heads,
)

__all__ = [
    "GPT2Attention",
    "GPT2MLP",
    "GPT2Block",
    "SequenceSummary",
    "GPT2PreTrainedModel",
    "GPT2Model",
    "GPT2LMHeadModel",
    "GPT2DoubleHeadsModel",
    "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification",
    "GPT2ForQuestionAnswering",
    "GPT2ForCausalLM",
]

Tensor = jax.Array  # the twins' name for the framework's array type (torch.Tensor, tf.Tensor)
PastKeyValues = Any  # tuple of one (key, value) per layer, or a StaticCache


class GPT2Attention(Attention):
    """Multi-head self-attention (or cross-attention) with Conv1D projections."""

    def __init__(self, config: GPT2Config, is_cross_attention: bool = False, layer_idx: int = 0, *,
                 dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.config = config
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        self.is_cross_attention = is_cross_attention
        self.reorder_and_upcast_attn = config.reorder_and_upcast_attn
        self.scale = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= layer_idx + 1
        std = config.initializer_range
        if is_cross_attention:
            self.c_attn = Conv1D(2 * self.embed_dim, self.embed_dim, std, dtype=dtype, rngs=rngs)
            self.q_attn = Conv1D(self.embed_dim, self.embed_dim, std, dtype=dtype, rngs=rngs)
        else:
            self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim, std, dtype=dtype, rngs=rngs)
        # GPT-2's scaled init of the residual projections: N(0, initializer_range / √(2·n_layer)).
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim, residual_init_std(config), dtype=dtype, rngs=rngs)
        self.attn_dropout = nnx.Dropout(config.attn_pdrop, rngs=rngs)
        self.resid_dropout = nnx.Dropout(config.resid_pdrop, rngs=rngs)
        self.register_causal_table(config.n_positions)

    def __call__(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """hidden_states (B, T, H*D); attention_mask (B, 1, 1, S) bool → (B, T, H*D), present, attn_weights."""
        if encoder_hidden_states is not None:
            query = self.q_attn(hidden_states)
            key, value = jnp.split(self.c_attn(encoder_hidden_states), 2, axis=2)
        else:
            query, key, value = jnp.split(self.c_attn(hidden_states), 3, axis=2)
        query = split_heads(query, self.num_heads)  # (B, T, H*D) -> (B, H, T, D)
        key = split_heads(key, self.num_heads)  # (B, S, H*D) -> (B, H, S, D)
        value = split_heads(value, self.num_heads)

        if encoder_hidden_states is not None:  # cross-attention: no cache, every encoder position is visible
            layer_past, attention_mask = None, encoder_attention_mask
        attn_output, present, attn_weights = self.attend(
            query, key, value, layer_past, attention_mask, head_mask, use_cache, output_attentions, cache_index,
            upcast=self.reorder_and_upcast_attn, causal=encoder_hidden_states is None,
        )
        attn_output = self.resid_dropout(self.c_proj(attn_output))
        return attn_output, present, attn_weights


class GPT2MLP(nnx.Module):
    def __init__(self, intermediate_size: int, config: GPT2Config, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        std = config.initializer_range
        self.c_fc = Conv1D(intermediate_size, config.n_embd, std, dtype=dtype, rngs=rngs)
        self.c_proj = Conv1D(config.n_embd, intermediate_size, residual_init_std(config), dtype=dtype, rngs=rngs)
        self.act = get_activation(config.activation_function)
        self.dropout = nnx.Dropout(config.resid_pdrop, rngs=rngs)

    def __call__(self, hidden_states: Tensor) -> Tensor:
        hidden_states = self.act(self.c_fc(hidden_states))
        return self.dropout(self.c_proj(hidden_states))


class GPT2Block(nnx.Module):
    """Pre-LayerNorm block: attention, optional cross-attention, MLP, each added to the residual."""

    def __init__(self, config: GPT2Config, layer_idx: int = 0, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        inner_dim = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = nnx.LayerNorm(config.n_embd, epsilon=config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
        self.attn = GPT2Attention(config, layer_idx=layer_idx, dtype=dtype, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(config.n_embd, epsilon=config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
        if config.add_cross_attention:
            self.crossattention = GPT2Attention(config, is_cross_attention=True, layer_idx=layer_idx, dtype=dtype,
                                                rngs=rngs)
            self.ln_cross_attn = nnx.LayerNorm(config.n_embd, epsilon=config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
        self.mlp = GPT2MLP(inner_dim, config, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None, Tensor | None]:
        """Returns hidden_states (B, T, H*D), present, attn_weights, cross_attn_weights."""
        residual = hidden_states
        attn_output, present, attn_weights = self.attn(
            self.ln_1(hidden_states), layer_past, attention_mask, head_mask,
            use_cache=use_cache, output_attentions=output_attentions, cache_index=cache_index,
        )
        hidden_states = residual + attn_output

        cross_attn_weights = None
        if encoder_hidden_states is not None:
            if not hasattr(self, "crossattention"):
                raise ValueError(
                    "encoder_hidden_states were passed, but the model has no cross-attention layers: build it "
                    "with config.add_cross_attention=True"
                )
            residual = hidden_states
            attn_output, _, cross_attn_weights = self.crossattention(
                self.ln_cross_attn(hidden_states), None, None, head_mask, encoder_hidden_states,
                encoder_attention_mask, output_attentions=output_attentions,
            )
            hidden_states = residual + attn_output

        residual = hidden_states
        hidden_states = residual + self.mlp(self.ln_2(hidden_states))
        return hidden_states, present, attn_weights, cross_attn_weights


class SequenceSummary(nnx.Module):
    """Pools one vector per sequence for the multiple-choice head, as `config.summary_*` describes.

    `summary_type`: "last" / "first" token, "mean" over tokens, or "cls_index" (the token at `cls_index`,
    default the last). Then optional dropout, projection (to `num_labels` if `summary_proj_to_labels`) and
    `summary_activation`.
    """

    def __init__(self, config: GPT2Config, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        self.summary_type = config.summary_type
        self.summary = nnx.data(linear)  # a module or the identity
        if config.summary_use_proj:
            num_classes = config.num_labels if config.summary_proj_to_labels and config.num_labels > 0 else None
            self.summary = Linear(config.n_embd, num_classes or config.n_embd,
                                      kernel_init=init_normal(config.initializer_range), dtype=dtype, rngs=rngs)
        activation = getattr(config, "summary_activation", None)
        self.activation = get_activation(activation) if activation else linear
        first_dropout = getattr(config, "summary_first_dropout", 0.0) or 0.0
        last_dropout = getattr(config, "summary_last_dropout", 0.0) or 0.0
        self.first_dropout = nnx.Dropout(first_dropout, rngs=rngs)
        self.last_dropout = nnx.Dropout(last_dropout, rngs=rngs)

    def __call__(self, hidden_states: Tensor, cls_index: Tensor | None = None) -> Tensor:
        """hidden_states (..., T, H*D); cls_index (...) token index → (..., num_classes)."""
        # Pool over the token axis (-2). Hugging Face indexes axis 1 for "last"/"first"/"mean", which for
        # the double-heads input (B, C, T, H*D) is the choice axis; the documented meaning is the token.
        if self.summary_type == "last":
            output = hidden_states[..., -1, :]
        elif self.summary_type == "first":
            output = hidden_states[..., 0, :]
        elif self.summary_type == "mean":
            output = hidden_states.mean(axis=-2)
        else:  # cls_index
            if cls_index is None:
                cls_index = jnp.full(hidden_states.shape[:-2], hidden_states.shape[-2] - 1, dtype=jnp.int32)
            check_ids(cls_index, hidden_states.shape[-2], "mc_token_ids", "seq_len")
            index = cls_index[..., None, None]
            output = jnp.take_along_axis(hidden_states, index, axis=-2).squeeze(-2)  # (..., H*D)
        output = self.first_dropout(output)
        output = self.activation(self.summary(output))
        return self.last_dropout(output)


class GPT2PreTrainedModel(CrossAttentionPreTrainedModel):
    config_class = GPT2Config


class GPT2Model(DecoderModel, GPT2PreTrainedModel):
    """The bare GPT-2 transformer: token + position embeddings, `n_layer` blocks, final LayerNorm."""

    block_class = GPT2Block
    block_arguments = (
        "layer_past", "attention_mask", "head_mask", "encoder_hidden_states", "encoder_attention_mask", "use_cache",
        "output_attentions", "cache_index",
    )
    output_class = BaseModelOutputWithPastAndCrossAttentions

    def forward(
        self,
        input_ids: Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """As `DecoderModelModule.__call__`, plus encoder_hidden_states (B, S_enc, H*D) for cross-attention and its
        encoder_attention_mask (B, S_enc)."""
        return self.decode(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            encoder_hidden_states, encoder_attention_mask, use_cache, output_attentions, output_hidden_states,
            return_dict,
        )


class GPT2LMHeadModel(ModelForCausalLM, GPT2PreTrainedModel):
    """GPT-2 with a language-modeling head tied to the token embedding."""

    base_model_class = GPT2Model
    output_class = CausalLMOutputWithCrossAttentions

    def forward(
        self,
        input_ids: Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        """As `GPT2Model.forward`, plus `labels` (B, T): next-token targets, shifted inside; -100 is ignored.
        Returns logits (B, T, V)."""
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            encoder_hidden_states, encoder_attention_mask, use_cache, output_attentions, output_hidden_states,
            return_dict=True,
        )
        output = self.head_output(transformer_outputs, input_ids, labels)
        return output if return_dict else output.to_tuple()


class GPT2DoubleHeadsModelModule(GPT2LMHeadModel.module_class):
    """`GPT2LMHeadModel`'s sub-modules and `multiple_choice_head`; the forward pass: `GPT2DoubleHeadsModel.forward`."""

    def __init__(self, config: GPT2Config, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        super().__init__(config, dtype=dtype, rngs=rngs)
        self.multiple_choice_head = SequenceSummary(config, dtype=dtype, rngs=rngs)


class GPT2DoubleHeadsModel(GPT2PreTrainedModel):
    """GPT-2 with the tied LM head and a multiple-choice head over (B, C, T) inputs (sets num_labels = 1)."""

    module_class = GPT2DoubleHeadsModelModule
    _is_generative = True

    def __init__(self, config: GPT2Config, *args: Any, **kwargs: Any) -> None:
        config.num_labels = 1
        super().__init__(config, *args, **kwargs)

    def forward(
        self,
        input_ids: Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        mc_token_ids: Tensor | None = None,
        labels: Tensor | None = None,
        mc_labels: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> GPT2DoubleHeadsModelOutput | tuple:
        """Args:
            input_ids: (B, C, T) one sequence per choice; attention_mask etc. (B, C, T).
            mc_token_ids: (B, C) index of the token summarized per choice (default: the last).
            labels: (B, C, T) LM targets (-100 ignored). mc_labels: (B,) the right choice.
        Returns logits (B, C, T, V) and mc_logits (B, C).
        """
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = transformer_outputs.last_hidden_state  # (B, C, T, H*D)
        logits = lm_head_logits(self.lm_head, self.transformer.wte, hidden_states)
        mc_logits = self.multiple_choice_head(hidden_states, mc_token_ids).squeeze(-1)  # (B, C)
        mc_loss = None
        if mc_labels is not None:
            mc_loss = cross_entropy_loss(mc_logits, mc_labels)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        output = GPT2DoubleHeadsModelOutput(
            loss=loss,
            mc_loss=mc_loss,
            logits=logits,
            mc_logits=mc_logits,
            past_key_values=transformer_outputs.past_key_values,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class GPT2ForSequenceClassification(ModelForSequenceClassification, GPT2PreTrainedModel):
    """GPT-2 with a bias-free linear `score` head on the last non-padding token."""

    base_model_class = GPT2Model


class GPT2ForTokenClassification(ModelForTokenClassification, GPT2PreTrainedModel):
    """GPT-2 with dropout and a linear `classifier` on every token."""

    base_model_class = GPT2Model


class GPT2ForQuestionAnswering(ModelForQuestionAnswering, GPT2PreTrainedModel):
    """GPT-2 with a linear `qa_outputs` head giving span start and end scores per token."""

    base_model_class = GPT2Model


GPT2ForCausalLM = GPT2LMHeadModel
