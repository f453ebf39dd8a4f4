"""`pack_for_inference`: every projection's weight laid out (float32) or packed (bfloat16) in place for batch-1
decoding on CPU, with no second copy of any weight and the same `state_dict` (names, shapes, values).

Batch-1 decoding is a matrix-vector product per projection, and on this CPU its speed depends on the weight's
layout (benchmarks/bench_pt_matvec.py, docs/benchmarks.md):
- float32: MKL reads a projection's (in, out) matrix at ~80% of NumPy's read bandwidth when the longer side is
  contiguous and at ~50-65% when it is not. GPT-2's LM head is the token table (vocab, hidden) — the short side
  contiguous — and read at about half speed; GPT-2's `mlp.c_proj` (3072 in, 768 out) is stored (in, out).
  `lay_out` rewrites such a weight's storage (one transposed copy, then the old one is freed) and keeps the
  tensor's shape and values: every op sees the same matrix through other strides. NumPy's OpenBLAS reads the
  Conv1D weights 10-40% faster still than MKL at batch 1: `MatvecConv1D` (the same parameters) sends one-row
  float32 inputs there.
- bfloat16 where oneDNN runs it (AVX512-BF16 or AMX): `addmm` reorders the weight into oneDNN's blocked layout
  on every call (~3x the matmul at batch 1). `PackedLinear` holds the blocked weight instead of the plain one and
  gives the plain one back in `state_dict`. A weight shared with an embedding (a tied LM head) stays plain: the
  token lookup needs its rows.
- bfloat16 elsewhere (AVX2 CPUs): PyTorch's own kernels read a matrix stored (in, out) 8-14x slower than the same
  matrix stored (out, in) — GPT-2's `attn.c_attn` 4.1 ms against 0.49 ms a decode step, a 64-token prefill 207 ms
  against 25 ms — so `lay_out` stores every such weight with each output's row contiguous. Only GPT-2's Conv1D
  weights move: `nn.Linear` already holds (out, in).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from .ops import Conv1D

__all__ = ["MatvecConv1D", "PackedLinear", "lay_out", "pack_for_inference"]


@functools.cache
def bf16_packing_available() -> bool:
    """Whether oneDNN runs bfloat16 matmuls on this CPU (AVX512-BF16 or AMX)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class PackedLinear(nn.Module):
    """`x @ W.T + bias` in bfloat16 through oneDNN, with the weight held in oneDNN's blocked layout (inference
    only). `state_dict` holds the plain weight in the layout of the module it replaced.

    Args:
        weight: bfloat16, (in, out) if `fan_in_fan_out` (GPT-2's Conv1D) else (out, in).
        bias: (out,) or None.
        fan_in_fan_out: the layout of `weight`, kept for `state_dict`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, fan_in_fan_out: bool) -> None:
        if not bf16_packing_available():  # oneDNN's own message names CPU flags, not the cause
            raise RuntimeError("PackedLinear: oneDNN does not run bfloat16 matmuls on this CPU (it needs AVX512-BF16 "
                               "or AMX); pack_for_inference() keeps such layers plain here")
        super().__init__()
        self.fan_in_fan_out = fan_in_fan_out
        self.register_buffer("weight", self._pack(weight.detach()))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.out_features, self.in_features = self.weight.shape

    def _pack(self, weight: torch.Tensor) -> torch.Tensor:
        plain = weight.T if self.fan_in_fan_out else weight  # (out, in)
        return torch.ops.mkldnn._reorder_linear_weight(plain.contiguous(), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., out)
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("PackedLinear (model.pack_for_inference()) has no gradients: run it under "
                               "torch.no_grad(), or load the model again to train it")
        if x.dtype != torch.bfloat16:
            raise TypeError(f"PackedLinear: the input is {x.dtype}, the packed weight bfloat16; convert the model "
                            "before pack_for_inference(), not after")
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        plain = self.weight.to_dense()  # (out, in); weight before bias, as in the module it replaced
        destination[prefix + "weight"] = plain.T if self.fan_in_fan_out else plain
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        # The packed tensor is opaque (nothing can be copied into it): a loaded weight is packed and replaces it.
        key = prefix + "weight"
        incoming = state_dict.pop(key, None)  # `load_state_dict` passes its own copy of the dict
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if incoming is None:
            return
        if key in missing_keys:
            missing_keys.remove(key)
        shape = (self.out_features, self.in_features)[::-1 if self.fan_in_fan_out else 1]
        if tuple(incoming.shape) != shape:
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(incoming.shape)}, the "
                              f"shape in the current model is {shape}")
            return
        self.weight = self._pack(incoming.detach().to(torch.bfloat16))


class MatvecConv1D(Conv1D):
    """`Conv1D` (the same parameters) whose float32 one-row inference on CPU runs NumPy's matmul: NumPy's
    OpenBLAS reads GPT-2's projection weights at 10-40% more GB/s than PyTorch's MKL at batch 1
    (benchmarks/bench_pt_matvec.py). Other inputs take `Conv1D`'s path."""

    def __init__(self, module: Conv1D) -> None:
        nx, nf = module.weight.shape
        with torch.device("meta"):  # no weight is allocated: the module's own parameters are taken over
            super().__init__(nf, nx)
        self.weight, self.bias = module.weight, module.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., out)
        if (x.numel() != x.shape[-1] or x.dtype != torch.float32 or x.device.type != "cpu"
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return super().forward(x)
        out = np.matmul(x.detach().reshape(1, -1).numpy(), self.weight.detach().numpy())
        out += self.bias.detach().numpy()
        return torch.from_numpy(out).view(*x.shape[:-1], self.nf)


def lay_out(weight: nn.Parameter, fan_in_fan_out: bool) -> None:
    """Store a projection weight in the layout PyTorch's CPU kernels read fastest at batch 1, in place: float32
    with the longer side of its (in, out) matrix contiguous, bfloat16 with each output's row contiguous.

    Args:
        weight: (in, out) if `fan_in_fan_out` else (out, in); its shape and values do not change.
    """
    matrix = weight.detach() if fan_in_fan_out else weight.detach().T  # (in, out)
    # in <= out (float32): each input feature's row of outputs is read contiguously; else each output's dot product
    by_input = weight.dtype == torch.float32 and matrix.shape[0] <= matrix.shape[1]
    target = matrix.contiguous() if by_input else matrix.T.contiguous().T
    if target.data_ptr() != matrix.data_ptr():
        weight.data = target if fan_in_fan_out else target.T


def pack_for_inference(model: nn.Module) -> None:
    """Lay out (float32; bfloat16 without oneDNN's bf16) or pack (bfloat16, oneDNN) every Conv1D and nn.Linear
    weight of `model` in place."""
    counts: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        counts[id(parameter)] = counts.get(id(parameter), 0) + 1
    layers = [(name, module) for name, module in model.named_modules() if type(module) in (Conv1D, nn.Linear)]
    for name, module in layers:
        fan_in_fan_out = isinstance(module, Conv1D)
        weight = module.weight
        if weight.dtype == torch.float32:
            lay_out(weight, fan_in_fan_out)
            if fan_in_fan_out:
                model.set_submodule(name, MatvecConv1D(module))
        elif weight.dtype == torch.bfloat16 and counts[id(weight)] == 1 and bf16_packing_available():
            model.set_submodule(name, PackedLinear(weight, module.bias, fan_in_fan_out))
        elif weight.dtype == torch.bfloat16:
            lay_out(weight, fan_in_fan_out)
