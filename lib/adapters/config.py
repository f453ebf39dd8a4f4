"""`LoraConfig`: PEFT's LoRA config fields, defaults and `adapter_config.json` layout."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

__all__ = ["LoraConfig", "DEFAULT_TARGET_MODULES"]

# PEFT's per-family defaults (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn"],
    "gptj": ["q_proj", "v_proj"],
    "gpt_neo": ["q_proj", "v_proj"],
}

# adapter_config.json fields PEFT writes that twinformers does not implement: accepted only at these values
# (PEFT's defaults), so an adapter that needs one of them fails loudly instead of loading wrong.
_UNSUPPORTED_AT_DEFAULT: dict[str, Any] = {
    "use_dora": False,
    "lora_bias": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "modules_to_save": None,
    "layers_to_transform": None,
    "layers_pattern": None,
    "layer_replication": None,
    "exclude_modules": None,
    "target_parameters": None,
    "trainable_token_indices": None,
    "use_qalora": False,
    "use_bdlora": None,
}
# Fields read and written as PEFT names them, with PEFT's defaults (`task_type` is ours: PEFT's is None).
_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "fan_in_fan_out", "bias", "use_rslora",
           "init_lora_weights", "task_type", "base_model_name_or_path", "inference_mode")


@dataclasses.dataclass
class LoraConfig:
    """A LoRA adapter's settings, with PEFT's field names and meanings.

    The update of a target projection is `scaling · B A x`, `A` (r, in), `B` (out, r), with `scaling =
    lora_alpha / r` (or `lora_alpha / sqrt(r)` with `use_rslora`).

    Args:
        r: rank, > 0.
        lora_alpha: scaling numerator.
        lora_dropout: dropout probability on the adapter's input, in training only.
        target_modules: module names — a list matched against the end of each module path (`"c_attn"` matches
            `transformer.h.0.attn.c_attn`), a string matched as a regular expression against whole paths, or
            `"all-linear"` (every projection of the blocks). None: the family's default, as PEFT's
            (`c_attn` for GPT-2, `q_proj`/`v_proj` for GPT-J and GPT-Neo).
        fan_in_fan_out: whether the base weights are stored (in, out) — GPT-2's Conv1D. Set from the model when
            the adapter is added (PEFT corrects it the same way, with a warning).
        bias: only "none" (no bias is trained).
        use_rslora: rank-stabilized scaling `lora_alpha / sqrt(r)`.
        init_lora_weights: True: `A` Kaiming-uniform, `B` zero (the adapter starts as a no-op), as PEFT's;
            False: both random (for tests).
        task_type: PEFT's task type, "CAUSAL_LM" by default.
        base_model_name_or_path: where the base model came from (written to the file, not checked).
        inference_mode: PEFT's flag, True in files it saves.
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    fan_in_fan_out: bool = False
    bias: str = "none"
    use_rslora: bool = False
    init_lora_weights: bool = True
    task_type: str | None = "CAUSAL_LM"
    base_model_name_or_path: str | None = None
    inference_mode: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoraConfig: r must be a positive int, got {self.r!r}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(f"LoraConfig: lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.bias != "none":
            raise ValueError(f"LoraConfig: bias={self.bias!r} is not supported; twinformers trains no biases "
                             "(bias='none')")
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = list(self.target_modules)
            if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
                raise ValueError(f"LoraConfig: target_modules must be non-empty names, got {self.target_modules!r}")
        elif self.target_modules is not None and not isinstance(self.target_modules, str):
            raise ValueError(f"LoraConfig: target_modules must be a list of names, a regex string or None, "
                             f"got {self.target_modules!r}")

    @property
    def scaling(self) -> float:
        """The factor on `B A x`: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora."""
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    # ----------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        """The adapter_config.json contents: our fields plus PEFT's required ones at their defaults."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        data.update({name: _copy(value) for name, value in _UNSUPPORTED_AT_DEFAULT.items()})
        data["peft_type"] = "LORA"
        return dict(sorted(data.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "adapter config") -> LoraConfig:
        """Build from adapter_config.json contents; fields PEFT has and twinformers does not are ignored at
        their defaults and refused otherwise (named in the error)."""
        peft_type = data.get("peft_type", "LORA")
        if peft_type != "LORA":
            raise ValueError(f"{source}: peft_type {peft_type!r} is not supported; twinformers loads LORA adapters")
        refused = [f"{k}={data[k]!r}" for k, default in _UNSUPPORTED_AT_DEFAULT.items()
                   if k in data and data[k] not in (default, None) and data[k] != {}]
        if refused:
            raise ValueError(f"{source}: twinformers does not support {', '.join(refused)} (only plain LoRA)")
        try:
            return cls(**{k: data[k] for k in _FIELDS if k in data})
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value
