"""`save_pretrained` is atomic for the directory: a SIGKILL at any moment leaves the old checkpoint or the new one."""

import pytest

pytest.importorskip("tensorflow")

import twinformers.tf as tft  # noqa: E402
from helpers import tiny_config  # noqa: E402
from killing import kill_during_save  # noqa: E402
from twinformers.errors import InputError  # noqa: E402

# The new checkpoint has another vocabulary size: old config + new weights, or the reverse, would not load.
CHILD = """
import keras
import twinformers.tf as tft
from helpers import tiny_config
keras.utils.set_random_seed(1)
model = tft.GPT2LMHeadModel(tiny_config("gpt2", vocab_size=108))
model.build()
model.save_pretrained({new!r}, safe_serialization=False)
arm()
model.save_pretrained({target!r}, safe_serialization=False, max_shard_size="20KB")
"""


def test_save_pretrained_killed_at_any_moment_leaves_old_or_new(tmp_path):
    # tf_model.h5 shards; PyTorch and Flax test the other formats.
    old, new, target = str(tmp_path / "old"), str(tmp_path / "new"), str(tmp_path / "model")
    model = tft.GPT2LMHeadModel(tiny_config("gpt2"))
    model.build()
    model.save_pretrained(old, safe_serialization=False)
    outcomes = kill_during_save(CHILD.format(new=new, target=target), target, old, new)
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes
    tft.GPT2LMHeadModel.from_pretrained(target)  # and it loads


@pytest.mark.parametrize("size", ["-1GB", "lots", 0])
def test_bad_max_shard_size_touches_nothing(tmp_path, size):
    model = tft.GPT2LMHeadModel(tiny_config("gpt2"))
    model.build()
    with pytest.raises(InputError, match="max_shard_size"):
        model.save_pretrained(tmp_path / "model", max_shard_size=size)
    assert list(tmp_path.iterdir()) == []
