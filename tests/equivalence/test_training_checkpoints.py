"""What each training example writes loads in every other twin and computes the same logits there.

Each example runs once with tiny settings, on a different family, so every family's trained checkpoint
crosses backends: PyTorch loop → GPT-2 (and its sequence classifier), Keras fit → GPT-J, Flax/optax → GPT-Neo.
"""

from __future__ import annotations

import numpy as np
import pytest

for _module in ("torch", "tensorflow", "jax", "flax"):
    pytest.importorskip(_module)

from example_runs import assert_loss_decreased, run_example, validation_batch  # noqa: E402

from helpers import assert_close  # noqa: E402

RUNS = {  # example script, family, its causal-LM class
    "pt": ("train_causal_lm_pt.py", "gpt2", "GPT2LMHeadModel"),
    "keras": ("train_causal_lm_keras.py", "gptj", "GPTJForCausalLM"),
    "flax": ("train_causal_lm_flax.py", "gpt_neo", "GPTNeoForCausalLM"),
}
BACKENDS = ("pt", "tf", "flax")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, str]:
    """Output directory of each example's run (its loss must have fallen)."""
    outputs = {}
    for trainer, (script, family, _) in RUNS.items():
        output_dir = tmp_path_factory.mktemp(f"{trainer}_lm")
        assert_loss_decreased(run_example(script, output_dir, "--family", family, "--dropout", "0.1"))
        outputs[trainer] = str(output_dir)
    return outputs


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    input_ids = validation_batch()
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, -5:] = 0  # a right-padded row
    input_ids[1, -5:] = 256
    return input_ids, attention_mask


def _logits(backend: str, class_name: str, directory: str, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if backend == "pt":
        import torch

        import twinformers.pt as module

        model = getattr(module, class_name).from_pretrained(directory)
        with torch.no_grad():
            return model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    if backend == "tf":
        import twinformers.tf as module

        model = getattr(module, class_name).from_pretrained(directory)
        return np.asarray(model(input_ids=input_ids.astype(np.int32), attention_mask=mask.astype(np.int32)).logits)
    import twinformers.flax as module

    model = getattr(module, class_name).from_pretrained(directory)
    return np.asarray(model(input_ids, attention_mask=mask).logits)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", sorted(RUNS))
def test_trained_causal_lm_loads_in_every_twin(trained, trainer):
    _, family, class_name = RUNS[trainer]
    input_ids, mask = _inputs()
    logits = {backend: _logits(backend, class_name, trained[trainer], input_ids, mask) for backend in BACKENDS}
    assert logits["pt"].shape == (*input_ids.shape, 257)
    for backend in ("tf", "flax"):
        assert_close(logits[backend], logits["pt"], name=f"{trainer}-trained {family} logits in {backend}",
                     where=mask.astype(bool))


@pytest.mark.slow
def test_fine_tuned_classifier_loads_in_every_twin(trained, tmp_path):
    assert_loss_decreased(run_example(
        "train_sequence_classification_pt.py", tmp_path, "--model", trained["pt"], "--max-steps", "20",
        "--eval-every", "10", "--batch-size", "16"), fraction=0.8)
    input_ids, mask = _inputs()
    # Pooling picks each row's last non-padding token (pad_token_id=256 from the saved config): the padded row
    # is classified from its 27th token in every twin.
    logits = {b: _logits(b, "GPT2ForSequenceClassification", str(tmp_path), input_ids, mask) for b in BACKENDS}
    assert logits["pt"].shape == (3, 2)
    for backend in ("tf", "flax"):
        assert_close(logits[backend], logits["pt"], name=f"classifier logits in {backend}")
