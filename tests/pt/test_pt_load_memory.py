"""`from_pretrained` holds the model once: peak memory of a load in a fresh process, bounded by the model's
bytes, the largest checkpoint tensor (read one at a time) and a fixed slack (see `helpers.LOAD_MEMORY_SLACK`)."""

import pytest

from helpers import LOAD_MEMORY_SLACK, MEMORY_TEST_CONFIG, peak_rss_added, write_random_gpt2
from twinformers.conversion.converter import convert

SETUP = "import torch\nfrom twinformers.pt import GPT2LMHeadModel\ntorch.zeros(1)"


@pytest.mark.parametrize("torch_dtype, itemsize", [("float32", 4), ("bfloat16", 2)])
@pytest.mark.parametrize("fmt", ["safetensors", "bin", "h5"])
def test_load_peak_is_the_model_plus_one_tensor(tmp_path, fmt, torch_dtype, itemsize):
    """A float32 file loaded as float32, and cast to bfloat16 on load: no resident memory map (`.bin` and
    `tf_model.h5` are read with plain file reads too), no float32 copy of the whole model, and no h5py (importing
    it and opening the file with it kept ~15 MB resident)."""
    sizes = write_random_gpt2(str(tmp_path / "st"), **MEMORY_TEST_CONFIG)
    path = tmp_path / "st"
    if fmt != "safetensors":
        path = tmp_path / fmt
        convert(tmp_path / "st", path, to="pt" if fmt == "bin" else "tf", fmt=fmt, progress=False)
    body = f"""GPT2LMHeadModel.from_pretrained({str(path)!r}, torch_dtype={torch_dtype!r})
assert "h5py" not in sys.modules"""
    added = peak_rss_added(SETUP, body)
    model_bytes = sizes["total"] // 4 * itemsize
    assert added <= model_bytes + sizes["largest"] + LOAD_MEMORY_SLACK, (added, sizes)
