"""Shared pieces of the TensorFlow tests: the class registry, seeded tiny models (built once per process) and
inputs, and an independent NumPy GPT-2 forward."""

from __future__ import annotations

import numpy as np

import twinformers.tf as tft
from helpers import BASE_CLASSES, CLASSES, FAMILIES, LM_CLASSES, tiny_config  # noqa: F401 (re-exported)
from twinformers.conversion.tables import family_of, plan_from_backend

CLASS_IDS = [name for _, name, _ in CLASSES]
KIND_OF = {name: kind for _, name, kind in CLASSES}
# Heads whose call takes and returns a cache.
CACHED_KINDS = ("base", "causal_lm", "seq_cls", "double_heads")
BATCH, SEQ, CHOICES = 3, 7, 2
HIDDEN, HEADS, LAYERS, VOCAB = 24, 3, 2, 97
PAD = 0

_MODELS: dict[tuple, tft.PreTrainedModel] = {}


def perturb(model: tft.PreTrainedModel, seed: int = 0) -> tft.PreTrainedModel:
    """Give every variable random values (LayerNorm gammas around 1): default init would hide mapping bugs."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        noise = rng.standard_normal(tuple(var.shape)).astype(np.float32) * 0.1
        var.assign(1.0 + noise if var.path.endswith("gamma") else noise * 2)
    return model


def make_model(name: str, seed: int = 0, **overrides) -> tft.PreTrainedModel:
    """A built, perturbed tiny model of class `name` (pad_token_id = PAD). Cached: TF models are slow to
    build on a small machine, so tests share them and must not change their weights."""
    key = (name, seed, tuple(sorted(overrides.items())))
    if key not in _MODELS:
        family = next(f for f, n, _ in CLASSES if n == name)
        config = tiny_config(family, **{"pad_token_id": PAD, **overrides})
        model = getattr(tft, name)(config)
        model.build()
        _MODELS[key] = perturb(model, seed)
    return _MODELS[key]


def random_ids(shape: tuple[int, ...], seed: int = 1, low: int = 1, high: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=shape).astype(np.int32)


def model_inputs(kind: str, seq: int = SEQ, seed: int = 1) -> dict[str, np.ndarray]:
    """Token inputs for a head kind ((B, C, T) for double heads); ids avoid the PAD id 0."""
    if kind == "double_heads":
        return {"input_ids": random_ids((BATCH, CHOICES, seq), seed)}
    return {"input_ids": random_ids((BATCH, seq), seed)}


def main_output(kind: str) -> str:
    return {"base": "last_hidden_state", "qa": "start_logits"}.get(kind, "logits")


def logits_of(kind: str, output) -> np.ndarray:
    """The per-token output of a head: hidden states, LM logits, token logits, or stacked QA logits."""
    if kind == "qa":
        return np.stack((np.asarray(output.start_logits), np.asarray(output.end_logits)), -1)
    return np.asarray(output[main_output(kind)])


def canonical_weights(model: tft.PreTrainedModel) -> dict[str, np.ndarray]:
    """Canonical (PyTorch-named, PyTorch-layout) NumPy copies of a model's variables, via the conversion table."""
    variables = {v.path.split("/", 1)[1]: v for v in model.weights}
    head = "base" if model.base_model is model else None
    plan = plan_from_backend(family_of(model.config), "tf", variables, head=head)
    return {key: transform.to_canonical(variables[name].numpy()) for name, (key, transform) in plan.items()}


# --------------------------------------------------------------------------------------------- NumPy reference
def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu_new(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _attend(query: np.ndarray, key: np.ndarray, value: np.ndarray, allowed: np.ndarray, scale: float) -> np.ndarray:
    # (B, T, H, D) x (B, S, H, D) -> (B, T, H, D)
    scores = np.einsum("bthd,bshd->bhts", query, key) * scale
    scores = np.where(allowed, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", probs, value)


def numpy_gpt2(weights: dict[str, np.ndarray], config, input_ids: np.ndarray,
               encoder_hidden_states: np.ndarray | None = None) -> np.ndarray:
    """GPT-2's last hidden state (B, T, D) in float64 NumPy from canonical base-model weights (no `transformer.`
    prefix), honouring `scale_attn_weights`, `scale_attn_by_inverse_layer_idx` and cross-attention."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    eps, heads = config.layer_norm_epsilon, config.n_head
    batch, seq = input_ids.shape
    hidden = w["wte.weight"][input_ids] + w["wpe.weight"][np.arange(seq)][None]
    causal = np.tril(np.ones((seq, seq), bool))[None, None]

    def split(x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], x.shape[1], heads, -1)

    for i in range(config.n_layer):
        p = f"h.{i}."
        head_dim = hidden.shape[-1] // heads
        scale = head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scale /= i + 1
        x = _layer_norm(hidden, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = x @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        query, key, value = (split(t) for t in np.split(qkv, 3, axis=-1))
        attn = _attend(query, key, value, causal, scale).reshape(batch, seq, -1)
        hidden = hidden + attn @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        if encoder_hidden_states is not None:
            x = _layer_norm(hidden, w[p + "ln_cross_attn.weight"], w[p + "ln_cross_attn.bias"], eps)
            query = split(x @ w[p + "crossattention.q_attn.weight"] + w[p + "crossattention.q_attn.bias"])
            kv = encoder_hidden_states @ w[p + "crossattention.c_attn.weight"] + w[p + "crossattention.c_attn.bias"]
            key, value = (split(t) for t in np.split(kv, 2, axis=-1))
            everything = np.ones((1, 1, seq, key.shape[1]), bool)
            attn = _attend(query, key, value, everything, scale).reshape(batch, seq, -1)
            hidden = hidden + attn @ w[p + "crossattention.c_proj.weight"] + w[p + "crossattention.c_proj.bias"]
        x = _layer_norm(hidden, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = _gelu_new(x @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        hidden = hidden + x @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    return _layer_norm(hidden, w["ln_f.weight"], w["ln_f.bias"], eps)
