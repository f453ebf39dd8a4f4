"""`loading.plan_load`: Hugging Face's load-time rules, checked against what transformers 4.47.1 reported."""

from __future__ import annotations

import json
import os

import pytest

from helpers import HF_FIXTURES
from twinformers.checkpoints.loading import LoadPlan, fix_legacy_key, plan_load
from twinformers.checkpoints.safetensors import SafetensorsFile

TIED = {"lm_head.weight": "transformer.wte.weight"}
HEAD_CLASSES = {
    "gpt2": {"base": "GPT2Model", "causal_lm": "GPT2LMHeadModel"},
    "gptj": {"base": "GPTJModel", "causal_lm": "GPTJForCausalLM"},
    "gpt_neo": {"base": "GPTNeoModel", "causal_lm": "GPTNeoForCausalLM"},
}


def safetensors_shapes(family: str, head: str) -> dict[str, tuple[int, ...]]:
    """Shapes in the HF-written `model.safetensors` of a fixture (tied `lm_head.weight` left out, as HF does)."""
    file = SafetensorsFile(os.path.join(HF_FIXTURES, f"{family}-pt-{head}", "model.safetensors"))
    return {key: file.shape(key) for key in file}


def model_shapes(family: str, head: str) -> dict[str, tuple[int, ...]]:
    """The parameters a model of that head holds: the stored tensors plus the tied `lm_head.weight`."""
    shapes = safetensors_shapes(family, head)
    if head == "causal_lm" and family != "gptj":
        shapes["lm_head.weight"] = shapes["transformer.wte.weight"]
    return shapes


def tied_keys(family: str, head: str) -> dict[str, str]:
    return TIED if head == "causal_lm" and family != "gptj" else {}


def load_hf_records() -> dict:
    with open(os.path.join(HF_FIXTURES, "pt-cross-head-loading.json"), encoding="utf-8") as f:
        return json.load(f)


HF_RECORDS = load_hf_records()


@pytest.mark.parametrize("case", sorted(HF_RECORDS))
def test_cross_head_loading_matches_hugging_face(case):
    # e.g. "gptj: seq_cls ckpt -> GPTJForCausalLM"
    family, rest = case.split(": ")
    source_head, model_class = rest.split(" ckpt -> ")
    model_head = {v: k for k, v in HEAD_CLASSES[family].items()}[model_class]
    plan = plan_load(
        model_shapes(family, model_head),
        safetensors_shapes(family, source_head),
        tied_keys=tied_keys(family, model_head),
    )
    expected = HF_RECORDS[case]
    assert plan.missing_keys == sorted(expected["missing_keys"])
    assert plan.unexpected_keys == sorted(expected["unexpected_keys"])
    assert plan.loading_info() == {**expected, "missing_keys": sorted(expected["missing_keys"]),
                                   "unexpected_keys": sorted(expected["unexpected_keys"])}


def test_base_checkpoint_into_head_model_adds_prefix():
    plan = plan_load(model_shapes("gpt2", "causal_lm"), safetensors_shapes("gpt2", "base"), tied_keys=TIED)
    assert plan.mapping["transformer.h.1.attn.c_attn.weight"] == "h.1.attn.c_attn.weight"
    assert "lm_head.weight" not in plan.mapping
    assert plan.tied == {"lm_head.weight": "transformer.wte.weight"}
    assert plan.missing_keys == [] and plan.unexpected_keys == []


def test_head_checkpoint_into_base_model_strips_prefix():
    plan = plan_load(model_shapes("gptj", "base"), safetensors_shapes("gptj", "causal_lm"))
    assert plan.mapping["wte.weight"] == "transformer.wte.weight"
    assert len(plan.mapping) == len(model_shapes("gptj", "base"))
    assert plan.unexpected_keys == ["lm_head.bias", "lm_head.weight"]


def test_same_layout_maps_identically():
    shapes = safetensors_shapes("gpt_neo", "qa")
    plan = plan_load(shapes, shapes)
    assert plan == LoadPlan(mapping={k: k for k in shapes}, missing_keys=[], unexpected_keys=[])


def test_legacy_gamma_beta_names_load():
    model = {"h.0.ln_1.weight": (4,), "h.0.ln_1.bias": (4,), "ln_f.weight": (4,)}
    plan = plan_load(model, {"h.0.ln_1.gamma": (4,), "h.0.ln_1.beta": (4,), "ln_f.gamma": (4,)})
    assert plan.mapping == {"h.0.ln_1.weight": "h.0.ln_1.gamma", "h.0.ln_1.bias": "h.0.ln_1.beta",
                            "ln_f.weight": "ln_f.gamma"}
    assert fix_legacy_key("gamma") == "weight"
    assert fix_legacy_key("h.0.attn.c_attn.bias") == "h.0.attn.c_attn.bias"


def test_two_tensors_for_one_parameter_is_an_error():
    with pytest.raises(ValueError, match="ln_1.weight"):
        plan_load({"ln_1.weight": (4,)}, {"ln_1.weight": (4,), "ln_1.gamma": (4,)})


def test_legacy_mask_buffers_are_dropped_silently():
    model = model_shapes("gpt2", "causal_lm")
    checkpoint = dict(safetensors_shapes("gpt2", "causal_lm"))
    checkpoint.update({
        "transformer.h.0.attn.bias": (1, 1, 64, 64), "transformer.h.1.attn.masked_bias": (),
        "transformer.h.0.crossattention.bias": (1, 1, 64, 64),
    })
    neo = {"h.0.attn.attention.bias": (1, 1, 64, 64), "h.0.attn.attention.masked_bias": ()}
    assert plan_load(model, checkpoint, tied_keys=TIED).unexpected_keys == []
    neo_plan = plan_load(model_shapes("gpt_neo", "base"), {**safetensors_shapes("gpt_neo", "base"), **neo})
    assert neo_plan.unexpected_keys == []
    # Only the buffer names are forgiven: a real stray tensor is still reported.
    stray = plan_load(model, {**checkpoint, "transformer.h.0.attn.extra": (3,)}, tied_keys=TIED)
    assert stray.unexpected_keys == ["transformer.h.0.attn.extra"]


def test_stored_tied_copy_is_not_unexpected_when_the_model_ties_it_away():
    # A .bin keeps `lm_head.weight`; a twin whose LM head reuses `wte` has no such parameter at all.
    model = safetensors_shapes("gpt2", "causal_lm")
    checkpoint = model_shapes("gpt2", "causal_lm")
    plan = plan_load(model, checkpoint, tied_keys=TIED)
    assert plan.unexpected_keys == [] and plan.missing_keys == []
    untied = plan_load(model, checkpoint)
    assert untied.unexpected_keys == ["lm_head.weight"]


def test_tied_partner_loading_the_other_way_round():
    # Only `lm_head.weight` stored: `transformer.wte.weight` is filled through the tie, not missing.
    plan = plan_load({"transformer.wte.weight": (5, 2), "lm_head.weight": (5, 2)}, {"lm_head.weight": (5, 2)},
                     tied_keys=TIED)
    assert plan.missing_keys == [] and plan.tied == {"transformer.wte.weight": "lm_head.weight"}


def test_untied_lm_head_is_missing():
    plan = plan_load(model_shapes("gpt2", "causal_lm"), safetensors_shapes("gpt2", "causal_lm"))
    assert plan.missing_keys == ["lm_head.weight"]


def test_shape_mismatches_are_listed_together():
    model = model_shapes("gpt2", "seq_cls")
    checkpoint = dict(safetensors_shapes("gpt2", "seq_cls"))
    checkpoint["score.weight"] = (5, 32)
    checkpoint["transformer.h.1.mlp.c_fc.weight"] = (128, 32)
    with pytest.raises(ValueError) as info:
        plan_load(model, checkpoint)
    message = str(info.value)
    assert "2 tensor(s)" in message
    assert "score.weight: checkpoint (5, 32) vs expected (2, 32)" in message
    assert "transformer.h.1.mlp.c_fc.weight: checkpoint (128, 32) vs expected (32, 128)" in message


def test_ignore_patterns():
    model = {"a.weight": (1,), "b.weight": (1,)}
    plan = plan_load(model, {"a.weight": (1,), "c.weight": (1,)}, ignore_unexpected=[r"^c\."], ignore_missing=[r"^b"])
    assert plan.missing_keys == [] and plan.unexpected_keys == []
