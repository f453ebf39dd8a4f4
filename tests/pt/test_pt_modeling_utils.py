"""PreTrainedModel utilities: init, embeddings resizing and tying, parameter counts, gradient checkpointing,
and bad input."""

import os

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from pt_testing import BASE_CLASSES, CLASSES, FAMILIES, LM_CLASSES, make_model, random_ids  # noqa: E402

import twinformers.pt as pt  # noqa: E402
from helpers import HF_FIXTURES, assert_close, tiny_config  # noqa: E402


def test_init_weights_follow_initializer_range():
    config = tiny_config("gpt2", n_embd=96, n_head=4, n_layer=6, initializer_range=0.05)
    model = pt.GPT2LMHeadModel(config)
    residual_std = 0.05 / np.sqrt(2 * 6)
    c_proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h]
                       + [b.mlp.c_proj.weight.flatten() for b in model.transformer.h]).detach()
    c_fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h]).detach()
    assert abs(float(c_proj.std()) - residual_std) < 0.1 * residual_std
    assert abs(float(c_fc.std()) - 0.05) < 0.005
    assert float(model.transformer.h[0].attn.c_attn.bias.detach().abs().max()) == 0.0
    assert torch.equal(model.transformer.ln_f.weight, torch.ones(96))
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("family", FAMILIES)
def test_resize_token_embeddings(family):
    model = make_model(LM_CLASSES[family])
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    new = model.resize_token_embeddings(101, pad_to_multiple_of=8)
    assert new.num_embeddings == 104 and model.config.vocab_size == 104
    assert torch.equal(new.weight[:97], old_in)
    assert torch.equal(model.get_output_embeddings().weight[:97], old_out)
    if family == "gptj":  # untied head with bias, resized alongside
        assert model.lm_head.weight is not new.weight and model.lm_head.bias.shape == (104,)
    else:
        assert model.lm_head.weight is new.weight
    with torch.no_grad():
        logits = model(torch.tensor([[103, 5, 7]])).logits
    assert logits.shape == (1, 3, 104)
    model.resize_token_embeddings(50)
    assert model.config.vocab_size == 50 and model.lm_head.weight.shape == (50, 24)
    with pytest.raises(ValueError, match="input_ids contains 60"):
        model(torch.tensor([[60]]))


def test_set_input_embeddings_and_tie():
    model = make_model("GPTNeoForCausalLM")
    model.set_input_embeddings(torch.nn.Embedding(97, 24))
    model.tie_weights()
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=[n for _, n, _ in CLASSES])
def test_num_parameters(family, name, kind):
    model = make_model(name)
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    embeddings = model.transformer.wte.weight.numel() + (
        model.transformer.wpe.weight.numel() if hasattr(model.transformer, "wpe") else 0
    ) if hasattr(model, "transformer") else model.wte.weight.numel() + (
        model.wpe.weight.numel() if hasattr(model, "wpe") else 0)
    assert model.num_parameters() == total
    assert model.num_parameters(exclude_embeddings=True) == total - embeddings
    if hasattr(model, "lm_head") and model.config.tie_word_embeddings:
        assert total == sum(p.numel() for n, p in model.named_parameters() if n != "lm_head.weight")


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_the_same_gradients(family, caplog):
    model = make_model(LM_CLASSES[family]).train()
    input_ids = random_ids((2, 6))
    loss = model(input_ids, labels=input_ids).loss
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    with caplog.at_level("WARNING"):
        output = model(input_ids, labels=input_ids, use_cache=True)
    assert "use_cache=True` is incompatible with gradient checkpointing" in caplog.text
    assert output.past_key_values is None
    output.loss.backward()
    for n, p in model.named_parameters():
        assert_close(p.grad, expected[n], name=f"grad {n}")


def test_dropout_active_only_in_training():
    model = make_model("GPT2LMHeadModel", resid_pdrop=0.5)
    input_ids = random_ids((2, 6))
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, model(input_ids).logits)
        model.train()
        assert not torch.equal(model(input_ids).logits, model(input_ids).logits)


def test_can_generate():
    generative = {n for _, n, _ in CLASSES if getattr(pt, n).can_generate()}
    assert generative == {"GPT2LMHeadModel", "GPT2DoubleHeadsModel", "GPTJForCausalLM", "GPTNeoForCausalLM"}
    assert pt.GPT2ForCausalLM is pt.GPT2LMHeadModel


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("family", FAMILIES)
def test_bad_inputs_raise_value_errors_naming_the_argument(family):
    model = make_model(LM_CLASSES[family])
    ids = random_ids((2, 5))
    with pytest.raises(ValueError, match="input_ids contains 97"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match="input_ids contains -1"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="both input_ids and inputs_embeds"):
        model(ids, inputs_embeds=torch.zeros(2, 5, 24))
    with pytest.raises(ValueError, match="either input_ids or inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(ids, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="sequence length 20 .* exceeds .* 19 positions"):
        model(random_ids((1, 20)))
    with torch.no_grad():
        past = model(random_ids((1, 15)), use_cache=True).past_key_values
    with pytest.raises(ValueError, match=r"sequence length 20 \(past_key_values 15 \+ input 5\)"):
        model(random_ids((1, 5)), past_key_values=past)
    with pytest.raises(ValueError, match="position_ids contains 19"):
        model(ids, position_ids=torch.full((2, 5), 19))
    with pytest.raises(ValueError, match="head_mask has shape"):
        model(ids, head_mask=torch.ones(4))
    with pytest.raises(ValueError, match="token_type_ids contains 200"):
        model(ids, token_type_ids=torch.full((2, 5), 200))
    with pytest.raises(ValueError, match="input_ids must hold integer ids"):
        model(torch.zeros(2, 5))


def test_bad_config_and_attn_implementation():
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        pt.GPT2Model(tiny_config("gpt2", attn_implementation="flash_attention_2"))
    with pytest.raises(ValueError, match="needs a GPTJConfig"):
        pt.GPTJModel(tiny_config("gpt2"))
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        pt.GPT2Model.from_pretrained(os.path.join(HF_FIXTURES, "gpt2-pt-base"), attn_implementation="flash")


def test_encoder_hidden_states_without_cross_attention():
    model = make_model("GPT2Model")
    with pytest.raises(ValueError, match="add_cross_attention=True"):
        model(random_ids((1, 3)), encoder_hidden_states=torch.zeros(1, 2, 24))


def test_checkpoint_shape_mismatch_names_the_key():
    with pytest.raises(ValueError, match=r"transformer.wpe.weight: checkpoint \(64, 32\) vs expected \(32, 32\)"):
        pt.GPT2LMHeadModel.from_pretrained(os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm"), n_positions=32)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(OSError, match="holds no weights"):
        pt.GPT2Model.from_pretrained(tmp_path, config=tiny_config("gpt2"))
    with pytest.raises(OSError):
        pt.GPT2Model.from_pretrained(tmp_path / "does-not-exist")
    make_model("GPT2Model").save_pretrained(tmp_path)
    with open(tmp_path / "model.safetensors", "r+b") as f:
        f.truncate(200)
    with pytest.raises(OSError, match="model.safetensors"):
        pt.GPT2Model.from_pretrained(tmp_path)


class _NotAWeight:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_bin_needing_more_than_weights_is_refused(tmp_path):
    make_model("GPT2Model").save_pretrained(tmp_path, safe_serialization=False)
    torch.save({"wte.weight": _NotAWeight()}, tmp_path / "pytorch_model.bin")  # its pickle calls os.getcwd
    with pytest.raises(OSError, match="weights_only"):
        pt.GPT2Model.from_pretrained(tmp_path)


def test_save_pretrained_into_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        make_model("GPT2Model").save_pretrained(target)


@pytest.mark.parametrize("family", FAMILIES)
def test_past_key_values_of_wrong_length(family):
    model = make_model(BASE_CLASSES[family])
    with torch.no_grad():
        past = model(random_ids((1, 3)), use_cache=True).past_key_values
    with pytest.raises(ValueError, match="past_key_values has 1 entries"):
        model(random_ids((1, 1)), past_key_values=past[:1])
