"""`from_pretrained` holds the model once: peak memory of a load in a fresh process, bounded by the model's
bytes, the largest checkpoint tensor (read one at a time) and a fixed slack (see `helpers.LOAD_MEMORY_SLACK`).
Building the variables randomly and then assigning the checkpoint held about twice the model."""

import numpy as np
import pytest

import twinformers.tf as tft
from helpers import LOAD_MEMORY_SLACK, MEMORY_TEST_CONFIG, peak_rss_added, tiny_config, write_random_gpt2
from twinformers.checkpoints.canonical import open_checkpoint
from twinformers.conversion.converter import convert

SETUP = "import tensorflow as tf\nfrom twinformers.tf import GPT2LMHeadModel\ntf.zeros(1)"


@pytest.mark.parametrize("dtype, itemsize", [("float32", 4), ("bfloat16", 2)])
@pytest.mark.parametrize("fmt", ["safetensors", "h5"])
def test_load_peak_is_the_model_plus_one_tensor(tmp_path, fmt, dtype, itemsize):
    """`tf_model.h5` is read with plain file reads too (Keras imports h5py anyway; the file is not opened with it)."""
    sizes = write_random_gpt2(str(tmp_path / "st"), **MEMORY_TEST_CONFIG)
    path = tmp_path / "st"
    if fmt == "h5":
        path = tmp_path / "h5"
        convert(tmp_path / "st", path, to="tf", fmt="h5", progress=False)
    added = peak_rss_added(SETUP, f"GPT2LMHeadModel.from_pretrained({str(path)!r}, dtype={dtype!r})")
    model_bytes = sizes["total"] // 4 * itemsize
    assert added <= model_bytes + sizes["largest"] + LOAD_MEMORY_SLACK, (added, sizes)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_reaches_every_variable_and_casts_the_checkpoint(tmp_path, dtype):
    """`dtype=` is the policy of the model and of every sublayer; values are the checkpoint's, rounded."""
    model = tft.GPT2LMHeadModel(tiny_config("gpt2"))
    model.save_pretrained(tmp_path)
    loaded = tft.GPT2LMHeadModel.from_pretrained(tmp_path, dtype=dtype)
    assert {v.dtype for v in loaded.weights} == {dtype}
    wte = next(v for v in loaded.weights if "wte" in v.path).numpy()
    np.testing.assert_array_equal(wte, open_checkpoint(tmp_path)["transformer.wte.weight"].astype(wte.dtype))
    logits = loaded(np.arange(1, 8)[None]).logits
    assert logits.dtype == dtype


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_transposed_kernels_read_by_row_blocks_hold_the_checkpoint(tmp_path, monkeypatch, dtype):
    """Big Linear weights are transposed into the kernel from blocks of rows (here blocks of 3 rows); the
    variables then own that memory and stay writable."""
    import twinformers.tf.modeling_utils as modeling_utils

    model = tft.GPTJForCausalLM(tiny_config("gptj"))
    model.save_pretrained(tmp_path)
    monkeypatch.setattr(modeling_utils, "STREAM_BLOCK_BYTES", 3 * 32 * 4)
    loaded = tft.GPTJForCausalLM.from_pretrained(tmp_path, dtype=dtype)
    checkpoint = open_checkpoint(tmp_path)
    kernel = next(v for v in loaded.weights if v.path.endswith("lm_head/kernel"))
    expected = checkpoint["lm_head.weight"].T.astype(kernel.numpy().dtype)
    np.testing.assert_array_equal(kernel.numpy(), expected)
    q_proj = next(v for v in loaded.weights if v.path.endswith("h_._0/attn/q_proj/kernel"))
    q_weight = checkpoint["transformer.h.0.attn.q_proj.weight"]
    np.testing.assert_array_equal(q_proj.numpy(), q_weight.T.astype(expected.dtype))
    kernel.assign(np.zeros(kernel.shape, expected.dtype))
    assert not kernel.numpy().any()


@pytest.mark.parametrize("family, cls", [("gpt2", "GPT2LMHeadModel"), ("gptj", "GPTJForCausalLM"),
                                         ("gpt_neo", "GPTNeoForSequenceClassification")])
def test_a_model_built_with_a_dtype_gives_it_to_every_sublayer(family, cls):
    """`Model(config, dtype=...)` directly, not only through `from_pretrained`; the global policy is left as it was."""
    model = getattr(tft, cls)(tiny_config(family), dtype="bfloat16")
    model(np.arange(1, 8)[None])
    assert {v.dtype for v in model.weights} == {"bfloat16"}
    assert model.dtype_policy.name == "bfloat16"
    import keras

    assert keras.config.dtype_policy().name == "float32"


def test_eager_forward_does_not_start_xla():
    """An eager forward ran XLA's `dynamic_slice` for the causal rows, which started XLA's CPU JIT (~60 MB
    resident, 0.12x of GPT-2 124M on top of the loaded model); eagerly it is a `tf.slice` now."""
    setup = SETUP + """
from twinformers.configuration import GPT2Config
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=100, n_positions=64))
x = tf.ones((8, 64))
tf.nn.softmax(tf.matmul(x, x, transpose_b=True))  # the first kernels' one-time costs"""
    added = peak_rss_added(setup, "model(tf.ones((1, 8), tf.int32))")
    assert added <= 32 * 2**20, added
