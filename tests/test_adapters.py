"""The framework-free half of LoRA: LoraConfig (PEFT's fields, defaults, files), target matching and the checks
on an adapter's tensors."""

import json

import numpy as np
import pytest
from lora_cases import case_dir, peft_config

from helpers import tiny_config
from twinformers import LoraConfig
from twinformers.adapters import load_adapter_files, peft_key, resolve_targets, save_adapter_files
from twinformers.adapters.mapping import adapter_arrays


def test_scaling_and_peft_file_fields_round_trip(tmp_path):
    assert LoraConfig(r=4, lora_alpha=8).scaling == 2.0
    assert LoraConfig(r=4, lora_alpha=8, use_rslora=True).scaling == 4.0
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], use_rslora=True)
    save_adapter_files(tmp_path, config, {peft_key("transformer.h.0.attn.c_attn", "A"): np.ones((4, 8), "f4")})
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["peft_type"] == "LORA" and data["use_dora"] is False and data["r"] == 4
    loaded, tensors = load_adapter_files(tmp_path)
    assert loaded == config
    assert list(tensors) == ["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_peft_written_config_reads_and_unsupported_options_are_refused():
    data = peft_config("gptj-all-linear")
    config = LoraConfig.from_dict(data)
    assert (config.r, config.lora_alpha, config.use_rslora) == (4, 8, True)
    with pytest.raises(ValueError, match="use_dora=True"):
        LoraConfig.from_dict({**data, "use_dora": True})
    with pytest.raises(ValueError, match="rank_pattern"):
        LoraConfig.from_dict({**data, "rank_pattern": {"q_proj": 2}})
    with pytest.raises(ValueError, match="peft_type 'IA3'"):
        LoraConfig.from_dict({**data, "peft_type": "IA3"})
    for bad, message in ((dict(r=0), "r must be a positive int"), (dict(r=-2), "got -2"),
                         (dict(lora_dropout=1.0), "lora_dropout"), (dict(bias="all"), "bias='all'")):
        with pytest.raises(ValueError, match=message):
            LoraConfig(**bad)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json in .*base"):
        load_adapter_files(case_dir("gpt2-default", "base"))


def test_targets_follow_peft_matching_rules():
    gpt2, neo = tiny_config("gpt2"), tiny_config("gpt_neo")
    default = resolve_targets(gpt2, "causal_lm", LoraConfig())
    assert list(default) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert all(t.fan_in_fan_out and (t.in_features, t.out_features) == (24, 72) for t in default.values())
    c_proj = resolve_targets(gpt2, "base", LoraConfig(target_modules=["c_proj"]))
    assert list(c_proj) == ["h.0.attn.c_proj", "h.0.mlp.c_proj", "h.1.attn.c_proj", "h.1.mlp.c_proj"]
    assert c_proj["h.0.mlp.c_proj"].in_features == 96
    regex = resolve_targets(neo, "causal_lm", LoraConfig(target_modules=r".*h\.1\..*\.q_proj"))
    assert list(regex) == ["transformer.h.1.attn.attention.q_proj"] and not regex[next(iter(regex))].fan_in_fan_out
    everything = resolve_targets(neo, "causal_lm", LoraConfig(target_modules="all-linear"))
    assert len(everything) == 12 and "lm_head" not in everything
    with pytest.raises(ValueError, match=r"\['q_proj'\] match no projection of this gpt2 model.*'c_attn'"):
        resolve_targets(gpt2, "causal_lm", LoraConfig(target_modules=["q_proj"]))


def test_adapter_tensors_are_checked_all_at_once():
    targets = resolve_targets(tiny_config("gptj"), "causal_lm", LoraConfig(r=2))
    good = {}
    for module, target in targets.items():
        good[peft_key(module, "A")] = np.zeros((2, target.in_features), "f4")
        good[peft_key(module, "B")] = np.zeros((target.out_features, 2), "f4")
    assert set(adapter_arrays(good, targets, r=2)) == set(targets)
    base_keys = {k.replace(".transformer.", ".", 1): v for k, v in good.items()}  # saved from a base model
    assert set(adapter_arrays(base_keys, targets, r=2)) == set(targets)
    bad = dict(good)
    bad[peft_key("transformer.h.0.attn.q_proj", "A")] = np.zeros((2, 25), "f4")
    del bad[peft_key("transformer.h.1.attn.v_proj", "B")]
    bad[peft_key("transformer.h.0.attn.c_attn", "A")] = np.zeros((2, 24), "f4")
    with pytest.raises(ValueError, match="3 problem") as error:
        adapter_arrays(bad, targets, r=2, source="x.safetensors")
    message = str(error.value)
    assert "transformer.h.0.attn.c_attn.lora_A.weight" in message and "another family" in message
    assert "missing base_model.model.transformer.h.1.attn.v_proj.lora_B.weight" in message
    assert "q_proj.lora_A.weight: shape (2, 25), but transformer.h.0.attn.q_proj needs (2, 24)" in message
