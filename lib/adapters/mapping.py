"""PEFT's adapter keys ↔ a model's projection layers: which modules a config targets, their sizes and
layouts (from the conversion tables), and the checks on an adapter's tensors."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..conversion.tables import BASE_MODEL_PREFIX, TABLES, expected_shapes, family_of
from .config import DEFAULT_TARGET_MODULES, LoraConfig

__all__ = ["LoraTarget", "head_of_class", "resolve_targets", "peft_key", "adapter_arrays"]

PEFT_PREFIX = "base_model.model."
_PROJECTION_KINDS = ("conv1d", "linear", "linear_no_bias")
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


@dataclasses.dataclass(frozen=True)
class LoraTarget:
    """One projection an adapter updates: its module path (PyTorch names, `transformer.h.0.attn.c_attn`),
    its sizes, and whether its canonical weight is stored (in, out) — GPT-2's Conv1D, PEFT's fan_in_fan_out."""

    module: str
    in_features: int
    out_features: int
    fan_in_fan_out: bool


def head_of_class(model: Any) -> str:
    """The conversion-table head ("base", "causal_lm", ...) of a model instance, from its class name."""
    classes = TABLES[family_of(model.config)].classes
    name = type(model).__name__
    for head, class_name in classes.items():
        if class_name == name:
            return head
    raise ValueError(f"LoRA: {name} is not a {family_of(model.config)} model class ({', '.join(classes.values())})")


def projection_layers(config: Any, head: str) -> dict[str, LoraTarget]:
    """Every projection of a `head` model (module path → LoraTarget) in state_dict order; a tied lm_head is
    left out (an update there would change the input embedding too)."""
    family = family_of(config)
    table = TABLES[family]
    kinds = {layer.path: layer.kind for layer in (*table.backbone, *table.heads[head])}
    targets = {}
    for key, shape in expected_shapes(config, head).items():
        module, _, leaf = key.rpartition(".")
        bare = module.removeprefix(BASE_MODEL_PREFIX + ".") if head != "base" else module
        kind = kinds.get(re.sub(r"^h\.\d+\.", "h.{i}.", bare))
        if leaf != "weight" or kind not in _PROJECTION_KINDS:
            continue
        if module == "lm_head" and config.tie_word_embeddings:
            continue
        fan_in_fan_out = kind == "conv1d"  # Conv1D weights are (in, out); Linear ones (out, in)
        in_features, out_features = shape if fan_in_fan_out else shape[::-1]
        targets[module] = LoraTarget(module, in_features, out_features, fan_in_fan_out)
    return targets


def resolve_targets(config: Any, head: str, lora_config: LoraConfig) -> dict[str, LoraTarget]:
    """The projections `lora_config.target_modules` selects in a `head` model built from `config`, with PEFT's
    matching rules (list: a name equal to the path or its last components; string: a full regex match).

    Raises:
        ValueError: a target that matches no projection — every projection the model has is listed.
    """
    family = family_of(config)
    layers = projection_layers(config, head)
    target_modules = lora_config.target_modules
    if target_modules is None:
        target_modules = DEFAULT_TARGET_MODULES[family]
    if target_modules == "all-linear":
        prefix = "" if head == "base" else BASE_MODEL_PREFIX + "."
        return {m: t for m, t in layers.items() if m.startswith(prefix + "h.")}
    if isinstance(target_modules, str):
        selected = {m: t for m, t in layers.items() if re.fullmatch(target_modules, m)}
        unmatched = [] if selected else [target_modules]
    else:
        selected = {m: t for m, t in layers.items() if any(m == n or m.endswith("." + n) for n in target_modules)}
        unmatched = [n for n in target_modules if not any(m == n or m.endswith("." + n) for m in layers)]
    if unmatched:
        names = sorted({m.rsplit(".", 1)[-1] for m in layers}, key=list(m.rsplit(".", 1)[-1] for m in layers).index)
        raise ValueError(
            f"LoRA target_modules {unmatched} match no projection of this {family} model; its projection modules "
            f"are {names} (e.g. {next(iter(layers))})"
        )
    return selected


def peft_key(module: str, which: str) -> str:
    """PEFT's file key for the `which` ("A" or "B") matrix of the adapter on `module`."""
    return f"{PEFT_PREFIX}{module}.lora_{which}.weight"


def adapter_arrays(
    tensors: Mapping[str, np.ndarray], targets: Mapping[str, LoraTarget], r: int, source: str = "adapter"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Module → (A (r, in), B (out, r)) float arrays from PEFT-keyed `tensors`, checked against `targets`.

    Keys saved from a head model load into its base model and vice versa (the `transformer.` prefix is
    added or dropped, as `from_pretrained` does for weights).

    Raises:
        ValueError: keys that are not LoRA keys or name modules the model has not (another family's adapter),
            targets without both matrices, and shapes that do not fit — every problem listed at once.
    """
    prefix = BASE_MODEL_PREFIX + "."
    found: dict[str, dict[str, np.ndarray]] = {}
    unknown, problems = [], []
    for key, array in tensors.items():
        match = _KEY.match(key)
        module = match.group("module") if match else None
        if module is not None and module not in targets:
            alternative = module.removeprefix(prefix) if module.startswith(prefix) else prefix + module
            module = alternative if alternative in targets else None
        if module is None:
            unknown.append(key)
            continue
        found.setdefault(module, {})[match.group("which")] = np.asarray(array)
    if unknown:
        problems.append(f"keys that name no target module of this model (an adapter for another family or "
                        f"head?): {', '.join(sorted(unknown))}; its targets are {', '.join(targets)}")
    for module, target in targets.items():
        pair = found.get(module, {})
        for which, shape in (("A", (r, target.in_features)), ("B", (target.out_features, r))):
            if which not in pair:
                problems.append(f"missing {peft_key(module, which)}")
            elif pair[which].shape != shape:
                problems.append(f"{peft_key(module, which)}: shape {pair[which].shape}, but {module} needs {shape} "
                                f"(r={r}, in={target.in_features}, out={target.out_features})")
    if problems:
        raise ValueError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return {module: (found[module]["A"], found[module]["B"]) for module in targets}
