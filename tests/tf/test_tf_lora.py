"""LoRA in the TensorFlow twin: PEFT-written adapters give PEFT's logits (adapted, disabled, merged), saved
adapters are PEFT's files, only adapter weights train under Keras `fit` (the model's own loss), adapter dropout
acts in training only, bad input fails with errors naming the module or key."""

import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
from lora_cases import CASES, case_dir, peft_config, peft_file_keys, reference, run_lora_example, valid  # noqa: E402

from helpers import assert_close, tiny_config  # noqa: E402
from twinformers import LoraConfig  # noqa: E402
from twinformers.tf import AutoModelForCausalLM, GPT2LMHeadModel, GPTJForCausalLM  # noqa: E402


def logits(model, ref):
    return np.asarray(model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits)


@pytest.mark.parametrize("case", CASES)
def test_peft_adapter_gives_peft_logits_adapted_disabled_merged(case):
    ref = reference(case)
    model = AutoModelForCausalLM.from_pretrained(case_dir(case, "base"))
    model.load_adapter(case_dir(case, "adapter"))
    assert_close(logits(model, ref), ref["adapted_logits"], "adapted", where=valid(ref))
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


def test_new_adapter_uses_family_defaults_starts_as_no_op_and_only_it_trains_under_fit():
    keras.utils.set_random_seed(0)
    model = GPT2LMHeadModel(tiny_config("gpt2"))
    input_ids = np.random.RandomState(0).randint(0, 97, (4, 7)).astype("int32")
    before = np.asarray(model(input_ids=input_ids).logits)
    model.add_adapter(LoraConfig(r=2, lora_alpha=4))
    assert model.peft_config["default"].target_modules is None and model.peft_config["default"].fan_in_fan_out
    trainable = sorted(v.path.split("/", 1)[1] for v in model.trainable_variables)
    assert trainable == [f"transformer/h_._{i}/attn/c_attn/lora_adapters/default/lora_{w}"
                         for i in range(2) for w in "AB"]
    assert_close(model(input_ids=input_ids).logits, before, "fresh adapter (B = 0)")

    base = {v.path: v.numpy().copy() for v in model.weights if "lora" not in v.path}
    model.compile(optimizer=keras.optimizers.Adam(1e-2))  # no loss: the model's own
    model.fit({"input_ids": input_ids, "labels": input_ids}, epochs=2, batch_size=2, verbose=0)
    assert all(np.array_equal(v.numpy(), base[v.path]) for v in model.weights if v.path in base), "base changed"
    assert np.abs(np.asarray(model(input_ids=input_ids).logits) - before).max() > 1e-4, "the adapter did not train"


def test_adapter_dropout_only_in_training():
    keras.utils.set_random_seed(0)
    model = GPTJForCausalLM(tiny_config("gptj"))
    model.add_adapter(LoraConfig(r=4, lora_dropout=0.5, init_lora_weights=False))
    input_ids = np.random.RandomState(0).randint(0, 97, (3, 7)).astype("int32")
    first, second = (np.asarray(model(input_ids=input_ids).logits) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    model.disable_adapters()
    base = np.asarray(model(input_ids=input_ids).logits)
    model.enable_adapters()
    assert np.abs(first - base).max() > 1e-3
    # the base model's own dropout is 0 in tiny configs: only the adapter's acts
    assert np.abs(np.asarray(model(input_ids=input_ids, training=True).logits) - first).max() > 1e-4


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
    run_lora_example("train_lora_keras.py", tmp_path)


def test_adapter_changes_reach_generate_and_predict_traced_before():
    case = "gpt2-default"
    ref = reference(case)
    model = AutoModelForCausalLM.from_pretrained(case_dir(case, "base"))
    prompt = ref["input_ids"][:1, :4]

    def generate():
        return np.asarray(model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0))

    inputs = {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}
    base, base_predicted = generate(), model.predict(inputs, verbose=0)  # both traced now
    model.load_adapter(case_dir(case, "adapter"))
    adapted = generate()
    assert not np.array_equal(adapted, base), "the adapter changed no generated token: the test shows nothing"
    assert_close(model.predict(inputs, verbose=0).logits, ref["adapted_logits"],
                 "predict after load_adapter", where=valid(ref))
    model.disable_adapters()
    np.testing.assert_array_equal(generate(), base)
    assert_close(model.predict(inputs, verbose=0).logits, base_predicted.logits,
                 "predict after disable_adapters")


def test_keras_file_keeps_the_adapter(tmp_path):
    # model.save("x.keras") / keras.models.load_model: the adapter comes back with its weights, name and flags,
    # still the only trainable weights, still switchable; a merged adapter comes back merged (unmergeable).
    model = GPTJForCausalLM(tiny_config("gptj"))
    model.add_adapter(LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1), adapter_name="mine")
    rng = np.random.RandomState(0)
    for layer in model._adapter_layers("mine").values():  # weights no fresh adapter has
        layer.set_arrays(rng.randn(*layer.lora_A.shape[::-1]) * 0.5, rng.randn(*layer.lora_B.shape[::-1]) * 0.5)
    input_ids = rng.randint(0, 97, (2, 6)).astype("int32")
    adapted = np.asarray(model(input_ids=input_ids).logits)
    model.disable_adapters()
    base = np.asarray(model(input_ids=input_ids).logits)
    model.enable_adapters()
    assert np.abs(adapted - base).max() > 1e-3, "the adapter changes nothing: the test shows nothing"

    model.save(tmp_path / "adapted.keras")
    loaded = keras.models.load_model(tmp_path / "adapted.keras")
    assert loaded.active_adapter == "mine" and loaded.peft_config == model.peft_config
    assert_close(loaded(input_ids=input_ids).logits, adapted, "loaded adapted")
    assert sorted(v.path for v in loaded.trainable_variables) == sorted(v.path for v in model.trainable_variables)
    assert all("lora_adapters/mine" in v.path for v in loaded.trainable_variables)
    loaded.disable_adapters()
    assert_close(loaded(input_ids=input_ids).logits, base, "loaded, disabled")

    model.merge_adapter()
    model.save(tmp_path / "merged.keras")
    merged = keras.models.load_model(tmp_path / "merged.keras")
    assert_close(merged(input_ids=input_ids).logits, adapted, "loaded merged")
    merged.unmerge_adapter()
    assert_close(merged(input_ids=input_ids).logits, adapted, "loaded merged, unmerged")
    merged.disable_adapters()
    assert_close(merged(input_ids=input_ids).logits, base, "loaded merged, unmerged, disabled")
