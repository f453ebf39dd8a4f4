"""Shared pieces of the PyTorch tests: the class registry, seeded tiny models and inputs."""

from __future__ import annotations

import numpy as np
import torch

import twinformers.pt as pt
from helpers import BASE_CLASSES, CLASSES, FAMILIES, LM_CLASSES, tiny_config  # noqa: F401 (re-exported)

CLASS_IDS = [name for _, name, _ in CLASSES]
# Heads whose forward takes and returns a cache.
CACHED_KINDS = ("base", "causal_lm", "seq_cls", "double_heads")
BATCH, SEQ, CHOICES = 3, 7, 2
PAD = 0


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (LayerNorm weights around 1): default init would hide mapping bugs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.1
            is_layer_norm_weight = name.rsplit(".", 2)[-2].startswith("ln") and name.endswith("weight")
            param.copy_(1.0 + noise if is_layer_norm_weight else noise * 2)
    return model


def make_model(name: str, family: str | None = None, seed: int = 0, **overrides) -> torch.nn.Module:
    """A perturbed tiny model of class `name` in eval mode."""
    family = family or next(f for f, n, _ in CLASSES if n == name)
    config = tiny_config(family, **{"pad_token_id": PAD, **overrides})
    return perturb(getattr(pt, name)(config), seed).eval()


def random_ids(shape: tuple[int, ...], seed: int = 1, low: int = 1, high: int = 97) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(low, high, size=shape))


def model_inputs(kind: str, seq: int = SEQ, seed: int = 1) -> dict[str, torch.Tensor]:
    """Token inputs for a head kind ((B, C, T) for double heads); ids avoid the PAD id 0."""
    if kind == "double_heads":
        return {"input_ids": random_ids((BATCH, CHOICES, seq), seed)}
    return {"input_ids": random_ids((BATCH, seq), seed)}


def main_output(kind: str) -> str:
    return {"base": "last_hidden_state", "qa": "start_logits"}.get(kind, "logits")


def logits_of(kind: str, output) -> torch.Tensor:
    """The per-token output of a head: hidden states, LM logits, token logits, or stacked QA logits."""
    if kind == "qa":
        return torch.stack((output.start_logits, output.end_logits), -1)
    return output[main_output(kind)]
