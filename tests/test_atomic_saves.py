"""Every writer goes through `staged_directory`: a SIGKILL at any moment leaves the complete previous directory or
the complete new one, unrelated files survive, and a bad argument touches nothing. (Each backend's model
`save_pretrained` is killed in tests/pt, tests/tf and tests/flax.)"""

import os
import signal

import pytest

from killing import run_child
from twinformers.checkpoints.files import staged_directory
from twinformers.configuration import GPT2Config
from twinformers.demo.embedded import embedded_model_path
from twinformers.errors import InputError
from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast

TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.json",
                   "added_tokens.json")


def contents(directory) -> dict[str, bytes]:
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def kill_at_every_step(body: str, target: str, reset) -> list[dict[str, bytes]]:
    """Run `body` killed at each of its file-system steps in turn (then unkilled); the directory after each."""
    reset()
    done = run_child(body, 0)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = int(done.stdout.split("STEPS")[-1])
    finished = contents(target)
    states = []
    for kill_at in range(1, steps + 1):
        reset()
        result = run_child(body, kill_at)
        assert result.returncode == -signal.SIGKILL, (kill_at, result.stderr[-3000:])
        states.append(contents(target))
    return [*states, finished]


def test_staged_directory_killed_at_every_step_leaves_old_or_new(tmp_path):
    target = str(tmp_path / "out")

    def reset():
        os.makedirs(target, exist_ok=True)
        for name in os.listdir(target):
            os.remove(os.path.join(target, name))
        for name in ("a", "b", "c"):
            with open(os.path.join(target, name), "w") as f:
                f.write("old")

    body = f"""
from twinformers.checkpoints.files import atomic_write_text, staged_directory
arm()
with staged_directory({target!r}) as staging:
    for name in ("a", "b", "c"):
        atomic_write_text(os.path.join(staging, name), "new")
"""
    states = kill_at_every_step(body, target, reset)
    old, new = dict.fromkeys(["a", "b", "c"], b"old"), dict.fromkeys(["a", "b", "c"], b"new")
    assert all(state in (old, new) for state in states), states
    assert states[0] == old and states[-1] == new


def test_tokenizer_save_pretrained_killed_at_every_step_leaves_old_or_new(tmp_path):
    target = str(tmp_path / "tok")
    old_tokenizer = GPT2TokenizerFast.from_pretrained(embedded_model_path())

    def reset():
        if os.path.isdir(target):
            for name in os.listdir(target):
                os.remove(os.path.join(target, name))
        old_tokenizer.save_pretrained(target)
        with open(os.path.join(target, "notes.txt"), "w") as f:
            f.write("unrelated")

    body = f"""
from twinformers.demo.embedded import embedded_model_path
from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast
tokenizer = GPT2TokenizerFast.from_pretrained(embedded_model_path())
tokenizer.add_tokens(["<new-token>"])
tokenizer.model_max_length = 77
arm()
tokenizer.save_pretrained({target!r})
"""
    reset()
    old = contents(target)
    states = kill_at_every_step(body, target, reset)
    new = states[-1]
    assert new != old and "added_tokens.json" in new and new["notes.txt"] == b"unrelated"
    assert all(state in (old, new) for state in states), [sorted(s) for s in states]
    assert states[0] == old
    assert GPT2TokenizerFast.from_pretrained(target).convert_tokens_to_ids("<new-token>") == len(old_tokenizer)


def test_staged_directory_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(target, keep=True) as staging:
        open(os.path.join(staging, "new.txt"), "w").close()
        raise RuntimeError("interrupted")
    assert os.listdir(target) == ["keep.txt"]
    assert os.listdir(tmp_path) == ["out"]  # the staging directory is gone


def test_staged_directory_keep_predicate_and_modes(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("k")
    (target / "drop.txt").write_text("d")
    (target / "sub").mkdir()
    (target / "sub" / "nested.txt").write_text("n")
    with staged_directory(target, keep=lambda name: name != "drop.txt") as staging:
        with open(os.path.join(staging, "new.txt"), "w") as f:
            f.write("new")
    assert sorted(os.listdir(target)) == ["keep.txt", "new.txt", "sub"]
    assert (target / "sub" / "nested.txt").read_text() == "n"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target / "new.txt").st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_saving_onto_a_file_is_refused_before_writing(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(InputError, match="save_directory .* is a file"):
        GPT2TokenizerFast.from_pretrained(embedded_model_path()).save_pretrained(path)
    with pytest.raises(ValueError, match="is a file"):
        GPT2Config().save_pretrained(path)
    assert path.read_text() == "x" and os.listdir(tmp_path) == ["file"]
