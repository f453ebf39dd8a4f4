"""LoRA in the Flax twin: PEFT-written adapters give PEFT's logits (adapted, disabled, merged), saved adapters
are PEFT's files, only adapter leaves train under the masked optax train step, bad input fails with errors
naming the module or key."""

import json
import os

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

from lora_cases import CASES, case_dir, peft_config, peft_file_keys, reference, run_lora_example, valid  # noqa: E402

from helpers import assert_close, tiny_config  # noqa: E402
from twinformers import LoraConfig  # noqa: E402
from twinformers.flax import AutoModelForCausalLM, GPT2LMHeadModel, GPTJForCausalLM  # noqa: E402
from twinformers.flax.lora import attach_lora_dropout, split_adapter_params  # noqa: E402
from twinformers.flax.training import create_train_state, make_train_step  # noqa: E402


def logits(model, ref, params=None):
    return np.asarray(model(ref["input_ids"], attention_mask=ref["attention_mask"], params=params).logits)


@pytest.mark.parametrize("case", CASES)
def test_peft_adapter_gives_peft_logits_adapted_disabled_merged(case):
    ref = reference(case)
    model = AutoModelForCausalLM.from_pretrained(case_dir(case, "base"))
    model.load_adapter(case_dir(case, "adapter"))
    assert_close(logits(model, ref), ref["adapted_logits"], "adapted", where=valid(ref))
    assert_close(logits(model, ref, model.params_with_adapter()), ref["adapted_logits"], "adapter leaves",
                 where=valid(ref))
    model.disable_adapters()
    assert_close(logits(model, ref), ref["base_logits"], "disabled", where=valid(ref))
    model.enable_adapters()
    model.merge_adapter()
    assert_close(logits(model, ref), ref["merged_logits"], "merged", where=valid(ref))
    model.unmerge_adapter()
    assert_close(logits(model, ref), ref["adapted_logits"], "unmerged", where=valid(ref))


@pytest.mark.parametrize("case", ["gpt2-all-linear", "gptj-default"])
def test_saved_adapter_is_peft_layout_and_reloads(case, tmp_path):
    ref = reference(case)
    model = AutoModelForCausalLM.from_pretrained(case_dir(case, "base"))
    model.load_adapter(case_dir(case, "adapter"))
    model.save_adapter(tmp_path / "adapter")
    assert sorted(os.listdir(tmp_path / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    with open(tmp_path / "adapter" / "adapter_model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert header.pop("__metadata__") == {"format": "pt"}
    assert sorted(header) == peft_file_keys(case)
    saved, written = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text()), peft_config(case)
    for field in ("r", "lora_alpha", "use_rslora", "fan_in_fan_out", "bias", "peft_type", "task_type"):
        assert saved[field] == written[field], field
    assert sorted(saved["target_modules"]) == sorted(written["target_modules"])

    fresh = AutoModelForCausalLM.from_pretrained(case_dir(case, "base"))
    fresh.load_adapter(tmp_path / "adapter")
    assert_close(logits(fresh, ref), ref["adapted_logits"], "reloaded", where=valid(ref))


def test_save_pretrained_writes_base_weights_merged_or_not(tmp_path):
    case = "gpt_neo-default"
    ref = reference(case)
    model = AutoModelForCausalLM.from_pretrained(case_dir(case, "base"))
    model.load_adapter(case_dir(case, "adapter"))
    model.save_pretrained(tmp_path / "unmerged")
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "unmerged"), ref), ref["base_logits"],
                 "unmerged save", where=valid(ref))
    model.merge_adapter()
    model.save_pretrained(tmp_path / "merged")
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"), ref), ref["merged_logits"],
                 "merged save", where=valid(ref))


def test_new_adapter_uses_family_defaults_starts_as_no_op_and_only_it_trains_under_the_optax_mask(recwarn):
    model = GPT2LMHeadModel(tiny_config("gpt2"))
    input_ids = np.random.RandomState(0).randint(0, 97, (4, 7))
    before = np.asarray(model(input_ids).logits)
    model.add_adapter(LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1))  # the train step drops the adapter input
    assert model.peft_config["default"].target_modules is None and model.peft_config["default"].fan_in_fan_out
    assert_close(model(input_ids).logits, before, "fresh adapter (B = 0)")

    state = create_train_state(model, optax.adam(1e-2))
    assert not [w for w in recwarn if "lora_dropout" in str(w.message)], "lora_dropout is applied: no warning"
    _, adapter = split_adapter_params(state.params)
    assert sorted(adapter) == [f"transformer/h/{i}/attn/c_attn/lora_adapters/default/lora_{w}"
                               for i in range(2) for w in "AB"]
    adapter_size = sum(leaf.size for leaf in adapter.values())
    state_size = sum(leaf.size for leaf in jax.tree_util.tree_leaves(state.opt_state))
    assert state_size == 2 * adapter_size + 1, "Adam state for more than the adapter (moments + step count)"
    train_step = make_train_step(model)
    rng = jax.random.PRNGKey(0)
    for _ in range(2):
        state, _, rng = train_step(state, {"input_ids": input_ids}, rng)
    base, _ = split_adapter_params(state.params)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, base, model.params)), "base changed"
    model.set_adapter_params(state.params)
    assert np.abs(np.asarray(model(input_ids).logits) - before).max() > 1e-4, "the adapter did not train"


def test_bad_input_is_named():
    model = GPTJForCausalLM(tiny_config("gptj"))
    with pytest.raises(ValueError, match=r"\['c_attn'\] match no projection.*'q_proj'.*'fc_out'"):
        model.add_adapter(LoraConfig(target_modules=["c_attn"]))
    with pytest.raises(ValueError, match="r must be a positive int, got 0"):
        LoraConfig(r=0)
    with pytest.raises(ValueError, match="gpt2-default.*c_attn"):  # a GPT-2 adapter on a GPT-J model
        model.load_adapter(case_dir("gpt2-default", "adapter"))
    model.add_adapter(LoraConfig())
    with pytest.raises(ValueError, match="'default' already exists"):
        model.add_adapter(LoraConfig())
    wider = GPTJForCausalLM(tiny_config("gptj", n_embd=48, n_head=4))  # fixture hidden size is 32
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.q_proj\.lora_A\.weight: shape \(4, 32\)"):
        wider.load_adapter(case_dir("gptj-default", "adapter"))
    assert not wider.peft_config, "a refused adapter left something behind"


def test_train_lora_example_runs_tiny(tmp_path):
    run_lora_example("train_lora_flax.py", tmp_path)


def test_generate_applies_the_active_adapter():
    case = "gpt2-default"
    ref = reference(case)
    model = AutoModelForCausalLM.from_pretrained(case_dir(case, "base"))
    prompt = ref["input_ids"][:1, :4]
    base = np.asarray(model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0))
    model.load_adapter(case_dir(case, "adapter"))
    adapted = np.asarray(model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0))
    model.merge_adapter()
    merged = np.asarray(model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0))
    np.testing.assert_array_equal(adapted, merged)
    assert not np.array_equal(adapted, base), "the adapter changed no generated token: the test shows nothing"


def _lora_dropout_by_hand(base_out, x, lora_A, lora_B, scaling, rate, key):
    """PEFT's training forward, in NumPy: base(x) + (mask · x / (1 - rate)) A B · scaling."""
    mask = np.asarray(jax.random.bernoulli(key, 1.0 - rate, x.shape))
    assert 0 < mask.mean() < 1, "the mask drops nothing or everything: the check shows nothing"
    dropped = np.where(mask, x / (1.0 - rate), 0.0)
    return base_out + (dropped @ np.asarray(lora_A) @ np.asarray(lora_B)) * scaling


@pytest.mark.parametrize("family", ["gpt2", "gptj"])
def test_lora_dropout_projection_is_pefts_training_forward(family):
    # One projection of the bound module, wrapped as a training call wraps it, against the formula by hand:
    # GPT-2's Conv1D kernel is (out, in), GPT-J's Dense (in, out); the adapter's A (in, r) B (r, out) either way.
    model = AutoModelForCausalLM.from_config(tiny_config(family))
    model.add_adapter(LoraConfig(r=2, lora_alpha=8, lora_dropout=0.3, init_lora_weights=False))
    base, lora = model.call_params(None, train=True)
    assert lora is not None and set(lora) == set(model._adapter_layers("default"))
    module = model._compiled().bind(base)
    projection = sorted(lora)[0]  # the first wrapped: mask key index 0
    *parents, name = projection.split(".")
    parent = module
    for part in parents:
        parent = getattr(parent, part)
    plain = getattr(parent, name)
    x = np.random.RandomState(0).randn(2, 5, model.config.hidden_size).astype(np.float32)
    base_out = np.asarray(plain(x))
    dropout_rng = jax.random.PRNGKey(7)
    attach_lora_dropout(module, lora, dropout_rng)
    lora_A, lora_B, scaling, rate = lora[projection]
    key = jax.random.fold_in(jax.random.fold_in(dropout_rng, 0x4C6F5241), 0)
    expected = _lora_dropout_by_hand(base_out, x, lora_A, lora_B, float(scaling), float(rate), key)
    assert abs(expected - base_out).max() > 1e-3, "the adapter adds nothing: the check shows nothing"
    assert_close(getattr(parent, name)(x), expected, "projection with lora_dropout")


def test_lora_dropout_applies_in_training_only():
    model = GPT2LMHeadModel(tiny_config("gpt2"))  # the model's own dropout off: only the adapter's acts
    model.add_adapter(LoraConfig(r=2, lora_alpha=8, lora_dropout=0.5, init_lora_weights=False))
    input_ids = np.random.RandomState(0).randint(0, 97, (2, 6))
    evaluated = np.asarray(model(input_ids).logits)

    def trained(seed, params=None):
        return np.asarray(model(input_ids, params=params, train=True, dropout_rng=jax.random.PRNGKey(seed)).logits)

    assert np.abs(trained(1) - evaluated).max() > 1e-3, "lora_dropout changed nothing in training"
    assert np.abs(trained(1) - trained(2)).max() > 1e-3, "the mask does not follow the dropout rng"
    np.testing.assert_array_equal(trained(1), trained(1))
    np.testing.assert_array_equal(trained(1, model.params_with_adapter()), trained(1))
    model.merge_adapter()
    assert_close(model(input_ids).logits, evaluated, "merged vs unmerged eval (the folded fast path)")
    np.testing.assert_array_equal(trained(1), np.asarray(model(input_ids, train=True,
                                                               dropout_rng=jax.random.PRNGKey(3)).logits))


def test_unfolded_training_path_equals_the_folded_one_when_nothing_is_dropped():
    # lora_dropout = 1e-7 drops nothing here (checked) but takes the unfolded path: it must give the folded logits.
    model = GPT2LMHeadModel(tiny_config("gpt2"))
    model.add_adapter(LoraConfig(r=2, lora_alpha=8, lora_dropout=1e-7, init_lora_weights=False))
    _, lora = model.call_params(None, train=True)
    assert lora is not None
    input_ids = np.random.RandomState(1).randint(0, 97, (2, 6))
    adapted = np.asarray(model(input_ids).logits)
    model.disable_adapters()
    assert np.abs(np.asarray(model(input_ids).logits) - adapted).max() > 1e-3, "the adapter changes nothing"
    model.enable_adapters()
    assert_close(model(input_ids, train=True, dropout_rng=jax.random.PRNGKey(0)).logits, adapted, "unfolded")
