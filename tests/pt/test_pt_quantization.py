"""`model.quantize("int8")` in PyTorch: each projection within its rounding bound, logits near fp32, generate,
the safetensors format and round trip, and the errors; `model.pack_for_inference()`: the same state_dict and
logits, no second copy of a weight, save/load, and the errors."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from pt_testing import FAMILIES, LM_CLASSES, make_model, random_ids

from twinformers.checkpoints.quantized import quantize_per_channel
from twinformers.checkpoints.safetensors import open_safetensors
from twinformers.pt import packing
from twinformers.pt.ops import Conv1D
from twinformers.pt.packing import MatvecConv1D, PackedLinear, bf16_packing_available
from twinformers.pt.quantization import Int8Linear


def float_and_int8(family: str):
    model = make_model(LM_CLASSES[family], family)
    return model, copy.deepcopy(model).quantize("int8")


def test_quantize_per_channel_rounding() -> None:
    weight = np.array([[0.5, -2.0, 0.0], [-1.0, 1.0, 0.0]], dtype=np.float32)  # (in=2, out=3)
    q, scale = quantize_per_channel(weight, out_axis=1)
    np.testing.assert_allclose(scale, [1.0 / 127, 2.0 / 127, 1.0], rtol=1e-7)  # an all-zero channel gets 1
    assert q.dtype == np.int8 and q.tolist() == [[64, -127, 0], [-127, 64, 0]]  # 63.5 rounds to even, 64
    q_t, scale_t = quantize_per_channel(weight.T, out_axis=0)
    assert (q_t == q.T).all() and (scale_t == scale).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_projection_is_int8_within_its_rounding_bound(family: str) -> None:
    """Each weight is off by at most scale[j] / 2: output j of a projection is off by at most
    scale[j] / 2 · sum_i |x_i| for the same input x. The matmul takes x and scale as bfloat16 and returns
    bfloat16 (unit roundoff u = 2^-8): rounding x adds at most u · |q_ij| scale[j] |x_i| <= u · 127 · scale[j] · |x_i|
    per term, rounding scale and the result at most 2u · |y_j|. Second-order terms (u², u · scale) stay
    below the 1% slack."""
    reference, model = float_and_int8(family)
    floats = {name: m for name, m in reference.named_modules() if isinstance(m, (Conv1D, torch.nn.Linear))}
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert sorted(quantized) == sorted(floats) == model.config.quantization_config["modules"]
    assert "lm_head" in quantized
    assert not any(p.dtype == torch.float32 and p.dim() == 2 and "wte" not in n and "wpe" not in n
                   for n, p in model.named_parameters())  # no float projection weight is left
    checked = []

    def check(name):
        def hook(module, args, output):
            x = args[0].reshape(-1, module.in_features)
            float_module = floats[name]
            weight = float_module.weight if isinstance(float_module, Conv1D) else float_module.weight.T
            expected = x @ weight + (0 if float_module.bias is None else float_module.bias)
            u = 2.0 ** -8
            bound = module.weight_scale * (0.5 + 127 * u) * x.abs().sum(-1, keepdim=True) + 2 * u * expected.abs()
            error = (output.reshape(expected.shape) - expected).abs()
            assert (error <= 1.01 * bound + 1e-6).all(), name
            assert error.max() > 0  # rounding happened: the test would see a float path
            checked.append(name)
        return hook

    for name, module in quantized.items():
        module.register_forward_hook(check(name))
    with torch.no_grad():
        model(random_ids((2, 6)))
    assert sorted(checked) == sorted(quantized)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_close_to_float(family: str) -> None:
    """End to end the per-projection errors compound through the layers; with these tiny perturbed models
    (weights ~0.2, logits ~4) the int8 logits stay within 3% of the largest float logit (1.7-2.2% measured) and pick
    the same token at almost every position. The exact, derived bound is the per-projection one above."""
    reference, model = float_and_int8(family)
    ids = random_ids((2, 8))
    with torch.no_grad():
        expected, got = reference(ids).logits, model(ids).logits
    deviation = (got - expected).abs().max().item()
    assert 0 < deviation <= 0.03 * expected.abs().max().item()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_cache_matches_forward(family: str) -> None:
    _, model = float_and_int8(family)
    prompt = random_ids((1, 5))
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=6, do_sample=False)
        assert out.shape == (1, 11)
        for t in range(5, 11):  # each greedy token is the argmax of a full forward of the int8 model
            assert out[0, t] == model(out[:, :t]).logits[0, -1].argmax()


def test_save_and_load_round_trip(tmp_path) -> None:
    _, model = float_and_int8("gpt2")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"]["mode"] == "int8"
    tensors = open_safetensors(os.fspath(tmp_path / "model.safetensors"))
    c_attn = model.transformer.h[0].attn.c_attn
    stored = tensors["transformer.h.0.attn.c_attn.weight"]
    assert stored.dtype == np.int8 and stored.shape == (c_attn.in_features, c_attn.out_features)  # Conv1D layout
    assert (stored.T == c_attn.weight.numpy()).all()
    assert tensors["transformer.h.0.attn.c_attn.weight_scale"].dtype == np.float32
    assert tensors["transformer.h.0.attn.c_attn.weight_scale"].shape == (c_attn.out_features,)
    assert tensors["lm_head.weight"].dtype == np.int8 and tensors["transformer.wte.weight"].dtype == np.float32
    loaded = type(model).from_quantized(tmp_path)
    assert loaded.quantization_mode == "int8"
    ids = random_ids((2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no quantization_config"):
        type(model).from_quantized(_float_checkpoint(tmp_path / "float"))
    # A plain from_pretrained would read the int8 values as floats and drop the scales: it refuses, naming the way.
    with pytest.raises(ValueError, match="quantization_config.*from_quantized"):
        type(model).from_pretrained(tmp_path)


def _float_checkpoint(path):
    make_model(LM_CLASSES["gpt2"], "gpt2").save_pretrained(path)
    return path


def test_errors() -> None:
    model = make_model(LM_CLASSES["gpt2"], "gpt2")
    with pytest.raises(ValueError, match="unsupported mode 'int4'"):
        model.quantize("int4")
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model.quantize("int8")
    model.eval().quantize("int8")
    with pytest.raises(ValueError, match="already quantized"):
        model.quantize("int8")
    with pytest.raises(ValueError, match=r"quantized to int8 \(quantize\), which froze its weights"):
        model.train()
    assert not model.training and model.eval() is model


# --------------------------------------------------------------------------------------------- pack_for_inference
def packed_pair(family: str, dtype: torch.dtype):
    model = make_model(LM_CLASSES[family], family).to(dtype)
    return model, copy.deepcopy(model).pack_for_inference()


def assert_same_state_dict(expected: dict, got: dict) -> None:
    assert list(got) == list(expected)  # names and their order
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("family", FAMILIES)
def test_pack_for_inference_float32(family: str) -> None:
    """The weights change layout, not values or size: the (in, out) matrix of every projection has its longer
    side contiguous and owns no more storage than itself; a tied head still is the token table. One-row inputs
    (decode steps) take MatvecConv1D's NumPy path."""
    model, packed = packed_pair(family, torch.float32)
    assert_same_state_dict(model.state_dict(), packed.state_dict())
    relaid = 0
    for name, module in packed.named_modules():
        if isinstance(module, (Conv1D, torch.nn.Linear)):
            matrix = module.weight if isinstance(module, Conv1D) else module.weight.T  # (in, out)
            fan_in, fan_out = matrix.shape
            assert (matrix if fan_in <= fan_out else matrix.T).is_contiguous(), name
            assert module.weight.untyped_storage().nbytes() == module.weight.numel() * 4, name
            relaid += module.weight.stride() != model.get_submodule(name).weight.stride()
    assert relaid > 0  # the tiny configs do exercise the relayout
    convs = [name for name, module in model.named_modules() if isinstance(module, Conv1D)]
    assert all(type(packed.get_submodule(name)) is MatvecConv1D for name in convs)  # GPT-2's, through NumPy
    if model.config.tie_word_embeddings:
        assert packed.lm_head.weight is packed.get_input_embeddings().weight
    ids = random_ids((2, 8))
    with torch.no_grad():
        torch.testing.assert_close(packed(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(packed(ids[:1, :1]).logits, model(ids[:1, :1]).logits, rtol=0, atol=1e-5)
        assert torch.equal(packed.generate(ids[:1], max_new_tokens=5, do_sample=False),
                           model.generate(ids[:1], max_new_tokens=5, do_sample=False))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("onednn_bf16", [True, False], ids=["onednn-bf16", "no-onednn-bf16"])
def test_pack_for_inference_bfloat16(family: str, onednn_bf16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Untied bf16 projections become PackedLinear where oneDNN runs bf16; elsewhere (and a tied head always)
    they stay plain, stored with each output's row contiguous. Either way the plain path's bits."""
    if onednn_bf16 and not bf16_packing_available():
        pytest.skip("this CPU has no oneDNN bfloat16 (AVX512-BF16 or AMX): only the plain layout can run here")
    monkeypatch.setattr(packing, "bf16_packing_available", lambda: onednn_bf16)
    model, packed = packed_pair(family, torch.bfloat16)
    assert_same_state_dict(model.state_dict(), packed.state_dict())
    projections = [n for n, m in model.named_modules() if isinstance(m, (Conv1D, torch.nn.Linear))]
    tied = ["lm_head"] if model.config.tie_word_embeddings else []
    for name in projections:  # a tied head stays plain: the token table keeps its rows
        kept = name in tied or not onednn_bf16
        module = packed.get_submodule(name)
        assert type(module) is (type(model.get_submodule(name)) if kept else PackedLinear), name
        if kept:  # each output's weights in one contiguous row: (out, in) storage
            rows = module.weight.T if isinstance(module, Conv1D) else module.weight
            assert rows.is_contiguous(), name
            assert module.weight.untyped_storage().nbytes() == module.weight.numel() * 2, name
    ids = random_ids((2, 8))
    with torch.no_grad():
        torch.testing.assert_close(packed(ids).logits, model(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(packed(ids[:1, :1]).logits, model(ids[:1, :1]).logits, rtol=0, atol=0)


def test_packed_save_load_round_trip(tmp_path) -> None:
    model, packed = packed_pair("gptj", torch.bfloat16)  # GPT-J: an untied head with a bias, packed too
    packed.save_pretrained(tmp_path / "packed")
    model.save_pretrained(tmp_path / "plain")
    stored = open_safetensors(os.fspath(tmp_path / "packed" / "model.safetensors"))
    reference = open_safetensors(os.fspath(tmp_path / "plain" / "model.safetensors"))
    assert sorted(stored) == sorted(reference)
    assert all((stored[k] == reference[k]).all() for k in reference)
    other = make_model(LM_CLASSES["gptj"], "gptj", seed=5).to(torch.bfloat16)
    packed.load_state_dict(other.state_dict())  # a packed model takes new weights (repacked)
    ids = random_ids((2, 6))
    with torch.no_grad():
        torch.testing.assert_close(packed(ids).logits, other(ids).logits, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="size mismatch for lm_head.weight"):
        packed.load_state_dict({**other.state_dict(), "lm_head.weight": torch.zeros(3, 3, dtype=torch.bfloat16)})


def test_pack_for_inference_errors() -> None:
    model = make_model(LM_CLASSES["gptj"], "gptj").to(torch.bfloat16)
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model.pack_for_inference()
    model.eval().pack_for_inference()
    with pytest.raises(ValueError, match="already packed"):
        model.pack_for_inference()
    with pytest.raises(ValueError, match="quantize first"):
        model.quantize("int8")
    with pytest.raises(ValueError, match=r"packed for inference \(pack_for_inference\), which froze"):
        model.train()
    assert not model.training and model.train(False) is model
    weight = torch.randn(4, 3, dtype=torch.bfloat16)
    if bf16_packing_available():
        layer = PackedLinear(weight, None, fan_in_fan_out=False)
        with pytest.raises(RuntimeError, match="no gradients"):
            layer(torch.randn(2, 3, dtype=torch.bfloat16, requires_grad=True))
        with pytest.raises(TypeError, match="input is torch.float32"):
            layer(torch.randn(2, 3))
    else:  # an AVX2-only CPU: our message, not oneDNN's list of CPU flags
        with pytest.raises(RuntimeError, match="oneDNN does not run bfloat16 matmuls on this CPU"):
            PackedLinear(weight, None, fan_in_fan_out=False)
    quantized = make_model(LM_CLASSES["gpt2"], "gpt2").quantize("int8")
    ids = random_ids((1, 5))
    with torch.no_grad():
        expected = quantized(ids).logits
        torch.testing.assert_close(quantized.pack_for_inference()(ids).logits, expected, rtol=0, atol=0)
