"""LoRA in PyTorch: `LoraLayer` (one adapter on one projection) and `LoraMixin` (the adapter methods of every
model). Adapters attach to their projection with a forward hook, so module and `state_dict` names of the base
model never change; `state_dict()` leaves the adapter weights out (`save_adapter` writes them)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..adapters import LoraConfig, LoraTarget
from ..adapters.mixin import ADAPTERS_ATTR, AdapterMixin, is_adapter_name
from .ops import from_numpy, numpy_view

__all__ = ["LoraLayer", "LoraMixin"]

class LoraLayer(nn.Module):
    """`scaling · B A dropout(x)`, added to one projection's output: `lora_A` (r, in), `lora_B` (out, r) as
    PEFT stores them."""

    def __init__(self, target: LoraTarget, config: LoraConfig) -> None:
        super().__init__()
        self.lora_A = nn.Linear(target.in_features, config.r, bias=False)
        self.lora_B = nn.Linear(config.r, target.out_features, bias=False)
        self.lora_dropout = nn.Dropout(config.lora_dropout)
        self.scaling = config.scaling
        self.fan_in_fan_out = target.fan_in_fan_out
        self.active = False
        # PEFT's init: A Kaiming-uniform, B zero, so a new adapter changes nothing until it trains.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        if config.init_lora_weights:
            nn.init.zeros_(self.lora_B.weight)
        else:
            nn.init.kaiming_uniform_(self.lora_B.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., r) -> (..., out); dropout acts in training mode only
        x = self.lora_dropout(x.to(self.lora_A.weight.dtype))
        return self.lora_B(self.lora_A(x)) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update in the base weight's layout: (out, in), or (in, out) for Conv1D."""
        delta = (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (out, r) @ (r, in) -> (out, in)
        return delta.T if self.fan_in_fan_out else delta

    def get_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(A (r, in), B (out, r)) as float NumPy arrays, PEFT's layout."""
        return tuple(numpy_view(w.detach().cpu().contiguous()).copy() for w in (self.lora_A.weight, self.lora_B.weight))

    def set_arrays(self, lora_a: np.ndarray, lora_b: np.ndarray) -> None:
        with torch.no_grad():
            for weight, array in ((self.lora_A.weight, lora_a), (self.lora_B.weight, lora_b)):
                weight.copy_(from_numpy(np.ascontiguousarray(array)).to(weight.dtype))


def _apply_adapters(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of a targeted projection: add the active adapter's update to its output."""
    for layer in getattr(module, ADAPTERS_ATTR).values():
        if layer.active:
            output = output + layer(args[0]).to(output.dtype)
    return output


def _drop_adapter_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict hook: the base model's keys only (adapters are saved with `save_adapter`)."""
    for key in [k for k in state_dict if is_adapter_name(k)]:
        del state_dict[key]


def _ignore_missing_adapter_keys(module: nn.Module, incompatible_keys: nn.modules.module._IncompatibleKeys) -> None:
    """load_state_dict hook: a base state_dict loads into an adapted model."""
    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not is_adapter_name(k)]


class LoraMixin(AdapterMixin):
    """The adapter methods of every PyTorch model (see `twinformers.adapters.mixin.AdapterMixin`)."""

    def _create_adapter(self, adapter_name: str, config: LoraConfig, targets: dict[str, LoraTarget]) -> None:
        if not self._adapter_state().configs:
            self._register_state_dict_hook(_drop_adapter_keys)
            self.register_load_state_dict_post_hook(_ignore_missing_adapter_keys)
        reference = next(self.parameters())
        for module_name, target in targets.items():
            module = self.get_submodule(module_name)
            if not hasattr(module, ADAPTERS_ATTR):
                module.add_module(ADAPTERS_ATTR, nn.ModuleDict())
                module.register_forward_hook(_apply_adapters)
            layer = LoraLayer(target, config).to(device=reference.device, dtype=reference.dtype)
            layer.train(self.training)
            getattr(module, ADAPTERS_ATTR)[adapter_name] = layer

    def _adapter_layers(self, adapter_name: str) -> dict[str, LoraLayer]:
        return {module: getattr(self.get_submodule(module), ADAPTERS_ATTR)[adapter_name]
                for module in self._adapter_state().targets[adapter_name]}

    def _merge_layer(self, module: str, layer: LoraLayer, sign: float) -> None:
        weight = self.get_submodule(module).weight
        with torch.no_grad():
            weight += (sign * layer.delta_weight().float()).to(weight.dtype)

    def _freeze_base(self) -> None:
        for name, param in self.named_parameters():
            param.requires_grad = is_adapter_name(name)

    def _adapters_changed(self) -> None:
        """Nothing to do: PyTorch runs eagerly, the hooks read the layers' flags on every call."""
