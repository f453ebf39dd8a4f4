"""Loading the Hugging Face-written fixtures and saving in Hugging Face's layout."""

import json
import os

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from pt_testing import BASE_CLASSES, CLASSES, FAMILIES, LM_CLASSES, make_model, random_ids  # noqa: E402

import twinformers.pt as pt  # noqa: E402
from helpers import HF_FIXTURES, assert_close, reference_outputs  # noqa: E402
from twinformers.checkpoints.safetensors import SafetensorsFile  # noqa: E402
from twinformers.checkpoints.sharding import read_index  # noqa: E402
from twinformers.configuration import AutoConfig  # noqa: E402

REFERENCES = sorted(f[:-4] for f in os.listdir(os.path.join(HF_FIXTURES, "reference_outputs")))
HEAD_CLASS = {kind: name for _, name, kind in CLASSES if name.startswith("GPT2")}
AUTO = {
    "base": pt.AutoModel,
    "causal_lm": pt.AutoModelForCausalLM,
    "seq_cls": pt.AutoModelForSequenceClassification,
    "token_cls": pt.AutoModelForTokenClassification,
    "qa": pt.AutoModelForQuestionAnswering,
    "double_heads": pt.GPT2DoubleHeadsModel,
}


def fixture_variants(family: str, head: str) -> list[str]:
    names = [f"{family}-pt-{head}", f"{family}-pt-{head}-bin"]
    if head == "causal_lm":
        names += [f"{family}-pt-{head}-sharded", f"{family}-pt-{head}-sharded-bin"]
    return names


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_hf_fixtures_match_recorded_outputs(reference, implementation):
    family, head = reference.split("-")
    expected = reference_outputs(family, head)
    kwargs = {"input_ids": torch.from_numpy(expected["input.input_ids"])}
    if head == "double_heads":
        kwargs["mc_token_ids"] = torch.from_numpy(expected["input.mc_token_ids"])
    for name in fixture_variants(family, head):
        model, info = AUTO[head].from_pretrained(
            os.path.join(HF_FIXTURES, name), attn_implementation=implementation, output_loading_info=True
        )
        assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        assert not model.training
        with torch.no_grad():
            output = model(**kwargs)
        for key in expected:
            if key.startswith("pt."):
                assert_close(output[key[3:]], expected[key], name=f"{name} {implementation} {key}")


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=[n for _, n, _ in CLASSES])
def test_state_dict_keys_are_hugging_faces(family, name, kind):
    """state_dict keys and shapes = the HF checkpoint's (plus the tied lm_head); no buffers in it."""
    # GPT-J token classification is new: the backbone of the QA fixture, with `classifier` for `qa_outputs`.
    fixture = os.path.join(HF_FIXTURES, f"{family}-pt-{kind}" if name != "GPTJForTokenClassification" else "gptj-pt-qa")
    model = getattr(pt, name)(AutoConfig.from_pretrained(fixture))
    stored = SafetensorsFile(os.path.join(fixture, "model.safetensors"))
    expected = {k.replace("qa_outputs", "classifier") if kind == "token_cls" else k: stored.shape(k) for k in stored}
    if model.config.tie_word_embeddings and hasattr(model, "lm_head"):
        expected["lm_head.weight"] = expected["transformer.wte.weight"]
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def _files(path):
    return sorted(f for f in os.listdir(path) if not f.startswith("."))


@pytest.mark.parametrize("family", FAMILIES)
def test_save_round_trip_matches_hf_layout(family, tmp_path):
    source = os.path.join(HF_FIXTURES, f"{family}-pt-causal_lm")
    model = pt.AutoModelForCausalLM.from_pretrained(source)
    model.config.name_or_path = ""  # a fresh save, as the fixture was written
    model.save_pretrained(tmp_path)
    assert _files(tmp_path) == ["config.json", "generation_config.json", "model.safetensors"]
    for name in ("config.json", "generation_config.json"):
        with open(tmp_path / name) as f, open(os.path.join(source, name)) as g:
            assert f.read() == g.read(), f"{name} differs from Hugging Face's"
    ours, theirs = SafetensorsFile(tmp_path / "model.safetensors"), SafetensorsFile(os.path.join(source,
                                                                                                   "model.safetensors"))
    assert ours.metadata == {"format": "pt"}
    assert sorted(ours) == sorted(theirs)  # tied lm_head stored once (GPT-2, GPT-Neo), untied kept (GPT-J)
    with open(tmp_path / "model.safetensors", "rb") as f, open(os.path.join(source, "model.safetensors"), "rb") as g:
        assert f.read() == g.read(), "model.safetensors is not byte-identical to Hugging Face's"

    # Sharded at 20KB, as the fixtures were: the same shard files and the same index, for both formats.
    for safe, suffix, index in ((True, "sharded", "model.safetensors.index.json"),
                                (False, "sharded-bin", "pytorch_model.bin.index.json")):
        target = tmp_path / suffix
        model.save_pretrained(target, safe_serialization=safe, max_shard_size="20KB")
        hf = f"{source}-{suffix}"
        assert _files(target) == _files(hf)
        with open(target / index) as f, open(os.path.join(hf, index)) as g:
            assert f.read() == g.read(), f"{index} differs from Hugging Face's"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", ["safetensors", "sharded", "bin", "sharded-bin"])
def test_save_load_round_trip(family, variant, tmp_path):
    model = make_model(LM_CLASSES[family])
    safe = "bin" not in variant
    shard = "20KB" if "sharded" in variant else "5GB"
    model.save_pretrained(tmp_path, safe_serialization=safe, max_shard_size=shard)
    files = _files(tmp_path)
    if variant == "sharded":
        assert "model.safetensors.index.json" in files and "model.safetensors" not in files
        assert len([f for f in files if f.startswith("model-0")]) > 1
        weight_map, _ = read_index(tmp_path / "model.safetensors.index.json")
        assert ("lm_head.weight" in weight_map) == (family == "gptj")
    if variant == "sharded-bin":
        weight_map, _ = read_index(tmp_path / "pytorch_model.bin.index.json")
        assert "lm_head.weight" in weight_map  # HF lists the tied key in .bin indexes
        assert weight_map["lm_head.weight"] == weight_map["transformer.wte.weight"] or family == "gptj"
    if variant == "bin":
        state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
        assert "lm_head.weight" in state
    reloaded, info = pt.AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded) is type(model)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    input_ids = random_ids((2, 6))
    with torch.no_grad():
        assert_close(reloaded(input_ids).logits, model(input_ids).logits, name=f"{variant} round trip")
    if model.config.tie_word_embeddings:
        assert reloaded.lm_head.weight is reloaded.transformer.wte.weight


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_head_loading(family, tmp_path):
    """A base checkpoint loads into the LM head and an LM checkpoint into the base model (prefix rules)."""
    base_fixture = os.path.join(HF_FIXTURES, f"{family}-pt-base")
    lm, info = getattr(pt, LM_CLASSES[family]).from_pretrained(base_fixture, output_loading_info=True)
    expected_missing = ["lm_head.bias", "lm_head.weight"] if family == "gptj" else []
    assert info["missing_keys"] == expected_missing and info["unexpected_keys"] == []
    base = getattr(pt, BASE_CLASSES[family]).from_pretrained(base_fixture)
    input_ids = random_ids((2, 5), high=100)
    with torch.no_grad():
        assert_close(lm.transformer(input_ids).last_hidden_state, base(input_ids).last_hidden_state, name="base->lm")
    base2, info = getattr(pt, BASE_CLASSES[family]).from_pretrained(
        os.path.join(HF_FIXTURES, f"{family}-pt-causal_lm"), output_loading_info=True
    )
    expected_unexpected = ["lm_head.bias", "lm_head.weight"] if family == "gptj" else []
    assert info["missing_keys"] == [] and info["unexpected_keys"] == expected_unexpected
    seq_cls, info = getattr(pt, BASE_CLASSES[family].replace("Model", "ForSequenceClassification")).from_pretrained(
        base_fixture, output_loading_info=True
    )
    assert info["missing_keys"] == ["score.weight"]
    assert float(seq_cls.score.weight.detach().std()) > 0  # newly initialized, not left empty


def test_legacy_mask_buffers_and_gamma_beta_are_accepted(tmp_path):
    model = make_model("GPT2LMHeadModel")
    state = dict(model.state_dict())
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, 19, 19, dtype=torch.bool)
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    state["transformer.ln_f.gamma"] = state.pop("transformer.ln_f.weight")
    model.save_pretrained(tmp_path, state_dict=state)
    reloaded, info = pt.GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert torch.equal(reloaded.transformer.ln_f.weight, model.transformer.ln_f.weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_dtype_load_and_save(dtype, tmp_path):
    source = os.path.join(HF_FIXTURES, "gptj-pt-causal_lm")
    model = pt.GPTJForCausalLM.from_pretrained(source, torch_dtype=dtype)
    assert model.dtype == dtype and model.config.torch_dtype == str(dtype)[6:]
    assert model.transformer.h[0].attn.rotary_sin.dtype == torch.float32  # .half() would not round it either
    expected = reference_outputs("gptj", "causal_lm")
    with torch.no_grad():
        logits = model(torch.from_numpy(expected["input.input_ids"])).logits.float()
    assert_close(logits, expected["pt.logits"], dtype=str(dtype)[6:], name=f"{dtype} logits")
    model.save_pretrained(tmp_path)
    tag = {torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
    with open(tmp_path / "model.safetensors", "rb") as f:
        assert f'"dtype":"{tag}"' in f.read(400).decode("latin1")
    assert json.load(open(tmp_path / "config.json"))["torch_dtype"] == str(dtype)[6:]
    auto = pt.GPTJForCausalLM.from_pretrained(tmp_path, torch_dtype="auto")
    assert auto.dtype == dtype
    assert pt.GPTJForCausalLM.from_pretrained(tmp_path).dtype == torch.float32


def test_half_keeps_masks_boolean():
    model = make_model("GPT2LMHeadModel").half()
    assert model.transformer.h[0].attn.bias.dtype == torch.bool
    assert model.dtype == torch.float16


def test_loading_reads_straight_into_parameters(monkeypatch):
    """Same-dtype safetensors tensors go through `read_into` (no intermediate copy), the low-memory path."""
    calls = {"read_into": 0, "getitem": 0}
    original_read_into, original_getitem = SafetensorsFile.read_into, SafetensorsFile.__getitem__

    def read_into(self, key, out):
        calls["read_into"] += 1
        return original_read_into(self, key, out)

    def getitem(self, key):
        calls["getitem"] += 1
        return original_getitem(self, key)

    monkeypatch.setattr(SafetensorsFile, "read_into", read_into)
    monkeypatch.setattr(SafetensorsFile, "__getitem__", getitem)
    model = pt.GPT2LMHeadModel.from_pretrained(os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm"))
    assert calls == {"read_into": 28, "getitem": 0}
    assert not any(p.is_meta for p in model.parameters())


def test_generation_params_move_to_generation_config(tmp_path):
    model = make_model("GPT2LMHeadModel", max_length=50, do_sample=True)
    with pytest.warns(UserWarning, match="Moving the following attributes"):
        model.save_pretrained(tmp_path)
    config = json.load(open(tmp_path / "config.json"))
    generation = json.load(open(tmp_path / "generation_config.json"))
    assert config["max_length"] is None and config["do_sample"] is None
    assert generation["max_length"] == 50 and generation["do_sample"] is True
    assert generation["_from_model_config"] is True and generation["pad_token_id"] == 0
    assert model.config.max_length == 50  # the live config is untouched


def test_only_generative_heads_write_generation_config(tmp_path):
    for name in ("GPT2Model", "GPT2ForSequenceClassification", "GPT2DoubleHeadsModel"):
        make_model(name).save_pretrained(tmp_path / name)
        has = os.path.exists(tmp_path / name / "generation_config.json")
        assert has == (name == "GPT2DoubleHeadsModel"), name
        assert json.load(open(tmp_path / name / "config.json"))["architectures"] == [name]


def test_auto_from_config_and_unknown_model_type(tmp_path):
    from helpers import tiny_config

    model = pt.AutoModelForTokenClassification.from_config(tiny_config("gptj"))
    assert type(model) is pt.GPTJForTokenClassification
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="gpt2, gpt_neo, gptj"):
        pt.AutoModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="supported model types"):
        pt.AutoModel.from_config(type("C", (), {"model_type": "bert"})())
    with pytest.raises(OSError):
        pt.AutoModel()


def test_from_pretrained_config_overrides():
    model = pt.GPT2ForSequenceClassification.from_pretrained(
        os.path.join(HF_FIXTURES, "gpt2-pt-seq_cls"), pad_token_id=5
    )
    assert model.config.pad_token_id == 5
    with pytest.raises(TypeError, match="not_a_config_key"):
        pt.GPT2Model.from_pretrained(os.path.join(HF_FIXTURES, "gpt2-pt-base"), not_a_config_key=1)
    np.testing.assert_equal(model.config.architectures, ["GPT2ForSequenceClassification"])


CONVERTED = sorted(d for d in os.listdir(HF_FIXTURES) if "-tf-" in d or "-flax-" in d)


@pytest.mark.parametrize("name", CONVERTED)
def test_tf_and_flax_checkpoints_load_into_pytorch(name):
    """TF (h5, TF-format safetensors) and Flax (msgpack, Flax-format safetensors) fixtures load through
    `conversion.open_checkpoint` and give the recorded PyTorch outputs."""
    if "-tf-" in name and not name.endswith("safetensors"):
        pytest.importorskip("h5py")
    if "-flax-" in name and not name.endswith("safetensors"):
        pytest.importorskip("msgpack")
    family, _, head = name.split("-")[:3]
    expected = reference_outputs(family, head)
    model, info = AUTO[head].from_pretrained(os.path.join(HF_FIXTURES, name), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    kwargs = {"input_ids": torch.from_numpy(expected["input.input_ids"])}
    if head == "double_heads":
        kwargs["mc_token_ids"] = torch.from_numpy(expected["input.mc_token_ids"])
    with torch.no_grad():
        output = model(**kwargs)
    for key in expected:
        if key.startswith("pt."):
            assert_close(output[key[3:]], expected[key], name=f"{name} {key}")
