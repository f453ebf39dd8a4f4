"""`AdapterMixin`: the backend-independent half of the adapter API on every model — names, bookkeeping,
files and checks. Each backend's `lora.py` subclasses it as `LoraMixin` and supplies the tensor work
(`_create_adapter`, `_adapter_layers`, `_merge_layer`, `_freeze_base`,
`_adapters_changed`)."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

from .config import LoraConfig
from .files import ADAPTER_WEIGHTS_NAME, load_adapter_files, save_adapter_files
from .mapping import LoraTarget, adapter_arrays, head_of_class, peft_key, resolve_targets

__all__ = ["AdapterMixin", "AdapterState", "ADAPTERS_ATTR", "is_adapter_name"]

# The attribute of each targeted projection that holds its LoraLayers by adapter name; it appears in the
# adapter weights' names (`...c_attn.lora_adapters.default.lora_A.weight`, `.../c_attn/lora_adapters/...`).
ADAPTERS_ATTR = "lora_adapters"


def is_adapter_name(name: str) -> bool:
    """Whether a parameter name or variable path belongs to an adapter (not to the base model)."""
    return ADAPTERS_ATTR in re.split(r"[./]", name)


@dataclasses.dataclass
class AdapterState:
    """A model's adapters: configs and targets by adapter name, the active one, and the enabled / merged flags."""

    configs: dict[str, LoraConfig] = dataclasses.field(default_factory=dict)
    targets: dict[str, dict[str, LoraTarget]] = dataclasses.field(default_factory=dict)
    active: str | None = None
    enabled: bool = True
    merged: bool = False


class AdapterMixin:
    """LoRA adapters on a model: `add_adapter`, `load_adapter`, `save_adapter`, `set_adapter`, `merge_adapter`,
    `unmerge_adapter`, `disable_adapters`, `enable_adapters`. One adapter is active at a time; it is applied
    unless disabled or merged. The base weights are frozen while adapters exist; `save_pretrained` writes the
    base weights only (with a merged adapter folded in), `save_adapter` the adapter in PEFT's format."""

    # ----------------------------------------------------------------------------------------- public API
    @property
    def peft_config(self) -> dict[str, LoraConfig]:
        """Adapter name → its LoraConfig (Hugging Face's attribute name)."""
        return self._adapter_state().configs

    @property
    def active_adapter(self) -> str | None:
        return self._adapter_state().active

    def add_adapter(self, adapter_config: LoraConfig, adapter_name: str = "default") -> None:
        """Add a freshly initialized LoRA adapter on `adapter_config.target_modules`, make it the active one
        and freeze the base weights (only adapter weights train).

        Raises:
            ValueError: a name already in use, or target modules the model does not have (listed).
        """
        if not isinstance(adapter_config, LoraConfig):
            raise TypeError(f"add_adapter needs a twinformers.LoraConfig, got {type(adapter_config).__name__}")
        state = self._adapter_state()
        self._check_new_name(adapter_name)
        targets = resolve_targets(self.config, head_of_class(self), adapter_config)
        # PEFT corrects fan_in_fan_out from the layer type the same way (GPT-2's Conv1D is (in, out)).
        config = dataclasses.replace(adapter_config, fan_in_fan_out=any(t.fan_in_fan_out for t in targets.values()))
        self._create_adapter(adapter_name, config, targets)
        state.configs[adapter_name] = config
        state.targets[adapter_name] = targets
        self._freeze_base()
        self.set_adapter(adapter_name)

    def load_adapter(self, adapter_path: str | os.PathLike, adapter_name: str = "default") -> None:
        """Load a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`) as the active
        adapter. Everything is checked before the model changes.

        Raises:
            ValueError: a name already in use, target modules or keys this model does not have (an adapter for
                another family), shapes that do not fit, unsupported PEFT options — naming the file and key.
            FileNotFoundError: a missing file.
        """
        self._check_new_name(adapter_name)
        config, tensors = load_adapter_files(adapter_path)
        weights_path = os.path.join(os.fspath(adapter_path), ADAPTER_WEIGHTS_NAME)
        try:
            targets = resolve_targets(self.config, head_of_class(self), config)
        except ValueError as err:
            raise ValueError(f"{adapter_path}: {err}") from None
        arrays = adapter_arrays(tensors, targets, config.r, source=weights_path)
        self.add_adapter(config, adapter_name)
        layers = self._adapter_layers(adapter_name)
        for module, (lora_a, lora_b) in arrays.items():
            layers[module].set_arrays(lora_a, lora_b)

    def save_adapter(self, save_directory: str | os.PathLike, adapter_name: str | None = None) -> None:
        """Write an adapter (default: the active one) as PEFT does: `adapter_config.json` and
        `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight` (r, in) / `lora_B` (out, r)."""
        state = self._adapter_state()
        adapter_name = state.active if adapter_name is None else adapter_name
        self._check_name(adapter_name)
        tensors: dict[str, np.ndarray] = {}
        for module, layer in self._adapter_layers(adapter_name).items():
            tensors[peft_key(module, "A")], tensors[peft_key(module, "B")] = layer.get_arrays()
        config = dataclasses.replace(state.configs[adapter_name], inference_mode=True,
                                     base_model_name_or_path=getattr(self.config, "name_or_path", None) or None)
        save_adapter_files(save_directory, config, tensors)

    def set_adapter(self, adapter_name: str) -> None:
        """Make `adapter_name` the active adapter (the others stay loaded, unused)."""
        self._check_name(adapter_name)
        state = self._adapter_state()
        if state.merged and adapter_name != state.active:
            raise ValueError(f"adapter {state.active!r} is merged into the base weights; unmerge_adapter() first")
        state.active = adapter_name
        self._update_layers()

    def merge_adapter(self) -> None:
        """Fold the active adapter into the base weights (`W + scaling · B A`, in the weight's layout); the
        forward pass then costs nothing extra, and `save_pretrained` writes the merged model."""
        state = self._adapter_state()
        self._check_name(state.active)
        if state.merged:
            raise ValueError(f"adapter {state.active!r} is already merged")
        for module, layer in self._adapter_layers(state.active).items():
            self._merge_layer(module, layer, sign=1.0)
        state.merged = True
        self._update_layers()

    def unmerge_adapter(self) -> None:
        """Subtract a merged adapter from the base weights again (exact up to float rounding)."""
        state = self._adapter_state()
        if not state.merged:
            raise ValueError("no adapter is merged")
        for module, layer in self._adapter_layers(state.active).items():
            self._merge_layer(module, layer, sign=-1.0)
        state.merged = False
        self._update_layers()

    def disable_adapters(self) -> None:
        """Run the base model alone (the adapters stay loaded)."""
        state = self._adapter_state()
        self._check_name(state.active)
        if state.merged:
            raise ValueError(f"adapter {state.active!r} is merged into the base weights; unmerge_adapter() first")
        state.enabled = False
        self._update_layers()

    def enable_adapters(self) -> None:
        """Apply the active adapter again after `disable_adapters()`."""
        state = self._adapter_state()
        self._check_name(state.active)
        state.enabled = True
        self._update_layers()

    # ----------------------------------------------------------------------------------------- bookkeeping
    def _adapter_state(self) -> AdapterState:
        state = self.__dict__.get("_lora_state")
        if state is None:
            state = AdapterState()
            self.__dict__["_lora_state"] = state  # past nn.Module / Keras attribute tracking: plain data
        return state

    def _check_new_name(self, adapter_name: str) -> None:
        if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name or "/" in adapter_name:
            raise ValueError(f"adapter_name must be a non-empty name without '.' or '/', got {adapter_name!r}")
        names = list(self._adapter_state().configs)
        if adapter_name in names:
            raise ValueError(f"an adapter named {adapter_name!r} already exists (adapters: {names}); pass another "
                             "adapter_name")

    def _check_name(self, adapter_name: str | None) -> None:
        names = list(self._adapter_state().configs)
        if not names:
            raise ValueError(f"{type(self).__name__} has no adapter: add_adapter() or load_adapter() first")
        if adapter_name not in names:
            raise ValueError(f"no adapter named {adapter_name!r}; adapters: {names}")

    def _update_layers(self) -> None:
        """Set every layer's `active` flag: the active adapter, when enabled and not merged."""
        state = self._adapter_state()
        for name in state.configs:
            on = name == state.active and state.enabled and not state.merged
            for layer in self._adapter_layers(name).values():
                layer.active = on
        self._adapters_changed()

    # ----------------------------------------------------------------------------------------- backend hooks
    def _create_adapter(self, adapter_name: str, config: LoraConfig, targets: dict[str, LoraTarget]) -> None:
        raise NotImplementedError

    def _adapter_layers(self, adapter_name: str) -> dict[str, Any]:
        raise NotImplementedError

    def _merge_layer(self, module: str, layer: Any, sign: float) -> None:
        raise NotImplementedError

    def _freeze_base(self) -> None:
        raise NotImplementedError

    def _adapters_changed(self) -> None:
        """Called after every change of which adapter applies: drop programs traced with the old state."""
        raise NotImplementedError
