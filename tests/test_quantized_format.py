"""The framework-free half of int8 (`twinformers.checkpoints.quantized`): scale names in the conversion plan,
the state_dict order of scales, and the converter's refusal of int8 checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twinformers.checkpoints.quantized import plan_with_scales, quantize_per_channel, state_dict_position
from twinformers.checkpoints.safetensors import write_safetensors
from twinformers.conversion.converter import convert
from twinformers.conversion.tables import IDENTITY, TRANSPOSE, plan_from_backend


def test_scales_follow_their_weights_in_the_plan() -> None:
    names = ["transformer/h/0/attn/c_attn/kernel", "transformer/h/0/attn/c_attn/kernel_scale",
             "lm_head/kernel", "lm_head/kernel_scale"]
    plan = plan_with_scales(names, lambda float_names: plan_from_backend("gpt2", "flax", float_names))
    assert plan["transformer/h/0/attn/c_attn/kernel_scale"] == ("transformer.h.0.attn.c_attn.weight_scale", IDENTITY)
    assert plan["lm_head/kernel"] == ("lm_head.weight", TRANSPOSE)
    assert plan["lm_head/kernel_scale"] == ("lm_head.weight_scale", IDENTITY)
    with pytest.raises(ValueError, match="'lm_head/kernel_scale' has no weight 'lm_head/kernel'"):
        plan_with_scales(["lm_head/kernel_scale"], lambda float_names: plan_from_backend("gpt2", "flax", float_names))


def test_scales_sort_right_after_their_weights() -> None:
    order = {"a.weight": 0, "a.bias": 1, "b.weight": 2}
    keys = ["b.weight", "a.weight_scale", "lm_head.weight_scale", "a.bias", "lm_head.weight", "a.weight"]
    assert sorted(keys, key=lambda key: state_dict_position(order, key)) == [
        "a.weight", "a.weight_scale", "a.bias", "b.weight", "lm_head.weight", "lm_head.weight_scale"]


def test_convert_refuses_an_int8_checkpoint(tmp_path) -> None:
    source = tmp_path / "int8"
    source.mkdir()
    config = {"model_type": "gpt2", "vocab_size": 11, "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2,
              "quantization_config": {"quant_method": "twinformers", "mode": "int8", "modules": ["lm_head"]}}
    (source / "config.json").write_text(json.dumps(config))
    q, scale = quantize_per_channel(np.ones((11, 8), np.float32), out_axis=0)
    write_safetensors(source / "model.safetensors", {"lm_head.weight": q, "lm_head.weight_scale": scale},
                      metadata={"format": "pt"})
    with pytest.raises(ValueError, match="int8 checkpoint.*from_quantized"):
        convert(source, tmp_path / "out", to="tf", progress=False)
    assert not (tmp_path / "out").exists()
