"""Partition rules over a ("data", "model") mesh: rule coverage here; the sharded forward and train step on 8
host devices == unsharded, in a subprocess (flax_distributed_worker.py) so XLA_FLAGS does not leak."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from jax.sharding import PartitionSpec as P  # noqa: E402

import twinformers.flax as fx  # noqa: E402
from helpers import assert_close, tiny_config  # noqa: E402
from twinformers.flax.modeling_utils import flatten_params  # noqa: E402
from twinformers.flax.partitioning import (  # noqa: E402
    make_mesh,
    match_partition_rules,
    pad_vocab,
    partition_rules,
    unpad_vocab,
)

WORKER = os.path.join(os.path.dirname(__file__), "flax_distributed_worker.py")
FAMILIES = ("gpt2", "gptj", "gpt_neo")
HEADS = {
    "gpt2": ("GPT2Model", "GPT2LMHeadModel", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification",
             "GPT2ForTokenClassification", "GPT2ForQuestionAnswering"),
    "gptj": ("GPTJModel", "GPTJForCausalLM", "GPTJForSequenceClassification", "GPTJForTokenClassification",
             "GPTJForQuestionAnswering"),
    "gpt_neo": ("GPTNeoModel", "GPTNeoForCausalLM", "GPTNeoForSequenceClassification",
                "GPTNeoForTokenClassification", "GPTNeoForQuestionAnswering"),
}
COLUMN, ROW = "column", "row"
# The Megatron split of each family's projections, by the layer's role (GPT-2 Conv1D kernels are (out, in),
# nn.Dense kernels (in, out)); written out here independently of the rule table.
EXPECTED = {
    "gpt2": {"attn/c_attn/kernel": P("model", None), "attn/c_proj/kernel": P(None, "model"),
             "mlp/c_fc/kernel": P("model", None), "mlp/c_proj/kernel": P(None, "model"),
             "attn/c_attn/bias": P("model"), "attn/c_proj/bias": P(), "mlp/c_fc/bias": P("model"),
             "mlp/c_proj/bias": P()},
    "gptj": {"attn/q_proj/kernel": P(None, "model"), "attn/k_proj/kernel": P(None, "model"),
             "attn/v_proj/kernel": P(None, "model"), "attn/out_proj/kernel": P("model", None),
             "mlp/fc_in/kernel": P(None, "model"), "mlp/fc_out/kernel": P("model", None),
             "mlp/fc_in/bias": P("model"), "mlp/fc_out/bias": P()},
    "gpt_neo": {"attn/attention/q_proj/kernel": P(None, "model"), "attn/attention/out_proj/kernel": P("model", None),
                "attn/attention/out_proj/bias": P(), "mlp/c_fc/kernel": P(None, "model"),
                "mlp/c_proj/kernel": P("model", None), "mlp/c_fc/bias": P("model"), "mlp/c_proj/bias": P()},
}


@pytest.mark.parametrize("family,class_name", [(f, c) for f, classes in HEADS.items() for c in classes])
def test_every_param_of_every_head_has_a_rule(family, class_name):
    model = getattr(fx, class_name)(tiny_config(family), _do_init=False)
    specs = flatten_params(match_partition_rules(partition_rules(model.config), model.params_shape_tree))
    shapes = flatten_params(model.params_shape_tree)
    assert specs.keys() == shapes.keys()
    for path, spec in specs.items():
        assert len(spec) <= len(shapes[path].shape), f"{path}: spec {spec} has more axes than {shapes[path].shape}"
        if "ln_" in path or path.startswith(("score", "classifier", "qa_outputs", "multiple_choice_head")):
            assert spec == P(), f"{path} should be replicated, got {spec}"
        if path.endswith("wte/embedding"):
            assert spec == P("model", None)  # split over the vocabulary


@pytest.mark.parametrize("family", FAMILIES)
def test_megatron_splits(family):
    model = getattr(fx, {"gpt2": "GPT2Model", "gptj": "GPTJModel", "gpt_neo": "GPTNeoModel"}[family])(
        tiny_config(family), _do_init=False)
    specs = flatten_params(match_partition_rules(partition_rules(model.config), model.params_shape_tree))
    for layer in range(model.config.num_hidden_layers):
        prefix = f"h/{layer}/"  # base-model params have no transformer/
        for suffix, expected in EXPECTED[family].items():
            assert specs[prefix + suffix] == expected, f"{prefix + suffix}: {specs[prefix + suffix]} != {expected}"


def test_gpt2_cross_attention_rules():
    model = fx.GPT2LMHeadModel(tiny_config("gpt2", add_cross_attention=True, tie_word_embeddings=False),
                               _do_init=False)
    specs = flatten_params(match_partition_rules(partition_rules(model.config), model.params_shape_tree))
    assert specs["transformer/h/0/crossattention/q_attn/kernel"] == P("model", None)
    assert specs["transformer/h/0/crossattention/c_proj/kernel"] == P(None, "model")
    assert specs["lm_head/kernel"] == P(None, "model")


def test_unmatched_params_are_listed():
    with pytest.raises(ValueError, match=r"no partition rule matches 2 parameter\(s\): bar/bias, foo/kernel"):
        match_partition_rules(partition_rules(tiny_config("gpt2")), {"foo": {"kernel": np.ones((2, 2))},
                                                                      "bar": {"bias": np.ones(2)}})


def test_scalars_are_replicated():
    specs = match_partition_rules([], {"count": np.zeros(())})
    assert specs == {"count": P()}


@pytest.mark.parametrize("family", ("gpt2", "gptj"))
def test_pad_vocab_keeps_logits_and_round_trips(family):
    model = getattr(fx, {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM"}[family])(tiny_config(family))
    padded_model, padded = pad_vocab(model, model.params, 8)
    assert padded_model.config.vocab_size == 104 and model.config.vocab_size == 97
    assert padded["transformer"]["wte"]["embedding"].shape == (104, 24)
    np.testing.assert_array_equal(np.asarray(padded["transformer"]["wte"]["embedding"])[97:], 0.0)
    input_ids = np.random.default_rng(0).integers(0, 97, size=(3, 7))
    expected = model(input_ids).logits
    actual = padded_model(input_ids, params=padded).logits
    assert actual.shape == (3, 7, 104)
    assert_close(actual[..., :97], expected, name="logits")
    restored = unpad_vocab(padded, 97)
    assert_close(flatten_params(restored), flatten_params(model.params), name="params")


def test_pad_vocab_rejects_bad_multiple():
    model = fx.GPT2LMHeadModel(tiny_config("gpt2"))
    with pytest.raises(ValueError, match="multiple"):
        pad_vocab(model, model.params, 0)


def test_make_mesh_checks_device_count():
    with pytest.raises(ValueError, match="must equal"):
        make_mesh(2, 4, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("partitioning")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, WORKER, str(out_dir)], env=env, check=True, timeout=900)
    with np.load(out_dir / "results.npz") as data:
        results = dict(data)
    with open(out_dir / "facts.json") as f:
        facts = json.load(f)
    return results, facts


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_forward_equals_unsharded(sharded_run, family):
    results, facts = sharded_run
    meshes = [key.split("/")[1] for key in results if key.startswith(f"{family}/") and key.endswith("/forward/actual")]
    assert meshes, f"no sharded forward for {family}"
    valid = np.ones((4, 7), bool)
    valid[1, -2:] = False  # the right-padded row's padding positions
    for mesh in meshes:
        data, model = map(int, mesh.split("x"))
        assert facts[f"{family}/{mesh}/devices_used"] == 8
        padded_vocab = facts[f"{family}/{mesh}/padded_vocab"]
        assert padded_vocab % model == 0 and padded_vocab >= 97
        assert facts[f"{family}/{mesh}/wte_shard_shape"] == [padded_vocab // model, 24]  # really split
        assert "dim 0 (97) over mesh axis model" in facts[f"{family}/{mesh}/unpadded_error"]
        assert_close(results[f"{family}/{mesh}/forward/actual"], results[f"{family}/forward/expected"],
                     name=f"{family} {mesh} logits", where=valid)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_train_step_equals_unsharded(sharded_run, family):
    results, facts = sharded_run
    # The model-axis split really happened: the MLP input projection is cut over its output features.
    shape, shard = facts[f"{family}/step/mlp_in_shape"], facts[f"{family}/step/mlp_in_shard_shape"]
    assert sorted(shape) == [24, 96] and sorted(shard) == [24, 24]
    assert facts[f"{family}/step/padded_rows_max"] == 0.0  # padded vocabulary rows get no gradient
    assert_close(results[f"{family}/step/actual_loss"], results[f"{family}/step/expected_loss"], name="loss")
    expected = {k.split("expected", 1)[1]: v for k, v in results.items() if k.startswith(f"{family}/step/expected[")}
    actual = {k.split("actual", 1)[1]: v for k, v in results.items() if k.startswith(f"{family}/step/actual[")}
    assert expected and actual.keys() == expected.keys()
    # GSPMD sums partial matmuls across devices in another order: ~1e-7 on fp32, inside the fp32 bound.
    assert_close(actual, expected, name=f"{family} params after one step")
