"""`save_pretrained` is atomic for the directory: a SIGKILL at any moment leaves the old checkpoint or the new one."""

import pytest

torch = pytest.importorskip("torch")

import twinformers.pt as pt  # noqa: E402
from helpers import tiny_config  # noqa: E402
from killing import kill_during_save  # noqa: E402
from twinformers.errors import InputError  # noqa: E402

# The new checkpoint has another vocabulary size (as after `resize_token_embeddings`): old config + new weights,
# or the reverse, would not load.
CHILD = """
import torch
import twinformers.pt as pt
from helpers import tiny_config
torch.manual_seed(1)
model = pt.GPT2LMHeadModel(tiny_config("gpt2", vocab_size=108))
model.save_pretrained({new!r}, safe_serialization={safe})
arm()
model.save_pretrained({target!r}, safe_serialization={safe}, max_shard_size="20KB")
"""


def test_save_pretrained_killed_at_any_moment_leaves_old_or_new(tmp_path):
    # pytorch_model.bin shards (tied keys added to the index afterwards); TF and Flax test the other formats.
    safe = False
    old, new, target = str(tmp_path / "old"), str(tmp_path / "new"), str(tmp_path / "model")
    torch.manual_seed(0)
    pt.GPT2LMHeadModel(tiny_config("gpt2")).save_pretrained(old, safe_serialization=safe)
    outcomes = kill_during_save(CHILD.format(new=new, target=target, safe=safe), target, old, new)
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes
    pt.GPT2LMHeadModel.from_pretrained(target)  # and it loads


@pytest.mark.parametrize("size", ["-1GB", "0", "lots", 0, -5, 1.5, True])
def test_bad_max_shard_size_touches_nothing(tmp_path, size):
    model = pt.GPT2LMHeadModel(tiny_config("gpt2"))
    with pytest.raises(InputError, match="max_shard_size"):
        model.save_pretrained(tmp_path / "model", max_shard_size=size)
    assert not (tmp_path / "model").exists() and list(tmp_path.iterdir()) == []


def test_save_into_a_folder_keeps_unrelated_files(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    pt.GPT2LMHeadModel(tiny_config("gpt2")).save_pretrained(tmp_path / "x")
    target = tmp_path / "x"
    (target / "vocab.json").write_text("{}")
    (target / "pytorch_model.bin").write_bytes(b"other format: kept, as Hugging Face keeps it")
    pt.GPT2LMHeadModel(tiny_config("gpt2")).save_pretrained(target, max_shard_size="20KB")
    names = sorted(p.name for p in target.iterdir())
    assert "vocab.json" in names and "pytorch_model.bin" in names and "model.safetensors" not in names
    assert "model.safetensors.index.json" in names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.json", "x"]  # no staging left behind
