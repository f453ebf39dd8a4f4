"""`model.quantize("int8")` in Flax: one projection within its rounding bound, every projection int8 with the
shared scales, logits near fp32, generate, the safetensors format and round trip, and the errors."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax_testing import FAMILIES, LM_CLASSES, make_model, random_ids

import twinformers.flax as fx
from twinformers.checkpoints.quantized import quantize_per_channel
from twinformers.checkpoints.safetensors import open_safetensors
from twinformers.flax.modeling_utils import flatten_params
from twinformers.flax.quantization import Int8Linear


def float_and_int8(family: str):
    """The shared perturbed float model and a quantized copy (quantize changes the model in place)."""
    reference = make_model(LM_CLASSES[family])
    model = type(reference)(reference.config.__class__.from_dict(reference.config.to_dict()), _do_init=False)
    model.params = reference.params
    return reference, model.quantize("int8")


def canonical_weights(model) -> dict[str, np.ndarray]:
    """Canonical (PyTorch-named, PyTorch-layout) copies of the params, scales included (the model's own plan)."""
    flat = flatten_params(model.params)
    return {key: transform.to_canonical(np.asarray(flat[path]))
            for path, (key, transform) in model._canonical_plan().items()}


@pytest.mark.parametrize("out_axis", [0, 1])
def test_int8_linear_within_its_rounding_bound(out_axis: int) -> None:
    """Each weight is off by at most scale[j] / 2, activations stay float32: output j is off by at most
    scale[j] / 2 · sum_i |x_i| (plus float32 rounding of the sums, far below 1e-5 here)."""
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(24, 40)).astype(np.float32), rng.normal(size=(40,)).astype(np.float32)
    x = rng.normal(size=(3, 5, 24)).astype(np.float32)
    stored = kernel if out_axis == 1 else kernel.T  # nnx.Linear (in, out), GPT-2's Conv1D (out, in)
    layer = Int8Linear(stored.shape, out_axis, True, dtype=jnp.float32)
    layer.set_weight(stored, bias)
    _, scale = quantize_per_channel(kernel, out_axis=1)
    assert layer.kernel[...].dtype == jnp.int8 and np.array_equal(layer.kernel_scale[...], scale)
    error = np.abs(np.asarray(layer(x)) - (x @ kernel + bias))
    bound = scale * 0.5 * np.abs(x).sum(-1, keepdims=True) + 1e-5
    assert (error <= bound).all() and error.max() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_every_projection_is_int8_with_the_shared_scales(family: str) -> None:
    reference, model = float_and_int8(family)
    floats, ints = canonical_weights(reference), canonical_weights(model)
    scales = sorted(key for key in ints if key.endswith(".weight_scale"))
    assert [key[: -len(".weight_scale")] for key in scales] == model.config.quantization_config["modules"]
    assert "lm_head.weight_scale" in scales
    for key in scales:
        weight = key[: -len("_scale")]
        source = floats.get(weight, floats["transformer.wte.weight"])  # a tied head quantizes the token table
        conv1d = family == "gpt2" and weight != "lm_head.weight"  # canonical layout: Conv1D (in, out), else (out, in)
        q, scale = quantize_per_channel(source, out_axis=int(conv1d))
        assert ints[weight].dtype == np.int8 and np.array_equal(ints[weight], q), weight
        assert np.array_equal(ints[key], scale), key
    flat = flatten_params(model.params)
    float_2d = [path for path, leaf in flat.items() if leaf.dtype == jnp.float32 and leaf.ndim == 2]
    assert all(("wte" in p or "wpe" in p) for p in float_2d)  # no float projection weight is left


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_close_to_float(family: str) -> None:
    """The per-projection errors compound through the layers: on these tiny perturbed models the int8 logits
    stay within 3% of the largest float logit (as in the PyTorch test) and pick the same token almost everywhere."""
    reference, model = float_and_int8(family)
    ids = random_ids((2, 8))
    expected, got = np.asarray(reference(ids).logits), np.asarray(model(ids).logits)
    deviation = np.abs(got - expected).max()
    assert 0 < deviation <= 0.03 * np.abs(expected).max()
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.9


def test_generate_matches_forward() -> None:
    _, model = float_and_int8("gpt2")
    out = np.asarray(model.generate(random_ids((1, 5)), max_new_tokens=6, do_sample=False))
    assert out.shape == (1, 11)
    for t in range(5, 11):  # each greedy token is the argmax of a full forward of the int8 model
        assert out[0, t] == np.asarray(model(out[:, :t]).logits)[0, -1].argmax()


def test_save_and_load_round_trip(tmp_path) -> None:
    reference, model = float_and_int8("gpt2")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"]["mode"] == "int8"
    tensors = open_safetensors(os.fspath(tmp_path / "model.safetensors"))
    stored = tensors["transformer.h.0.attn.c_attn.weight"]
    assert stored.dtype == np.int8 and stored.shape == (24, 72)  # Conv1D's (in, out), as the float weight
    assert tensors["transformer.h.0.attn.c_attn.weight_scale"].shape == (72,)
    assert tensors["lm_head.weight"].dtype == np.int8 and tensors["lm_head.weight"].shape == (97, 24)
    loaded = type(model).from_quantized(tmp_path)
    ids = random_ids((2, 7))
    np.testing.assert_array_equal(np.asarray(loaded(ids).logits), np.asarray(model(ids).logits))
    with pytest.raises(ValueError, match="quantization_config.*from_quantized"):
        type(model).from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path / "msgpack", safe_serialization=False)
    reference.save_pretrained(tmp_path / "float")
    with pytest.raises(ValueError, match="no quantization_config"):
        type(model).from_quantized(tmp_path / "float")


def test_errors() -> None:
    _, model = float_and_int8("gpt2")
    with pytest.raises(ValueError, match="already quantized"):
        model.quantize("int8")
    fresh = fx.GPT2LMHeadModel(model.config.__class__(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=8))
    with pytest.raises(ValueError, match="unsupported mode 'int4'"):
        fresh.quantize("int4")


# ------------------------------------------------------------------------- bfloat16 under XLA on CPU
def _half_precision_lm(family: str, width: int = 512):
    """A one-layer bfloat16 model whose weights dominate its activations (every weight >= width² elements)."""
    from twinformers.configuration import GPT2Config, GPTJConfig

    shape = dict(n_layer=1, n_embd=width, n_head=4, vocab_size=1000, n_positions=16)
    config = GPTJConfig(rotary_dim=16, **shape) if family == "gptj" else GPT2Config(**shape)
    model = getattr(fx, LM_CLASSES[family])(config, dtype=jnp.bfloat16)
    model.params = model.to_bf16(model.params)
    return model


@pytest.mark.parametrize("layout", ["in_out", "out_in", "batch_time"])
def test_bf16_one_row_dot_equals_the_converted_dot(layout: str) -> None:
    """One row (batch-1 decoding) takes the padded path; its result is the float32 product of the same bfloat16
    values rounded once to bfloat16 (products are exact in float32; only the summation order can move a result
    by one bfloat16 step), and float32 operands go through `lax.dot_general` unchanged."""
    import jax
    from jax import lax

    from twinformers.flax.ops import dot_general_f32

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 1, 384) if layout == "batch_time" else (1, 384)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(384, 640)), jnp.bfloat16)
    if layout == "out_in":  # GPT-2's Conv1D and the tied LM head contract the weight's second axis
        w, numbers = w.T, (((1,), (1,)), ((), ()))
    else:
        numbers = (((x.ndim - 1,), (0,)), ((), ()))
    out = jax.jit(dot_general_f32, static_argnums=2)(x, w, numbers)
    exact = np.asarray(lax.dot_general(x.astype(jnp.float32), w.astype(jnp.float32), numbers))
    assert out.dtype == jnp.bfloat16 and out.shape == exact.shape
    step = np.abs(exact) * 2.0**-7  # one bfloat16 step (8 significant bits) at most
    assert (np.abs(np.asarray(out, np.float32) - exact) <= step).all()
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    assert np.array_equal(dot_general_f32(x32, w32, numbers), lax.dot_general(x32, w32, numbers))


@pytest.mark.parametrize("family", ["gpt2", "gptj"])
def test_bf16_generate_holds_no_float32_weight_copy(family: str) -> None:
    """`generate`'s compiled loop keeps no float32 copy of a weight: XLA on CPU rewrote each one-row bfloat16 dot
    and each bfloat16 token lookup into a float32 one and hoisted the weights' converts out of the loop (a
    float32 copy of every weight, 3.15x a 2-layer GPT-J-6B-width checkpoint). The program's temporaries stay
    below the float32 bytes of its smallest weight; the tokens are the greedy choices of the full forward."""
    model = _half_precision_lm(family)
    programs = []
    original = model._generation_program

    def recording(name, key, build):
        program = original(name, key, build)
        return lambda *args: programs.append((program, args)) or program(*args)

    model._generation_program = recording
    ids = random_ids((1, 4))
    out = np.asarray(model.generate(ids, max_new_tokens=3, do_sample=False))
    (program, args), = programs
    temp = program.lower(*args).compile().memory_analysis().temp_size_in_bytes
    assert temp < 512 * 512 * 4, temp
    for length in range(4, out.shape[1]):
        logits = model(out[:, :length]).logits[:, -1]
        assert out[0, length] == int(np.argmax(np.asarray(logits, np.float32))), length
