"""`from_pretrained` holds the params once: peak memory of a load in a fresh process, bounded by the params'
bytes, the largest checkpoint tensor (read one at a time) and a fixed slack (see `helpers.LOAD_MEMORY_SLACK`)."""

import jax.numpy as jnp
import numpy as np
import pytest

import twinformers.flax as fx
from helpers import LOAD_MEMORY_SLACK, MEMORY_TEST_CONFIG, peak_rss_added, tiny_config, write_random_gpt2
from twinformers.checkpoints.canonical import open_checkpoint

# Warm-up: JAX's CPU client and one model construction (NNX graph and shape tracing, first-use imports), so the
# measurement sees loading, not what any first model costs.
SETUP = """import jax.numpy as jnp
from twinformers.configuration import GPT2Config
from twinformers.flax import GPT2LMHeadModel
jnp.zeros(1).block_until_ready()
GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=8), _do_init=False)"""


@pytest.mark.parametrize("param_dtype, itemsize", [("float32", 4), ("bfloat16", 2)])
def test_load_peak_is_the_params_plus_one_tensor(tmp_path, param_dtype, itemsize):
    """A float32 file loaded as is, and cast to bfloat16 on load (no float32 copy of the whole model, as
    loading and then `to_bf16` needs)."""
    sizes = write_random_gpt2(str(tmp_path), **MEMORY_TEST_CONFIG)
    body = f"GPT2LMHeadModel.from_pretrained({str(tmp_path)!r}, param_dtype={param_dtype!r})"
    added = peak_rss_added(SETUP, body)
    params_bytes = sizes["total"] // 4 * itemsize
    assert added <= params_bytes + sizes["largest"] + LOAD_MEMORY_SLACK, (added, sizes)


def test_param_dtype_casts_floating_params_only(tmp_path):
    model = fx.GPT2LMHeadModel(tiny_config("gpt2"))
    model.save_pretrained(tmp_path)
    loaded = fx.GPT2LMHeadModel.from_pretrained(tmp_path, param_dtype="bfloat16")
    params = loaded.params["transformer"]
    assert params["wte"]["embedding"].dtype == jnp.bfloat16 and params["h"]["0"]["attn"]["c_attn"]["kernel"].dtype \
        == jnp.bfloat16
    expected = open_checkpoint(tmp_path)["transformer.wte.weight"].astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(params["wte"]["embedding"]), expected)


def test_bfloat16_forward_holds_no_float32_copy_of_the_model(tmp_path):
    """XLA on CPU converted every bfloat16 weight to float32 for its dots, all at once: the first bfloat16
    forward held a float32 copy of the whole model (`ops.dot_general_f32` keeps the dots in bfloat16)."""
    sizes = write_random_gpt2(str(tmp_path), **MEMORY_TEST_CONFIG)
    setup = SETUP + """
import numpy as np
tiny = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=8), dtype=jnp.bfloat16)
tiny.params = tiny.to_bf16(tiny.params)
np.asarray(tiny(np.ones((1, 8), np.int32)).logits)  # the first compilation's one-time costs"""
    body = f"""model = GPT2LMHeadModel.from_pretrained({str(tmp_path)!r}, dtype=jnp.bfloat16, param_dtype="bfloat16")
np.asarray(model(np.arange(1, 9, dtype=np.int32)[None]).logits)"""
    added = peak_rss_added(setup, body)
    params_bytes = sizes["total"] // 2
    assert added <= params_bytes + sizes["largest"] + LOAD_MEMORY_SLACK, (added, sizes)


@pytest.mark.parametrize("to, fmt, reader", [("pt", "bin", "torch"), ("tf", "h5", "h5py")])
def test_loads_without_importing_the_writers_library(tmp_path, to, fmt, reader):
    """A `pytorch_model.bin` of plain tensors is read without torch (importing it alone is ~230 MB), a
    `tf_model.h5` in h5py's default layout (every Hugging Face file) without h5py (importing it and opening the
    file with it kept ~13 MB resident)."""
    pytest.importorskip(reader)  # to write the file
    from twinformers.conversion.converter import convert

    sizes = write_random_gpt2(str(tmp_path / "source"), **MEMORY_TEST_CONFIG)
    convert(str(tmp_path / "source"), str(tmp_path / fmt), to=to, fmt=fmt, max_shard_size="5GB", progress=False)
    body = f"""import sys
GPT2LMHeadModel.from_pretrained({str(tmp_path / fmt)!r})
assert {reader!r} not in sys.modules"""
    added = peak_rss_added(SETUP, body)
    assert added <= sizes["total"] + sizes["largest"] + LOAD_MEMORY_SLACK, (added, sizes)
