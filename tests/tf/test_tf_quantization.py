"""`model.quantize("int8")` in TensorFlow: one projection within its rounding bound, every projection int8 with the
shared scales, logits near fp32, generate, the safetensors format and round trip, and the errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from tf_testing import FAMILIES, LM_CLASSES, perturb, random_ids, tiny_config

import twinformers.tf as tft
from twinformers.checkpoints.quantized import quantize_per_channel
from twinformers.checkpoints.safetensors import open_safetensors
from twinformers.tf.quantization import Int8Linear


def float_and_int8(family: str):
    """A perturbed float model and a quantized copy (fresh: quantize changes the model in place)."""
    models = []
    for _ in range(2):
        model = getattr(tft, LM_CLASSES[family])(tiny_config(family, pad_token_id=0))
        model.build()
        models.append(perturb(model))
    return models[0], models[1].quantize("int8")


def canonical_weights(model: tft.PreTrainedModel) -> dict[str, np.ndarray]:
    """Canonical (PyTorch-named, PyTorch-layout) copies of the variables, scales included (the model's own plan)."""
    return {key: transform.to_canonical(var.numpy()) for var, key, transform in model._canonical_plan().values()}


def test_int8_linear_within_its_rounding_bound() -> None:
    """Each weight is off by at most scale[j] / 2, activations stay float32: output j is off by at most
    scale[j] / 2 · sum_i |x_i| (plus float32 rounding of the sums, far below 1e-5 here)."""
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(24, 40)).astype(np.float32), rng.normal(size=(40,)).astype(np.float32)
    x = rng.normal(size=(3, 5, 24)).astype(np.float32)
    layer = Int8Linear("kernel", 24, 40, True)
    layer.build()
    layer.set_weight(kernel, bias)
    _, scale = quantize_per_channel(kernel, out_axis=1)
    assert layer.kernel.dtype == "int8" and np.array_equal(layer.kernel_scale.numpy(), scale)
    error = np.abs(layer(x).numpy() - (x @ kernel + bias))
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
    float_2d = [v.path for v in model.weights if v.dtype == "float32" and len(v.shape) == 2]
    assert all(("wte" in p or "wpe" in p) for p in float_2d)  # no float projection weight is left
    assert not model.trainable_weights


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_close_to_float(family: str) -> None:
    """The per-projection errors compound through the layers: on these tiny perturbed models the int8 logits
    stay within 3% of the largest float logit (as in the PyTorch test) and pick the same token almost everywhere."""
    reference, model = float_and_int8(family)
    ids = random_ids((2, 8))
    expected, got = reference(ids).logits.numpy(), model(ids).logits.numpy()
    deviation = np.abs(got - expected).max()
    assert 0 < deviation <= 0.03 * np.abs(expected).max()
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.9


def test_generate_matches_forward() -> None:
    _, model = float_and_int8("gpt2")
    out = np.asarray(model.generate(random_ids((1, 5)), max_new_tokens=6, do_sample=False))
    assert out.shape == (1, 11)
    for t in range(5, 11):  # each greedy token is the argmax of a full forward of the int8 model
        assert out[0, t] == model(out[:, :t]).logits.numpy()[0, -1].argmax()


def test_save_and_load_round_trip(tmp_path) -> None:
    _, model = float_and_int8("gpt2")
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
    np.testing.assert_array_equal(loaded(ids).logits.numpy(), model(ids).logits.numpy())
    with pytest.raises(ValueError, match="quantization_config.*from_quantized"):
        type(model).from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path / "h5", safe_serialization=False)
    float_dir = tmp_path / "float"
    float_and_int8("gpt2")[0].save_pretrained(float_dir)
    with pytest.raises(ValueError, match="no quantization_config"):
        type(model).from_quantized(float_dir)


def test_errors() -> None:
    model = getattr(tft, LM_CLASSES["gpt2"])(tiny_config("gpt2"))
    with pytest.raises(ValueError, match="unsupported mode 'int4'"):
        model.quantize("int4")
    assert model.quantize("int8") is model
    with pytest.raises(ValueError, match="already quantized"):
        model.quantize("int8")


# ------------------------------------------------------------------------- bfloat16 under XLA on CPU
def _half_precision_lm(family: str, width: int = 256):
    """A one-layer bfloat16 model whose weights dominate its activations (every weight >= width² elements)."""
    from twinformers.configuration import GPT2Config, GPTJConfig

    shape = dict(n_layer=1, n_embd=width, n_head=4, vocab_size=1000, n_positions=16)
    config = GPTJConfig(rotary_dim=16, **shape) if family == "gptj" else GPT2Config(**shape)
    model = getattr(tft, LM_CLASSES[family])(config, dtype="bfloat16")
    model.build()
    return model


def _unfused_buffers(hlo: str, min_elements: int) -> list[str]:
    """Instructions of an optimized HLO module that write a 2-D float32/bfloat16 buffer of at least
    `min_elements`, outside fused computations (a convert inside a fusion computes only what its fusion reads)."""
    import re

    fused = set(re.findall(r"calls=%([\w.\-]+)", hlo))
    found, computation = [], None
    for line in hlo.splitlines():
        if match := re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line):
            computation = match.group(1)
        elif computation not in fused and any(op in line for op in ("convert", "copy", "fusion", "transpose")):
            sizes = re.findall(r"= (?:f32|bf16)\[(\d+),(\d+)\]", line)
            found += [line.strip()[:160] for a, b in sizes if int(a) * int(b) >= min_elements]
    return found


@pytest.mark.parametrize("transpose_b", [False, True])
def test_bf16_one_row_matmul_equals_the_converted_matmul(transpose_b: bool) -> None:
    """One row (batch-1 decoding) under XLA takes the padded float32-accumulating path; its result is the float32
    product of the same bfloat16 values rounded once to bfloat16 (products are exact in float32; only the
    summation order can move a result by one bfloat16 step). Outside XLA, and for float32, it is `tf.matmul`."""
    import tensorflow as tf

    from twinformers.tf.ops import matmul_f32

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(1, 384)), tf.bfloat16)
    w = tf.constant(rng.normal(size=(640, 384) if transpose_b else (384, 640)), tf.bfloat16)
    out = tf.function(lambda x, w: matmul_f32(x, w, transpose_b), jit_compile=True)(x, w)
    exact = tf.matmul(tf.cast(x, tf.float32), tf.cast(w, tf.float32), transpose_b=transpose_b).numpy()
    assert out.dtype == tf.bfloat16 and out.shape == exact.shape
    step = np.abs(exact) * 2.0**-7  # one bfloat16 step (8 significant bits) at most
    assert (np.abs(tf.cast(out, tf.float32).numpy() - exact) <= step).all()
    eager = matmul_f32(x, w, transpose_b)
    assert np.array_equal(eager.numpy(), tf.matmul(x, w, transpose_b=transpose_b).numpy())
    x32, w32 = tf.cast(x, tf.float32), tf.cast(w, tf.float32)
    assert np.array_equal(matmul_f32(x32, w32, transpose_b).numpy(), tf.matmul(x32, w32, transpose_b=transpose_b))


@pytest.mark.parametrize("family", ["gpt2", "gptj"])
def test_bf16_generate_holds_no_float32_weight_copy(family: str) -> None:
    """`generate`'s XLA program keeps no float32 (or transposed) copy of a weight: XLA on CPU rewrote each
    bfloat16 matmul and token lookup into a float32 one and hoisted the weights' converts out of the decoding
    loop (3.2x the checkpoint). No buffer outside a fusion is as large as the smallest weight; the tokens are the
    greedy choices of the full forward."""
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
    hlo = program.experimental_get_compiler_ir(*args)(stage="optimized_hlo")
    assert _unfused_buffers(hlo, 256 * 256) == []
    for length in range(4, out.shape[1]):
        logits = np.asarray(model(out[:, :length]).logits[:, -1], np.float32)
        assert out[0, length] == int(np.argmax(logits)), length
