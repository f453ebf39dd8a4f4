"""Which checkpoint tensor fills which model parameter: Hugging Face's load-time rules, framework-free.

Every twin's `from_pretrained` asks `plan_load` the same question with canonical (PyTorch) key names on
both sides, so missing / unexpected keys are reported identically whatever the backend:

- a base-model checkpoint (no `transformer.` prefix) loads into a head model and vice versa;
- legacy LayerNorm names `gamma` / `beta` load as `weight` / `bias`;
- causal-mask buffers that old checkpoints carry (GPT-2 `attn.bias` / `attn.masked_bias`, GPT-Neo
  `attn.attention.bias` / `masked_bias`) are dropped silently;
- a tied parameter (`lm_head.weight` ↔ `transformer.wte.weight`) is never missing when its partner loads,
  and a checkpoint copy of it is never unexpected when the model ties it away;
- every shape mismatch is reported at once in one ValueError.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "LoadPlan",
    "plan_load",
    "tied_head_keys",
    "IGNORABLE_BUFFERS",
    "fix_legacy_key",
    "shape_mismatch_error",
]

logger = logging.getLogger(__name__)

# Non-persistent causal-mask buffers that checkpoints written by older transformers releases still carry.
# They hold no learned values (the twins build their masks from `model_math`), so loading ignores them.
# GPT-J checkpoints carry them too (`EleutherAI/gpt-j-6B`); Hugging Face merely warns there, we drop them.
IGNORABLE_BUFFERS: tuple[str, ...] = (
    r"(^|\.)h\.\d+\.(attn|crossattention|attn\.attention)\.(bias|masked_bias)$",
)

_LEGACY_LEAVES = {"gamma": "weight", "beta": "bias"}


@dataclasses.dataclass
class LoadPlan:
    """The outcome of matching a model's parameters with a checkpoint's tensors.

    Attributes:
        mapping: model canonical key → checkpoint key to read it from.
        missing_keys: model keys no checkpoint tensor fills (tied keys whose partner loads are NOT missing).
        unexpected_keys: checkpoint keys nothing uses (known ignorable buffers are dropped silently).
        tied: model keys left out of `mapping` because the model ties them to a partner that loads
            (key → that partner's model key); backends that keep tied copies apart fill them from it.
    """

    mapping: dict[str, str]
    missing_keys: list[str]
    unexpected_keys: list[str]
    tied: dict[str, str] = dataclasses.field(default_factory=dict)

    def loading_info(self) -> dict[str, list]:
        """Hugging Face's `output_loading_info=True` dict (mismatches never get here: they raise)."""
        return {
            "missing_keys": list(self.missing_keys),
            "unexpected_keys": list(self.unexpected_keys),
            "mismatched_keys": [],
            "error_msgs": [],
        }

    def report(self, model_name: str) -> dict[str, list]:
        """Log missing and unexpected keys as Hugging Face does, and return `loading_info()`."""
        if self.missing_keys:
            logger.warning("Some weights of %s were not in the checkpoint and are newly initialized: %s",
                           model_name, self.missing_keys)
        if self.unexpected_keys:
            logger.warning("Some weights of the checkpoint were not used by %s: %s", model_name, self.unexpected_keys)
        return self.loading_info()


def tied_head_keys(has_lm_head: bool, tie_word_embeddings: bool, base_model_prefix: str = "transformer"
                   ) -> dict[str, str]:
    """The `tied_keys` argument of `plan_load`, the one tying rule of every twin: a model with an LM head
    (`can_generate()`) and `config.tie_word_embeddings` shares `lm_head.weight` with the token embedding."""
    return {"lm_head.weight": f"{base_model_prefix}.wte.weight"} if has_lm_head and tie_word_embeddings else {}


def fix_legacy_key(key: str) -> str:
    """`h.0.ln_1.gamma` → `h.0.ln_1.weight`, `...beta` → `...bias` (TF-era LayerNorm names)."""
    head, _, leaf = key.rpartition(".")
    if leaf in _LEGACY_LEAVES:
        return f"{head}.{_LEGACY_LEAVES[leaf]}" if head else _LEGACY_LEAVES[leaf]
    return key


def shape_mismatch_error(rows: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]], what: str) -> ValueError:
    """One ValueError naming every (key, checkpoint shape, expected shape) row."""
    lines = "\n".join(f"  {key}: checkpoint {tuple(got)} vs expected {tuple(want)}" for key, got, want in rows)
    return ValueError(f"{what}: {len(rows)} tensor(s) have the wrong shape:\n{lines}")


def plan_load(
    model_shapes: Mapping[str, tuple[int, ...]],
    checkpoint_shapes: Mapping[str, tuple[int, ...]],
    *,
    base_model_prefix: str = "transformer",
    tied_keys: Mapping[str, str] = {},  # noqa: B006 - read-only default
    ignore_unexpected: Sequence[str] = (),
    ignore_missing: Sequence[str] = (),
) -> LoadPlan:
    """Match model parameters to checkpoint tensors by Hugging Face's rules (see the module docstring).

    Args:
        model_shapes: canonical key → shape of every parameter the model holds.
        checkpoint_shapes: canonical key → shape of every tensor in the checkpoint (`open_checkpoint(...)`
            gives canonical keys for any file format).
        base_model_prefix: the attribute holding the base model in head models.
        tied_keys: model key → the model key it is tied to (e.g. `{"lm_head.weight": "transformer.wte.weight"}`);
            the relation is symmetric.
        ignore_unexpected: extra regexes (`re.search`) of checkpoint keys to drop silently.
        ignore_missing: regexes of model keys not to report as missing.
    Returns:
        The `LoadPlan`; lists are sorted.
    Raises:
        ValueError: shapes disagree (every offending key with both shapes), or two checkpoint tensors
            (e.g. `ln_1.gamma` and `ln_1.weight`) claim the same parameter.
    """
    prefix = f"{base_model_prefix}." if base_model_prefix else ""
    model_has_prefix = bool(prefix) and any(k.startswith(prefix) for k in model_shapes)
    checkpoint_has_prefix = bool(prefix) and any(k.startswith(prefix) for k in checkpoint_shapes)
    partners: dict[str, str] = {}
    for key, partner in tied_keys.items():
        partners[key], partners[partner] = partner, key
    ignorable = [re.compile(p) for p in (*IGNORABLE_BUFFERS, *ignore_unexpected)]

    def model_key_for(checkpoint_key: str) -> str:
        key = fix_legacy_key(checkpoint_key)
        if key in model_shapes:
            return key
        if model_has_prefix and not checkpoint_has_prefix:  # base checkpoint → head model
            return prefix + key
        if checkpoint_has_prefix and not model_has_prefix and key.startswith(prefix):  # head ckpt → base
            return key[len(prefix):]
        return key

    mapping: dict[str, str] = {}
    claimed_twice: list[str] = []
    unexpected: list[str] = []
    for checkpoint_key in checkpoint_shapes:
        key = model_key_for(checkpoint_key)
        if key in model_shapes:
            if key in mapping:
                claimed_twice.append(f"{key} (from {mapping[key]!r} and {checkpoint_key!r})")
            mapping[key] = checkpoint_key
        elif key in partners and partners[key] in model_shapes:
            continue  # a stored copy of a weight this model ties away (`lm_head.weight` in a .bin)
        elif any(p.search(checkpoint_key) for p in ignorable):
            continue
        else:
            unexpected.append(checkpoint_key)
    if claimed_twice:
        raise ValueError("several checkpoint tensors fill the same parameter: " + "; ".join(sorted(claimed_twice)))

    mismatched = [
        (key, tuple(checkpoint_shapes[source]), tuple(model_shapes[key]))
        for key, source in mapping.items()
        if tuple(checkpoint_shapes[source]) != tuple(model_shapes[key])
    ]
    if mismatched:
        raise shape_mismatch_error(sorted(mismatched), "checkpoint does not match the model")

    tied = {key: partners[key] for key in model_shapes if key not in mapping and partners.get(key) in mapping}
    skip_missing = [re.compile(p) for p in ignore_missing]
    missing = [
        key for key in model_shapes
        if key not in mapping and key not in tied and not any(p.search(key) for p in skip_missing)
    ]
    return LoadPlan(mapping=mapping, missing_keys=sorted(missing), unexpected_keys=sorted(unexpected), tied=tied)
