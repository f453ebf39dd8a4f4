"""The PyTorch training examples, run with tiny settings: the loss falls, the checkpoint loads, a resumed run
ends exactly where an uninterrupted one does, and the classifier fine-tunes from the LM checkpoint."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from example_runs import assert_loss_decreased, run_example, validation_batch  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from twinformers.pt import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

# --grad-accum 2 and dropout on: the resumed run must reproduce the micro-batch order and the dropout masks.
LM_FLAGS = ("--family", "gpt_neo", "--grad-accum", "2", "--save-every", "6", "--dropout", "0.1")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("pt_lm")
    return output_dir, run_example("train_causal_lm_pt.py", output_dir, *LM_FLAGS)


@pytest.mark.slow
def test_causal_lm_loss_decreases_and_checkpoint_loads(lm_run):
    output_dir, log = lm_run
    assert_loss_decreased(log)
    assert [step for step, _ in log["train"]] == list(range(1, 13))
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    assert type(model).__name__ == "GPTNeoForCausalLM" and model.config.vocab_size == 257
    input_ids = torch.from_numpy(validation_batch())
    with torch.no_grad():
        loss = model(input_ids=input_ids, labels=input_ids).loss.item()
    assert np.isfinite(loss) and loss < log["eval"][0][1]  # the trained weights, not a fresh init


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(lm_run, tmp_path):
    output_dir, _ = lm_run
    shutil.copytree(output_dir / "checkpoint-6", tmp_path / "checkpoint-6")  # as if stopped after step 6
    log = run_example("train_causal_lm_pt.py", tmp_path, *LM_FLAGS, "--resume")
    assert log["train"][0][0] == 7
    expected = load_file(os.path.join(output_dir, "model.safetensors"))
    actual = load_file(os.path.join(tmp_path, "model.safetensors"))
    assert actual.keys() == expected.keys()
    for key in expected:  # same ops in the same order: bit-identical
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_resume_without_checkpoint_fails(tmp_path):
    with pytest.raises(AssertionError, match="no checkpoint-<step> directory"):
        run_example("train_causal_lm_pt.py", tmp_path, "--resume")


@pytest.mark.slow
def test_sequence_classification_fine_tunes_from_lm_checkpoint(lm_run, tmp_path):
    lm_dir, _ = lm_run
    log = run_example("train_sequence_classification_pt.py", tmp_path, "--model", str(lm_dir), "--max-steps", "20",
                      "--eval-every", "10", "--batch-size", "16", "--eval-batches", "4")
    assert_loss_decreased(log, fraction=0.8)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(model).__name__ == "GPTNeoForSequenceClassification"
    assert model.config.num_labels == 2 and model.config.pad_token_id == 256
