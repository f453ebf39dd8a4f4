"""`from_pretrained` holds the model once: peak memory of a load in a fresh process, bounded by the model's
bytes, the largest checkpoint tensor (read one at a time) and a fixed slack (see `helpers.LOAD_MEMORY_SLACK`)."""

import pytest

from helpers import LOAD_MEMORY_SLACK, MEMORY_TEST_CONFIG, peak_rss_added, write_random_gpt2

SETUP = "import torch\nfrom twinformers.pt import GPT2LMHeadModel\ntorch.zeros(1)"


@pytest.mark.parametrize("torch_dtype, itemsize", [("float32", 4), ("bfloat16", 2)])
def test_load_peak_is_the_model_plus_one_tensor(tmp_path, torch_dtype, itemsize):
    """A float32 file loaded as float32, and cast to bfloat16 on load: no resident memory map, no float32 copy
    of the whole model."""
    sizes = write_random_gpt2(str(tmp_path), **MEMORY_TEST_CONFIG)
    added = peak_rss_added(SETUP, f"GPT2LMHeadModel.from_pretrained({str(tmp_path)!r}, torch_dtype={torch_dtype!r})")
    model_bytes = sizes["total"] // 4 * itemsize
    assert added <= model_bytes + sizes["largest"] + LOAD_MEMORY_SLACK, (added, sizes)
