"""Run by tests/tf/test_tf_distributed.py in a subprocess: TensorFlow's logical devices must be configured before
TensorFlow initializes, so this cannot share a process with other tests.

Trains the tiny GPT-2 LM with `model.fit` (own loss, SGD) for a few steps on one device and inside a
`MirroredStrategy` over 2 logical CPU devices, from the same weights on the same batches, and writes both loss
trajectories and final weights to `<out>/results.npz`.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for helpers
import twinformers.tf as ttf  # noqa: E402
from helpers import tiny_config  # noqa: E402

GLOBAL_BATCH, SEQ, STEPS, LEARNING_RATE = 4, 7, 3, 0.5


def initial_weights() -> list[np.ndarray]:
    """Random values for every variable (LayerNorm gammas around 1): default init would hide a bug."""
    model = ttf.GPT2LMHeadModel(tiny_config("gpt2"))
    model.build()
    rng = np.random.default_rng(0)
    weights = []
    for variable in model.weights:
        noise = rng.normal(size=tuple(variable.shape)).astype(np.float32) * 0.2
        weights.append(1.0 + noise / 2 if variable.path.endswith("gamma") else noise)
    return weights


def train(strategy: tf.distribute.Strategy, weights: list[np.ndarray]) -> tuple[list[float], list[np.ndarray]]:
    input_ids = np.random.default_rng(1).integers(1, 97, size=(GLOBAL_BATCH * STEPS, SEQ)).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices({"input_ids": input_ids, "labels": input_ids}).batch(GLOBAL_BATCH)
    with strategy.scope():
        model = ttf.GPT2LMHeadModel(tiny_config("gpt2"))
        model.build()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))  # own loss
    # One step per epoch, so each epoch's logged loss is that step's loss.
    history = model.fit(dataset, epochs=STEPS, steps_per_epoch=1, shuffle=False, verbose=0)
    return history.history["loss"], [np.asarray(w) for w in model.get_weights()]


def main(out_dir: str) -> None:
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2, devices
    weights = initial_weights()
    single_loss, single_weights = train(tf.distribute.OneDeviceStrategy(devices[0]), weights)
    mirrored = tf.distribute.MirroredStrategy(devices)
    assert mirrored.num_replicas_in_sync == 2
    mirrored_loss, mirrored_weights = train(mirrored, weights)
    np.savez(
        os.path.join(out_dir, "results.npz"),
        single_loss=np.asarray(single_loss), mirrored_loss=np.asarray(mirrored_loss),
        **{f"initial_{i}": w for i, w in enumerate(weights)},
        **{f"single_{i}": w for i, w in enumerate(single_weights)},
        **{f"mirrored_{i}": w for i, w in enumerate(mirrored_weights)},
    )


if __name__ == "__main__":
    main(sys.argv[1])
