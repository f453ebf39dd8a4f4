"""`save_pretrained` is atomic for the directory: a SIGKILL at any moment leaves the old checkpoint or the new one."""

import pytest

pytest.importorskip("flax")

import twinformers.flax as fx  # noqa: E402
from helpers import tiny_config  # noqa: E402
from killing import kill_during_save  # noqa: E402
from twinformers.errors import InputError  # noqa: E402

# The new checkpoint has another vocabulary size: old config + new weights, or the reverse, would not load.
CHILD = """
import twinformers.flax as fx
from helpers import tiny_config
model = fx.GPT2LMHeadModel(tiny_config("gpt2", vocab_size=108), seed=1)
model.save_pretrained({new!r})
arm()
model.save_pretrained({target!r}, max_shard_size="20KB")
"""


def test_save_pretrained_killed_at_any_moment_leaves_old_or_new(tmp_path):
    # model.safetensors shards (the default format); PyTorch and TF test the others.
    old, new, target = str(tmp_path / "old"), str(tmp_path / "new"), str(tmp_path / "model")
    fx.GPT2LMHeadModel(tiny_config("gpt2")).save_pretrained(old)
    outcomes = kill_during_save(CHILD.format(new=new, target=target), target, old, new)
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes
    fx.GPT2LMHeadModel.from_pretrained(target)  # and it loads


@pytest.mark.parametrize("size", ["-1GB", "lots", 0])
def test_bad_max_shard_size_touches_nothing(tmp_path, size):
    model = fx.GPT2LMHeadModel(tiny_config("gpt2"))
    with pytest.raises(InputError, match="max_shard_size"):
        model.save_pretrained(tmp_path / "model", max_shard_size=size)
    assert list(tmp_path.iterdir()) == []
