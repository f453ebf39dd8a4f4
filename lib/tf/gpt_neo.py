"""GPT-Neo in TensorFlow (Keras 3): the base model and its causal-LM, classification and QA heads.

Layer and variable names are Hugging Face's, so a variable's path (minus the model's name) equals the
checkpoint's TF name.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ..configuration import GPTNeoConfig
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
    get_activation,
    init_normal,
    split_heads,
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


class GPTNeoSelfAttention(Attention):
    """Multi-head self-attention, global or local (each query sees only the last `window_size` positions)."""

    def __init__(self, config: GPTNeoConfig, attention_type: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = 1.0  # GPT-Neo has no 1/sqrt(D) scale
        initializer = init_normal(config.initializer_range)
        dense = dict(use_bias=False, kernel_initializer=initializer)
        self.q_proj = Linear(self.embed_dim, **dense, name="q_proj")
        self.k_proj = Linear(self.embed_dim, **dense, name="k_proj")
        self.v_proj = Linear(self.embed_dim, **dense, name="v_proj")
        self.out_proj = Linear(self.embed_dim, kernel_initializer=initializer, name="out_proj")
        self.attn_dropout = keras.layers.Dropout(config.attention_dropout, name="attn_dropout")
        self.resid_dropout = keras.layers.Dropout(config.resid_dropout, name="resid_dropout")
        window = config.window_size if attention_type == "local" else None
        self.register_causal_table(config.max_position_embeddings, window)

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

        # Scores in float32, as the checkpoints were trained.
        attn_output, present, attn_weights = self.attend(
            query, key, value, layer_past, attention_mask, head_mask, use_cache, output_attentions, cache_index,
            upcast=True,
        )
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
        self.c_fc = Linear(intermediate_size, kernel_initializer=initializer, name="c_fc")
        self.c_proj = Linear(config.hidden_size, kernel_initializer=initializer, name="c_proj")
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


class GPTNeoModel(DecoderModel, GPTNeoPreTrainedModel):
    """The bare GPT-Neo transformer: token + position embeddings, `num_layers` blocks, final LayerNorm."""

    block_class = GPTNeoBlock
    embed_dropout_field = "embed_dropout"


class GPTNeoForCausalLM(ModelForCausalLM, GPTNeoPreTrainedModel):
    """GPT-Neo with a language-modeling head tied to the token embedding (unless `tie_word_embeddings` is off)."""

    base_model_class = GPTNeoModel


class GPTNeoForSequenceClassification(ModelForSequenceClassification, GPTNeoPreTrainedModel):
    """GPT-Neo with a bias-free linear `score` head on the last non-padding token."""

    base_model_class = GPTNeoModel


class GPTNeoForTokenClassification(ModelForTokenClassification, GPTNeoPreTrainedModel):
    """GPT-Neo with dropout and a linear `classifier` on every token."""

    base_model_class = GPTNeoModel


class GPTNeoForQuestionAnswering(ModelForQuestionAnswering, GPTNeoPreTrainedModel):
    """GPT-Neo with a linear `qa_outputs` head giving span start and end scores per token."""

    base_model_class = GPTNeoModel

