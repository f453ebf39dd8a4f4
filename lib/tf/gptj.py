"""GPT-J in TensorFlow (Keras 3): the base model and its causal-LM, classification and QA heads.

Layer and variable names are Hugging Face's, so a variable's path (minus the model's name) equals the
checkpoint's TF name.
"""

from __future__ import annotations

import keras
import tensorflow as tf

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
    shape_list,
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


class GPTJAttention(Attention):
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
        self.q_proj = Linear(self.embed_dim, **dense, name="q_proj")
        self.k_proj = Linear(self.embed_dim, **dense, name="k_proj")
        self.v_proj = Linear(self.embed_dim, **dense, name="v_proj")
        self.out_proj = Linear(self.embed_dim, **dense, name="out_proj")
        self.attn_dropout = keras.layers.Dropout(config.attn_pdrop, name="attn_dropout")
        self.resid_dropout = keras.layers.Dropout(config.resid_pdrop, name="resid_dropout")
        self.register_causal_table(config.n_positions)
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

        # Scores in float32, as the checkpoints were trained.
        attn_output, present, attn_weights = self.attend(
            query, key, value, layer_past, attention_mask, head_mask, use_cache, output_attentions, cache_index,
            upcast=True,
        )
        attn_output = self.resid_dropout(self.out_proj(attn_output))
        return attn_output, present, attn_weights


class GPTJMLP(keras.layers.Layer):
    def __init__(self, intermediate_size: int, config: GPTJConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        initializer = init_normal(config.initializer_range)
        self.fc_in = Linear(intermediate_size, kernel_initializer=initializer, name="fc_in")
        self.fc_out = Linear(config.n_embd, kernel_initializer=initializer, name="fc_out")
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


class GPTJModel(DecoderModel, GPTJPreTrainedModel):
    """The bare GPT-J transformer: token embedding (no position table), `n_layer` blocks, final LayerNorm."""

    block_class = GPTJBlock
    # The positions pick the rotary angles inside each block.
    block_arguments = (
        "layer_past", "attention_mask", "position_ids", "head_mask", "use_cache", "output_attentions", "cache_index",
    )
    position_embeddings = False
    # Hugging Face's TF GPT-J names this matrix `weight` (TFSharedEmbeddings), not Keras' `embeddings`.
    token_table_name = "weight"


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

