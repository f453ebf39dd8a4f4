"""Flax checkpoints: every Hugging Face-written fixture loads and reproduces its recorded PyTorch outputs; save /
load round trips in PyTorch-layout safetensors and HF msgpack (sharded too); bf16; loading rules and errors."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from flax_testing import CLASS_IDS, FAMILY, KIND, make_model, random_ids  # noqa: E402

import twinformers.flax as fx  # noqa: E402
from helpers import HF_FIXTURES, assert_close, reference_outputs, require_reader  # noqa: E402
from twinformers.checkpoints.flax_msgpack import MsgpackFile  # noqa: E402
from twinformers.checkpoints.safetensors import SafetensorsFile  # noqa: E402
from twinformers.conversion.tables import expected_shapes  # noqa: E402
from twinformers.flax.modeling_utils import flatten_params  # noqa: E402

HEAD_CLASSES = {
    "base": "AutoModel", "causal_lm": "AutoModelForCausalLM", "seq_cls": "AutoModelForSequenceClassification",
    "token_cls": "AutoModelForTokenClassification", "qa": "AutoModelForQuestionAnswering",
}


def _fixture_dirs() -> list[str]:
    names = []
    for name in sorted(os.listdir(HF_FIXTURES)):
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] in ("gpt2", "gptj", "gpt_neo") and "cross_attention" not in name:
            names.append(name)
    return names


FIXTURES = _fixture_dirs()


def _load(name: str, **kwargs):
    family, _, head = name.split("-")[:3]
    loader = fx.GPT2DoubleHeadsModel if head == "double_heads" else getattr(fx, HEAD_CLASSES[head])
    return loader.from_pretrained(os.path.join(HF_FIXTURES, name), **kwargs)


@pytest.mark.parametrize("name", FIXTURES)
def test_hf_fixture_matches_recorded_pytorch_outputs(name):
    """PyTorch / TF / Flax layouts, safetensors / bin / h5 / msgpack, sharded or not: all positions to 1e-5."""
    require_reader(name)
    family, _, head = name.split("-")[:3]
    model, info = _load(name, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    reference = reference_outputs(family, head)
    kwargs = {"mc_token_ids": reference["input.mc_token_ids"]} if head == "double_heads" else {}
    out = model(reference["input.input_ids"], **kwargs)
    expected = {key[3:]: value for key, value in reference.items() if key.startswith("pt.")}
    assert_close({key: out[key] for key in expected}, expected, name=name)


def test_cross_attention_fixture_loads_every_tensor():
    path = os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm-cross_attention")
    model = fx.GPT2LMHeadModel.from_pretrained(path)
    stored = SafetensorsFile(os.path.join(path, "model.safetensors"))
    params = flatten_params(model.params)
    assert len(params) == len(stored)
    # GPT-2's Conv1D: PyTorch (in, out), Flax kernel (out, in).
    np.testing.assert_array_equal(
        params["transformer/h/1/crossattention/q_attn/kernel"], stored["transformer.h.1.crossattention.q_attn.weight"].T
    )
    np.testing.assert_array_equal(params["transformer/h/0/ln_cross_attn/scale"],
                                  stored["transformer.h.0.ln_cross_attn.weight"])


# --------------------------------------------------------------------------------------------- round trips
def _assert_same_params(actual: dict, expected: dict) -> None:
    actual, expected = flatten_params(actual), flatten_params(expected)
    assert actual.keys() == expected.keys()
    for path in expected:
        assert actual[path].dtype == expected[path].dtype, path
        np.testing.assert_array_equal(np.asarray(actual[path]), np.asarray(expected[path]), err_msg=path)


@pytest.mark.parametrize("name", CLASS_IDS)
def test_safetensors_round_trip_in_pytorch_layout(name, tmp_path):
    model = make_model(name)
    model.save_pretrained(tmp_path)
    stored = SafetensorsFile(tmp_path / "model.safetensors")
    assert stored.metadata == {"format": "pt"}
    expected = expected_shapes(model.config, KIND[name])
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)  # tied: Hugging Face leaves it out of safetensors too
    assert {key: stored.shape(key) for key in stored} == expected
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [name]
    assert (tmp_path / "generation_config.json").exists() == (KIND[name] in ("causal_lm", "double_heads"))
    loaded = getattr(fx, name).from_pretrained(tmp_path)
    _assert_same_params(loaded.params, model.params)


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "GPTJForCausalLM", "GPTNeoForQuestionAnswering"])
def test_msgpack_round_trip_in_hf_flax_tree(name, tmp_path):
    model = make_model(name)
    model.save_pretrained(tmp_path, safe_serialization=False)
    stored = MsgpackFile(tmp_path / "flax_model.msgpack")
    assert {key: stored.shape(key) for key in stored} == {
        path: tuple(leaf.shape) for path, leaf in flatten_params(model.params).items()
    }
    _assert_same_params(getattr(fx, name).from_pretrained(tmp_path).params, model.params)


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "msgpack"])
def test_sharded_round_trip(safe_serialization, tmp_path):
    model = make_model("GPTNeoForCausalLM")
    model.save_pretrained(tmp_path, safe_serialization=safe_serialization, max_shard_size="10KB")
    index = "model.safetensors.index.json" if safe_serialization else "flax_model.msgpack.index.json"
    weight_map = json.loads((tmp_path / index).read_text())["weight_map"]
    assert len(set(weight_map.values())) > 1
    assert not (tmp_path / ("model.safetensors" if safe_serialization else "flax_model.msgpack")).exists()
    _assert_same_params(fx.GPTNeoForCausalLM.from_pretrained(tmp_path).params, model.params)


def test_bf16_weights_save_and_load_as_bf16(tmp_path):
    model = make_model("GPT2LMHeadModel")
    bf16_params = model.to_bf16(model.params)
    model.save_pretrained(tmp_path, params=bf16_params)
    stored = SafetensorsFile(tmp_path / "model.safetensors")
    assert {stored.dtype(key).name for key in stored} == {"bfloat16"}
    loaded = fx.GPT2LMHeadModel.from_pretrained(tmp_path)
    _assert_same_params(loaded.params, bf16_params)
    ids = random_ids((3, 7))
    assert_close(loaded(ids).logits, model(ids).logits, dtype="bfloat16", atol=0.1)  # bf16 weights, fp32 compute


def test_do_init_false_returns_params_and_an_empty_model():
    path = os.path.join(HF_FIXTURES, "gptj-pt-causal_lm")
    model, params = fx.GPTJForCausalLM.from_pretrained(path, _do_init=False)
    with pytest.raises(ValueError, match="_do_init=False"):
        model.params  # noqa: B018
    reference = reference_outputs("gptj", "causal_lm")
    assert_close(model(reference["input.input_ids"], params=params).logits, reference["pt.logits"])


def test_dtype_is_the_computation_dtype_only():
    path = os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm")
    model = fx.GPT2LMHeadModel.from_pretrained(path, dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(model.params)} == {jnp.dtype(jnp.float32)}
    reference = reference_outputs("gpt2", "causal_lm")
    logits = model(reference["input.input_ids"]).logits
    assert logits.dtype == jnp.bfloat16
    assert_close(logits, reference["pt.logits"], dtype="bfloat16", atol=0.1)


# --------------------------------------------------------------------------------------------- loading rules
def test_base_checkpoint_into_head_models(caplog):
    path = os.path.join(HF_FIXTURES, "gpt2-pt-base")
    lm, info = fx.GPT2LMHeadModel.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == []  # the LM head is tied to wte
    reference = reference_outputs("gpt2", "base")
    wte = np.asarray(lm.params["transformer"]["wte"]["embedding"], np.float64)
    assert_close(lm(reference["input.input_ids"]).logits, reference["pt.last_hidden_state"] @ wte.T)
    with caplog.at_level(logging.WARNING):
        _, info = fx.GPT2ForTokenClassification.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == ["classifier.bias", "classifier.weight"]
    assert "newly initialized" in caplog.text


def test_head_checkpoint_into_base_model_reports_the_head_as_unexpected():
    path = os.path.join(HF_FIXTURES, "gptj-pt-causal_lm")
    model, info = fx.GPTJModel.from_pretrained(path, output_loading_info=True)
    assert info["unexpected_keys"] == ["lm_head.bias", "lm_head.weight"]
    ids = reference_outputs("gptj", "causal_lm")["input.input_ids"]
    lm_hidden = fx.GPTJForCausalLM.from_pretrained(path)(ids, output_hidden_states=True).hidden_states[-1]
    assert_close(model(ids).last_hidden_state, lm_hidden)


def test_checkpoint_that_does_not_match_the_config_names_every_tensor():
    path = os.path.join(HF_FIXTURES, "gpt_neo-pt-causal_lm")
    with pytest.raises(ValueError) as err:
        fx.GPTNeoForCausalLM.from_pretrained(path, max_position_embeddings=32)
    assert "transformer.wpe.weight: checkpoint (64, 32) vs expected (32, 32)" in str(err.value)


def test_broken_files_raise_oserror(tmp_path):
    model = make_model("GPT2Model")
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(OSError, match="truncated"):
        fx.GPT2Model.from_pretrained(tmp_path)
    os.remove(weights)
    with pytest.raises(OSError, match="holds no weights"):
        fx.GPT2Model.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is a file"):
        model.save_pretrained(tmp_path / "config.json")


def test_auto_classes_pick_the_family():
    path = os.path.join(HF_FIXTURES, "gpt_neo-flax-causal_lm")
    assert type(fx.AutoModelForCausalLM.from_pretrained(path)) is fx.GPTNeoForCausalLM
    assert type(fx.AutoModel.from_config(make_model("GPTJModel").config, _do_init=False)) is fx.GPTJModel
    with pytest.raises(OSError, match="not instantiated"):
        fx.AutoModel()


def test_families_map_to_their_classes():
    assert {FAMILY[name] for name in CLASS_IDS} == {"gpt2", "gptj", "gpt_neo"}
    import twinformers

    assert twinformers.FlaxGPT2LMHeadModel is fx.GPT2LMHeadModel
    assert twinformers.FlaxGPT2ForCausalLM is fx.GPT2LMHeadModel
    assert twinformers.FlaxGPTNeoForTokenClassification is fx.GPTNeoForTokenClassification
