"""The Flax/optax training example, run with tiny settings: the loss falls, the checkpoint loads, and a resumed
run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("jax")

from example_runs import assert_loss_decreased, run_example, validation_batch  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from twinformers.flax import AutoModelForCausalLM  # noqa: E402

# --grad-accum 2 and dropout on: the resumed run must reproduce the optax.MultiSteps state and the dropout keys.
LM_FLAGS = ("--family", "gptj", "--grad-accum", "2", "--save-every", "6", "--dropout", "0.1")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("flax_lm")
    return output_dir, run_example("train_causal_lm_flax.py", output_dir, *LM_FLAGS)


@pytest.mark.slow
def test_causal_lm_loss_decreases_and_checkpoint_loads(lm_run):
    output_dir, log = lm_run
    assert_loss_decreased(log)
    assert [step for step, _ in log["train"]] == list(range(1, 13))
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    assert type(model).__name__ == "GPTJForCausalLM" and model.config.vocab_size == 257
    input_ids = validation_batch()
    loss = float(model(input_ids, labels=input_ids).loss)
    assert np.isfinite(loss) and loss < log["eval"][0][1]  # the trained weights, not a fresh init


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(lm_run, tmp_path):
    output_dir, _ = lm_run
    shutil.copytree(output_dir / "checkpoint-6", tmp_path / "checkpoint-6")  # as if stopped after step 6
    log = run_example("train_causal_lm_flax.py", tmp_path, *LM_FLAGS, "--resume")
    assert log["train"][0][0] == 7
    expected = load_file(os.path.join(output_dir, "model.safetensors"))
    actual = load_file(os.path.join(tmp_path, "model.safetensors"))
    assert actual.keys() == expected.keys()
    for key in expected:  # the same compiled steps on the same inputs: bit-identical
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
