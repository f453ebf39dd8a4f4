"""Weight-only int8 in PyTorch: `Int8Linear` (one quantized projection) and `QuantizationMixin` (`quantize`,
`from_quantized`; also the PyTorch-only `pack_for_inference`, `twinformers.pt.packing`). The scales and the
checkpoint format are shared (`twinformers.checkpoints.quantized`).

The matmul is `torch.ops.aten._weight_int8pack_mm`, PyTorch's CPU kernel for bfloat16 activations times an int8
(out, in) weight with per-output-channel scales: the int8 weight is read as is, never expanded to a float copy.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..adapters.mixin import ADAPTERS_ATTR
from ..checkpoints.canonical import open_checkpoint
from ..checkpoints.quantized import check_mode, quantization_config, quantize_per_channel
from .ops import Conv1D, from_numpy, numpy_view
from .packing import pack_for_inference

__all__ = ["Int8Linear", "QuantizationMixin"]

# The activations enter the int8 matmul as bfloat16 (the result comes back in float32): PyTorch's float32
# variant of `_weight_int8pack_mm` is 5-10x slower than a float32 matmul on an AVX2 CPU at batch 1, its bfloat16
# variant ~4x faster (benchmarks/bench_quantization.py, docs/quantization.md).
MATMUL_DTYPE = torch.bfloat16
# `_weight_int8pack_mm` on an AVX-512 CPU reads the input features 16 at a time: with other widths it returns
# garbage or crashes (torch 2.13), so narrower layers (the tests' tiny models) are zero-padded to a multiple.
KERNEL_K_MULTIPLE = 16


class Int8Linear(nn.Module):
    """`(x @ q) * scale + bias` with an int8 weight `q` held (out, in) and float32 (out,) `weight_scale`; `x`
    and `scale` are rounded to bfloat16 for the matmul (`MATMUL_DTYPE`), the result is float32.

    Args:
        weight: the float weight, (in, out) if `fan_in_fan_out` (GPT-2's Conv1D) else (out, in).
        bias: the float (out,) bias, or None.
        fan_in_fan_out: the layout of `weight`, kept for `state_dict` (the checkpoint holds the float layout).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, fan_in_fan_out: bool) -> None:
        super().__init__()
        q, scale = quantize_per_channel(numpy_view(weight.detach().float().cpu()), out_axis=int(fan_in_fan_out))
        q = from_numpy(q)
        self.register_buffer("weight", (q.T if fan_in_fan_out else q).contiguous())
        self.register_buffer("weight_scale", from_numpy(scale))
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        self.fan_in_fan_out = fan_in_fan_out
        self.out_features, self.in_features = self.weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., out)
        flat = x.reshape(-1, self.in_features).to(MATMUL_DTYPE).contiguous()
        weight = self.weight
        pad = -self.in_features % KERNEL_K_MULTIPLE
        if pad:  # zero columns add nothing to the dot products
            flat, weight = nn.functional.pad(flat, (0, pad)), nn.functional.pad(weight, (0, pad))
        out = torch.ops.aten._weight_int8pack_mm(flat, weight, self.weight_scale.to(MATMUL_DTYPE)).float()
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.fan_in_fan_out:  # stored in the float weight's (in, out) layout, as the format says
            destination[prefix + "weight"] = destination[prefix + "weight"].T

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        key = prefix + "weight"
        if self.fan_in_fan_out and key in state_dict:  # `load_state_dict` passes its own copy of the dict
            state_dict[key] = state_dict[key].T
        super()._load_from_state_dict(state_dict, prefix, *args)


class QuantizationMixin:
    """`quantize(mode)`, `from_quantized(path)` and `pack_for_inference()` for every PyTorch model."""

    @property
    def quantization_mode(self) -> str | None:
        """"int8" once quantized, else None."""
        return (getattr(self.config, "quantization_config", None) or {}).get("mode")

    def quantize(self, mode: str) -> QuantizationMixin:
        """Replace every projection and the LM head by an `Int8Linear` (weight-only, per output channel).

        Embeddings and layer norms stay float; a tied LM head gets its own int8 copy. The model is left in eval
        mode with no trainable parameters: a quantized model is for inference.

        Args:
            mode: "int8".
        Returns:
            The model (quantized in place).
        Raises:
            ValueError: an unsupported mode, a model already quantized, a model in training mode with trainable
                parameters (call `model.eval()` first), one with LoRA adapters (merge or delete them first), or
                one already packed (`pack_for_inference`: quantize first).
        """
        mode = check_mode(mode, self.quantization_mode)
        if getattr(self, "packed_for_inference", False):
            raise ValueError("quantize: the model is packed for inference; quantize first, then pack_for_inference()")
        self._check_inference_ready("quantize", "int8 weights cannot be trained")
        names = [name for name, module in self.named_modules() if isinstance(module, (Conv1D, nn.Linear))]
        for name in names:
            module = self.get_submodule(name)
            self.set_submodule(name, Int8Linear(module.weight, module.bias, isinstance(module, Conv1D)))
        self.requires_grad_(False)
        self.eval()
        self.config.quantization_config = quantization_config(mode, names)
        return self

    def pack_for_inference(self) -> QuantizationMixin:
        """Lay out every projection's weight for fast batch-1 decoding on CPU, in place (PyTorch only).

        float32 weights are stored with the longer side of their (in, out) matrix contiguous (a tied LM head's
        token table included) and GPT-2's Conv1D layers become `packing.MatvecConv1D` (one-row products through
        NumPy's BLAS, faster than MKL's here; the same parameters). bfloat16 projections that are not tied to an
        embedding are packed into oneDNN's blocked layout (`packing.PackedLinear`) where the CPU runs oneDNN
        bfloat16; elsewhere (AVX2 CPUs) they are stored with each output's row contiguous, which PyTorch's own
        bfloat16 kernels read 8-14x faster than GPT-2's (in, out) storage. No weight is kept twice, and
        `state_dict`, `save_pretrained` and the logits (float32: within 1e-5) are as before. Convert the dtype (or
        `quantize`) first; int8 layers are left as they are. The model is left in eval mode with no trainable
        parameters: a packed model is for inference.

        Returns:
            The model (packed in place).
        Raises:
            ValueError: the model is already packed, is in training mode with trainable parameters (call
                `model.eval()` first), or has LoRA adapters (merge or delete them first).
        """
        if getattr(self, "packed_for_inference", False):
            raise ValueError("pack_for_inference: the model is already packed")
        self._check_inference_ready("pack_for_inference", "a packed model is for inference")
        pack_for_inference(self)
        self.requires_grad_(False)
        self.eval()
        self.packed_for_inference = True
        return self

    def _frozen_for_inference(self) -> str | None:
        """How the weights were frozen for inference (`PreTrainedModel.train` refuses such a model), or None."""
        if self.quantization_mode:
            return "quantized to int8 (quantize)"
        if getattr(self, "packed_for_inference", False):
            return "packed for inference (pack_for_inference)"
        return None

    def _check_inference_ready(self, caller: str, why: str) -> None:
        """Refuse a model in training mode with trainable parameters, or one with LoRA adapters attached."""
        if self.training and any(p.requires_grad for p in self.parameters()):
            raise ValueError(f"{caller}: the model is in training mode with trainable parameters; {why} — call "
                             "model.eval() first")
        adapted = [name for name, module in self.named_modules() if getattr(module, ADAPTERS_ATTR, None)]
        if adapted:
            raise ValueError(f"{caller}: LoRA adapters are attached to {', '.join(adapted[:3])}; merge or delete "
                             "them first")

    @classmethod
    def from_quantized(cls, path: str | os.PathLike, **hub: Any) -> QuantizationMixin:
        """Load a checkpoint written by `save_pretrained` of a quantized model (config has `quantization_config`).

        Args:
            path: checkpoint directory (or Hub id). **hub: revision, cache_dir, local_files_only, token.
        Raises:
            ValueError: the checkpoint is not quantized. RuntimeError: its tensors do not fit the model.
        """
        config = cls.config_class.from_pretrained(path, **hub)
        settings = getattr(config, "quantization_config", None)
        if not settings:
            raise ValueError(f"{os.fspath(path)}: config.json has no quantization_config; use from_pretrained")
        del config.quantization_config
        model = cls(config)
        model.eval()
        model.quantize(settings["mode"])
        weights = open_checkpoint(path, **hub)
        model.load_state_dict({key: from_numpy(weights[key]) for key in weights}, strict=True)
        return model
