"""The Keras `model.fit` training example, run with tiny settings: the loss falls, the callbacks write a
Hugging Face checkpoint per epoch, and the final checkpoint loads."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from example_runs import assert_loss_decreased, run_example, validation_batch  # noqa: E402


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("keras_lm")
    return output_dir, run_example("train_causal_lm_keras.py", output_dir, "--grad-accum", "2", "--verbose", "2")


@pytest.mark.slow
def test_fit_loss_decreases_and_checkpoints_load(lm_run):
    import twinformers.tf as ttf

    output_dir, log = lm_run
    assert_loss_decreased(log)
    assert [step for step, _ in log["eval"]] == [0, 6, 12]
    for checkpoint in ("checkpoint-6", "checkpoint-12"):  # the SavePretrained callback, once per epoch
        assert os.path.exists(output_dir / checkpoint / "model.safetensors")
    assert not os.path.exists(output_dir / "backup")  # BackupAndRestore cleans up after a finished run
    model = ttf.GPT2LMHeadModel.from_pretrained(output_dir)
    input_ids = validation_batch().astype(np.int32)
    loss = float(model(input_ids=input_ids, labels=input_ids).loss)
    assert np.isfinite(loss) and loss < log["eval"][0][1]  # the trained weights, not a fresh init
