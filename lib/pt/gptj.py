"""GPT-J in PyTorch: the base model and its causal-LM, classification and QA heads.

Module and parameter names are Hugging Face's, so `state_dict()` keys equal the checkpoint keys.
"""

from __future__ import annotations

import torch
from torch import nn

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
    apply_rotary,
    get_activation,
    rotary_table,
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

Tensor = torch.Tensor
PastKeyValues = tuple[tuple[Tensor, Tensor], ...]


class GPTJAttention(Attention):
    """Multi-head self-attention with rotary position embeddings on the first `rotary_dim` dims of each head."""

    def __init__(self, config: GPTJConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        self.rotary_dim = config.rotary_dim or self.head_dim
        self.scale = self.head_dim**-0.5
        # Declared k, v, q as in Hugging Face: state_dict order decides how checkpoints are sharded.
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.register_causal_table(config.n_positions)
        # Plain attributes, not buffers: `.half()` must not round the float32 tables.
        self.rotary_sin, self.rotary_cos = rotary_table(config.n_positions, self.rotary_dim)

    def forward(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: int | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """hidden_states (B, T, H*D); attention_mask (B, 1, 1, S) bool; position_ids (B or 1, T) →
        (B, T, H*D), present, attn_weights."""
        batch_size, query_len = hidden_states.shape[:2]
        # (B, T, H*D) -> (B, T, H, D): the rotation is applied per head before the heads move forward
        query = self.q_proj(hidden_states).view(batch_size, query_len, self.num_heads, self.head_dim)
        key = self.k_proj(hidden_states).view(batch_size, query_len, self.num_heads, self.head_dim)
        value = self.v_proj(hidden_states).view(batch_size, query_len, self.num_heads, self.head_dim)

        # Rotary only on the first `rotary_dim` dims of each head; the rest pass through.
        sin = self.rotary_sin.to(hidden_states.device)[position_ids][:, :, None, :]  # (B, T, 1, R/2)
        cos = self.rotary_cos.to(hidden_states.device)[position_ids][:, :, None, :]
        query = torch.cat((apply_rotary(query[..., : self.rotary_dim], sin, cos), query[..., self.rotary_dim :]), -1)
        key = torch.cat((apply_rotary(key[..., : self.rotary_dim], sin, cos), key[..., self.rotary_dim :]), -1)
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)  # -> (B, H, T, D)

        # Scores in float32, as the checkpoints were trained.
        attn_output, present, attn_weights = self.attend(
            query, key, value, layer_past, attention_mask, head_mask, use_cache, output_attentions, cache_index,
            upcast=True,
        )
        attn_output = self.resid_dropout(self.out_proj(attn_output))
        return attn_output, present, attn_weights


class GPTJMLP(nn.Module):
    def __init__(self, intermediate_size: int, config: GPTJConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.n_embd, intermediate_size)
        self.fc_out = nn.Linear(intermediate_size, config.n_embd)
        self.act = get_activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden_states = self.act(self.fc_in(hidden_states))
        return self.dropout(self.fc_out(hidden_states))


class GPTJBlock(nn.Module):
    """Parallel block: attention and MLP both read `ln_1(x)` and are added to the residual together."""

    def __init__(self, config: GPTJConfig, layer_idx: int = 0) -> None:
        super().__init__()
        inner_dim = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPTJAttention(config, layer_idx)
        self.mlp = GPTJMLP(inner_dim, config)

    def forward(
        self,
        hidden_states: Tensor,
        layer_past: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        cache_index: int | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """Returns hidden_states (B, T, H*D), present, attn_weights."""
        residual = hidden_states
        hidden_states = self.ln_1(hidden_states)
        attn_output, present, attn_weights = self.attn(
            hidden_states, layer_past, attention_mask, position_ids, head_mask, use_cache, output_attentions,
            cache_index,
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

