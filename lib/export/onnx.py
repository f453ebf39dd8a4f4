"""`--format onnx`: ONNX graphs of a PyTorch twin (the `torch.onnx` dynamo exporter), run with ONNX Runtime alone.

Files written to OUT:
    model.onnx   `input_ids`, `attention_mask` (int64, (B, T)) → `logits` first; for a causal LM also
                 `present.{i}.key` / `present.{i}.value` (B, H, T, D) per layer: the prompt's KV cache.
    decode.onnx  (causal LM) `input_ids` (B, 1), `attention_mask` (B, S + 1) and `past.{i}.key` / `past.{i}.value`
                 (B, H, S, D) → `logits` (B, 1, V) and the `present.*` cache grown to S + 1.
    config.json  the model config, plus `export` (input and output names, the file list).
Positions come from the attention mask inside the graphs (`cumsum(mask) - 1`), so a left-padded batch decodes as
`generate` does. Batch and lengths are dynamic.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from . import check_embeddable, head_kind, staged_output

__all__ = ["export", "MAX_EMBEDDED_BYTES"]

# ONNX files are protobuf messages, which cannot exceed 2 GiB; larger weights go to external data files.
MAX_EMBEDDED_BYTES = 2**31 - 2**26
_SUPPORTED = ("causal_lm", "sequence_classification", "token_classification")


class _Graph(torch.nn.Module):
    """The twin as a function of flat tensors: (input_ids, attention_mask, *past) → (logits, *present)."""

    def __init__(self, model: torch.nn.Module, cached: bool) -> None:
        super().__init__()
        self.model = model
        self.cached = cached

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor) -> tuple:
        seq_len = input_ids.shape[1]
        position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)[:, -seq_len:]
        past_key_values = tuple(zip(past[0::2], past[1::2])) if past else None
        kwargs = {"position_ids": position_ids} if self.cached else {}
        if self.cached:
            kwargs.update(past_key_values=past_key_values, use_cache=True)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        if not self.cached:
            return (outputs.logits,)
        return (outputs.logits, *[t for layer in outputs.past_key_values for t in layer])


def export(model: Any, out: str | os.PathLike, force: bool = False, external_data: bool | None = None,
           max_embedded_bytes: int = MAX_EMBEDDED_BYTES, opset_version: int = 18) -> None:
    """Write the ONNX graphs of a PyTorch twin to the directory `out` (see the module docstring).

    Args:
        model: a PyTorch causal LM, sequence or token classification twin (float32).
        out: output directory; staged next to it, then renamed.
        force: replace an existing `out`.
        external_data: keep the weights in `*.onnx.data` files beside the graphs; None: only when they exceed
            `max_embedded_bytes` (False then raises instead).
        opset_version: the ONNX opset of the graphs.
    """
    kind = head_kind(model, _SUPPORTED, "onnx")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if external_data is None:
        external_data = size > max_embedded_bytes
    elif not external_data:
        check_embeddable(size, max_embedded_bytes, "ONNX", "export with external data (external_data=True)")
    model = model.eval()
    config = model.config
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    cached = kind == "causal_lm"
    cache_names = [f"{{}}.{i}.{part}" for i in range(layers) for part in ("key", "value")]
    present = [name.format("present") for name in cache_names] if cached else []
    past = [name.format("past") for name in cache_names]

    batch, length, past_length = (torch.export.Dim(n, min=1, max=config.max_position_embeddings)
                                  for n in ("batch", "length", "past_length"))
    ids = torch.ones((2, 3), dtype=torch.long)
    graphs = {"model.onnx": ((ids, torch.ones_like(ids)), ["input_ids", "attention_mask"],
                             ({0: batch, 1: length}, {0: batch, 1: length}))}
    if cached:
        step_ids = torch.ones((2, 1), dtype=torch.long)
        mask = torch.ones((2, 4), dtype=torch.long)
        cache = [torch.zeros((2, heads, 3, head_dim)) for _ in past]
        graphs["decode.onnx"] = (
            (step_ids, mask, *cache), ["input_ids", "attention_mask", *past],
            # `*past` arrives as one tuple argument: its shapes are one nested tuple too
            ({0: batch}, {0: batch, 1: past_length + 1}, tuple({0: batch, 2: past_length} for _ in past)),
        )
    with staged_output(out, force) as stage, torch.no_grad():
        graph = _Graph(model, cached).eval()
        for file, (args, input_names, dynamic_shapes) in graphs.items():
            program = torch.onnx.export(
                graph, args, dynamo=True, input_names=input_names, output_names=["logits", *present],
                dynamic_shapes=dynamic_shapes, opset_version=opset_version, optimize=True, verbose=False,
            )
            program.save(os.path.join(stage, file), external_data=external_data)
        info = config.to_dict()
        info["export"] = {
            "format": "onnx", "head": kind, "class": type(model).__name__, "files": sorted(os.listdir(stage)),
            "inputs": ["input_ids", "attention_mask"], "past": past, "present": present,
            "cache_shape": "(batch, heads, length, head_dim)",
        }
        with open(os.path.join(stage, "config.json"), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
