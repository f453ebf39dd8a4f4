"""LoRA in the PyTorch twin: PEFT-written adapters give PEFT's logits (adapted, disabled, merged), saved
adapters are PEFT's files, only adapter weights train, adapter dropout acts in training only, bad input fails
with errors naming the module or key."""

import json
import os

import pytest

torch = pytest.importorskip("torch")

from lora_cases import (  # noqa: E402
    CASES,
    case_dir,
    peft_config,
    peft_file_keys,
    peft_logits,
    reference,
    run_lora_example,
    valid,
)

from helpers import assert_close, tiny_config  # noqa: E402
from twinformers import LoraConfig  # noqa: E402
from twinformers.pt import AutoModelForCausalLM, GPT2LMHeadModel, GPTJForCausalLM  # noqa: E402


def logits(model, ref):
    with torch.no_grad():
        output = model(torch.tensor(ref["input_ids"]), attention_mask=torch.tensor(ref["attention_mask"]))
    return output.logits.numpy()


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
    assert not [k for k in model.state_dict() if "lora" in k]
    model.save_pretrained(tmp_path / "unmerged")
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "unmerged"), ref), ref["base_logits"],
                 "unmerged save", where=valid(ref))
    model.merge_adapter()
    model.save_pretrained(tmp_path / "merged")
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"), ref), ref["merged_logits"],
                 "merged save", where=valid(ref))


def test_new_adapter_uses_family_defaults_starts_as_no_op_and_only_it_trains():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config("gpt2"))
    input_ids = torch.randint(0, 97, (3, 7))
    before = model(input_ids).logits.detach()
    model.add_adapter(LoraConfig(r=2, lora_alpha=4))
    assert model.peft_config["default"].target_modules is None and model.peft_config["default"].fan_in_fan_out
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == [f"transformer.h.{i}.attn.c_attn.lora_adapters.default.lora_{w}.weight"
                         for i in range(2) for w in "AB"]
    assert_close(model(input_ids).logits, before, "fresh adapter (B = 0)")

    base = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items()), "a base weight changed"
    assert model(input_ids).logits.sub(before).abs().max() > 1e-4, "the adapter did not train"


def test_adapter_dropout_only_in_training():
    torch.manual_seed(0)
    model = GPTJForCausalLM(tiny_config("gptj"))
    model.add_adapter(LoraConfig(r=4, lora_dropout=0.5, init_lora_weights=False))
    input_ids = torch.randint(0, 97, (3, 7))
    model.eval()
    first, second = model(input_ids).logits.detach(), model(input_ids).logits.detach()
    assert torch.equal(first, second)
    model.disable_adapters()
    base = model(input_ids).logits.detach()
    model.enable_adapters()
    assert (first - base).abs().max() > 1e-3
    model.train()  # the base model's own dropout is 0 in tiny configs: only the adapter's acts
    assert (model(input_ids).logits.detach() - first).abs().max() > 1e-4


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


@pytest.mark.parametrize("case", ["gpt2-all-linear", "gptj-default"])
def test_twin_saved_adapter_loads_in_peft(case, tmp_path):
    ref = reference(case)
    model = AutoModelForCausalLM.from_pretrained(case_dir(case, "base"))
    model.load_adapter(case_dir(case, "adapter"))
    model.save_adapter(tmp_path)
    assert_close(peft_logits(case_dir(case, "base"), tmp_path, ref), ref["adapted_logits"], "PEFT", where=valid(ref))


def test_train_lora_example_runs_tiny(tmp_path):
    run_lora_example("train_lora_pt.py", tmp_path)
