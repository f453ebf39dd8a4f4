"""`prepare_tf_dataset`: tokenized examples → a shuffled, padded, batched `tf.data.Dataset` for Keras `fit`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["prepare_tf_dataset"]

# Columns padded with the ignore index rather than the pad id, so padding never counts in a loss.
_LABEL_COLUMNS = ("labels",)


def prepare_tf_dataset(
    examples: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    batch_size: int = 8,
    shuffle: bool = True,
    pad_token_id: int = 0,
    label_pad_id: int = -100,
    labels_from_input_ids: bool = False,
    drop_remainder: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Turn tokenized examples into a `tf.data.Dataset` of padded batches, ready for `model.fit`.

    Every batch is a dict of int32 tensors padded on the right to its longest row: `input_ids` with
    `pad_token_id`, `attention_mask` (built from the lengths when absent) and other per-token columns with 0,
    `labels` with `label_pad_id` (ignored by the losses). Per-example columns (a class label, QA
    `start_positions`/`end_positions`, `mc_labels`) become (B,) tensors. Right padding keeps GPT-2's absolute
    positions right for every real token.

    Args:
        examples: columns (`{"input_ids": [[...], ...], ...}`, as a tokenizer's batch output) or a list of
            per-example dicts. `input_ids` is required.
        batch_size: rows per batch. shuffle: reshuffle the examples every epoch (with `seed`).
        pad_token_id: fills `input_ids` padding (and is what sequence classification looks for).
        label_pad_id: fills `labels` padding (-100: ignored by every loss).
        labels_from_input_ids: add `labels` = `input_ids` for causal-LM training (the model shifts them).
        drop_remainder: drop the last batch if smaller than `batch_size`.
    Returns:
        A `tf.data.Dataset` yielding dicts of (B, T) / (B,) int32 tensors.
    Raises:
        ValueError: no `input_ids`, columns of different lengths, or a per-token column whose row lengths
            differ from `input_ids`'.
    """
    columns = _as_columns(examples)
    if "input_ids" not in columns:
        raise ValueError(f"prepare_tf_dataset needs an 'input_ids' column; got {sorted(columns)}")
    lengths = [len(row) for row in columns["input_ids"]]
    if "attention_mask" not in columns:
        columns["attention_mask"] = [[1] * n for n in lengths]
    if labels_from_input_ids:
        columns["labels"] = [list(row) for row in columns["input_ids"]]
    counts = {name: len(values) for name, values in columns.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"prepare_tf_dataset: columns have different numbers of examples: {counts}")

    tensors, padding_values = {}, {}
    for name, values in columns.items():
        if np.ndim(values[0]) == 0:  # one value per example
            tensors[name] = tf.constant(np.asarray(values, dtype=np.int32))
            continue
        if [len(row) for row in values] != lengths:
            raise ValueError(f"prepare_tf_dataset: column {name!r} has rows whose lengths differ from input_ids'")
        tensors[name] = tf.ragged.constant(values, dtype=tf.int32)
        padding_values[name] = pad_token_id if name == "input_ids" else label_pad_id if name in _LABEL_COLUMNS else 0

    def pad(batch: dict[str, tf.Tensor | tf.RaggedTensor]) -> dict[str, tf.Tensor]:
        # (B, ragged T) -> (B, T) padded to the batch's longest row
        return {name: value.to_tensor(padding_values[name]) if name in padding_values else value
                for name, value in batch.items()}

    dataset = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        dataset = dataset.shuffle(len(lengths), seed=seed, reshuffle_each_iteration=True)
    return dataset.ragged_batch(batch_size, drop_remainder=drop_remainder).map(pad)


def _as_columns(examples: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> dict[str, list]:
    if isinstance(examples, Mapping):
        return {name: list(values) for name, values in examples.items()}
    if not examples:
        raise ValueError("prepare_tf_dataset got no examples")
    names = list(examples[0])
    return {name: [example[name] for example in examples] for name in names}
