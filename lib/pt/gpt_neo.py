"""GPT-Neo in PyTorch: the base model and its causal-LM, classification and QA heads.

Module and parameter names are Hugging Face's, so `state_dict()` keys equal the checkpoint keys.
"""

from __future__ import annotations

import torch
from torch import nn

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
    get_activation,
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

Tensor = torch.Tensor
PastKeyValues = tuple[tuple[Tensor, Tensor], ...]


class GPTNeoSelfAttention(Attention):
    """Multi-head self-attention, global or local (each query sees only the last `window_size` positions)."""

    def __init__(self, config: GPTNeoConfig, attention_type: str) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = 1.0  # GPT-Neo has no 1/sqrt(D) scale
        # Declared k, v, q as in Hugging Face: state_dict order decides how checkpoints are sharded.
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=True)
        self.attn_dropout = nn.Dropout(config.attention_dropout)
        self.resid_dropout = nn.Dropout(config.resid_dropout)
        window = config.window_size if attention_type == "local" else None
        self.register_causal_table(config.max_position_embeddings, window)

    def forward(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: int | None = None,
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


class GPTNeoAttention(nn.Module):
    """Picks the layer's attention type from `config.attention_layers` (Hugging Face's extra nesting level)."""

    def __init__(self, config: GPTNeoConfig, layer_id: int = 0) -> None:
        super().__init__()
        self.attention_type = config.attention_layers[layer_id]
        self.attention = GPTNeoSelfAttention(config, self.attention_type)

    def forward(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: int | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        return self.attention(
            hidden_states, layer_past, attention_mask, head_mask, use_cache, output_attentions, cache_index
        )


class GPTNeoMLP(nn.Module):
    def __init__(self, intermediate_size: int, config: GPTNeoConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, intermediate_size)
        self.c_proj = nn.Linear(intermediate_size, config.hidden_size)
        self.act = get_activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_dropout)

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden_states = self.act(self.c_fc(hidden_states))
        return self.dropout(self.c_proj(hidden_states))


class GPTNeoBlock(nn.Module):
    """Pre-LayerNorm block: attention, then MLP, each added to the residual."""

    def __init__(self, config: GPTNeoConfig, layer_id: int = 0) -> None:
        super().__init__()
        inner_dim = config.intermediate_size if config.intermediate_size is not None else 4 * config.hidden_size
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = GPTNeoAttention(config, layer_id)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = GPTNeoMLP(inner_dim, config)

    def forward(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: int | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
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

