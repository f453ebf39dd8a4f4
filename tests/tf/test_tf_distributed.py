"""`model.fit` (own loss) inside `tf.distribute.MirroredStrategy` over 2 logical CPU devices == one device.

Logical devices must be set before TensorFlow initializes, so the training runs in a subprocess
(tf_distributed_worker.py) and this module only compares what it wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from helpers import assert_close  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "tf_distributed_worker.py")
# The all-reduce adds the replicas' gradients in another order than one device's backward pass: ~1e-7 on fp32,
# inside the fp32 equivalence bound.


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, np.ndarray]:
    out_dir = tmp_path_factory.mktemp("tf_distribute")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    subprocess.run([sys.executable, WORKER, str(out_dir)], env=env, check=True, timeout=600)
    with np.load(out_dir / "results.npz") as data:
        return dict(data)


def _weights(results: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    count = sum(1 for key in results if key.startswith(f"{prefix}_") and key[len(prefix) + 1:].isdigit())
    return [results[f"{prefix}_{i}"] for i in range(count)]


@pytest.mark.slow
def test_mirrored_loss_trajectory_equals_one_device(results):
    single, mirrored = results["single_loss"], results["mirrored_loss"]
    assert len(single) == 3 and np.all(np.isfinite(single))
    # Replicas report the global-batch mean loss, not a per-replica sum.
    assert_close(mirrored, single, name="loss per step")


@pytest.mark.slow
def test_mirrored_weights_equal_one_device(results):
    initial, single, mirrored = (_weights(results, p) for p in ("initial", "single", "mirrored"))
    assert len(initial) == len(single) == len(mirrored) > 0
    moved = max(float(np.abs(s - i).max()) for s, i in zip(single, initial))
    assert moved > 1e-2, "training barely moved the weights; the comparison would prove nothing"
    # Summed instead of averaged replica gradients would double every step here.
    assert_close(mirrored, single, name="weights after fit")
