"""Framework-free checks of model inputs, shared by the three backends: exact shapes, empty sequences, id ranges.

The backends call `check_model_inputs` with their call's arguments before running (PyTorch's and TensorFlow's
`__call__`, Flax's host-side `_check_values`), and `check_id_range` / `check_mask_shape` / `check_labels_shape` from
their ops. Shapes are tuples whose entries may be None (a dimension TensorFlow does not know while tracing): an
unknown dimension is never an error here. Every failure is an `InputError` naming the argument and the shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["static_shape", "check_model_inputs", "check_id_range", "check_mask_shape", "check_labels_shape",
           "check_sequence_labels_shape"]


def static_shape(value: Any) -> tuple[int | None, ...] | None:
    """The shape of an array or tensor of any framework as a tuple (None where unknown or symbolic), or None
    without one."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    if hasattr(shape, "as_list"):  # tf.TensorShape
        if shape.rank is None:
            return None
        shape = shape.as_list()
    # A symbolic size (jax.export's dimension variables, torch.export's SymInt) is unknown here, like TF's None.
    return tuple(int(size) if isinstance(size, (int, np.integer)) else None for size in shape)


def _same(shape: tuple, expected: tuple) -> bool:
    return len(shape) == len(expected) and all(a is None or b is None or a == b for a, b in zip(shape, expected))


def check_model_inputs(inputs: Mapping[str, Any]) -> None:
    """Shape checks of one model call, by argument name: `input_ids` / `inputs_embeds` not empty; `position_ids`
    and `token_type_ids` shaped like the ids (or (1, T), broadcast over the batch); `attention_mask` (B, S);
    `mc_token_ids` (B, C) and `mc_labels` (B,) for (B, C, T) inputs; `start_positions`, `end_positions` (B,)."""
    ids = inputs.get("input_ids")
    embeds = inputs.get("inputs_embeds")
    if ids is not None:
        tokens, name = static_shape(ids), "input_ids"
    elif embeds is not None:
        full = static_shape(embeds)
        tokens, name = (full[:-1] if full else None), "inputs_embeds"
    else:
        return
    if tokens is None or len(tokens) < 2:
        return  # the backends report a wrong rank with their own message
    if any(size == 0 for size in tokens):
        raise InputError(
            f"{name} is empty: shape {_show(static_shape(ids if ids is not None else embeds))}; every sequence needs "
            "at least one token (batch and sequence length must be >= 1)"
        )
    seq_len = tokens[-1]
    for key in ("position_ids", "token_type_ids"):
        shape = static_shape(inputs.get(key))
        if shape is not None and not (_same(shape, tokens) or _same(shape, (1, seq_len))):
            raise InputError(
                f"{key} has shape {_show(shape)}, expected {_show(tokens)} like {name} (or (1, {seq_len}))"
            )
    mask = static_shape(inputs.get("attention_mask"))
    if mask is not None and (len(mask) != len(tokens) or not _same(mask[:-1], tokens[:-1])):
        expected = ", ".join(["?" if size is None else str(size) for size in tokens[:-1]] + ["past + seq_len"])
        raise InputError(f"attention_mask has shape {_show(mask)}, expected ({expected}) like {name}")
    if len(tokens) == 3:
        expected = {"mc_token_ids": tokens[:2], "mc_labels": tokens[:1]}
    else:
        expected = {"mc_token_ids": tokens[:1]}
    expected.update({"start_positions": tokens[:1], "end_positions": tokens[:1]})
    for key, want in expected.items():
        shape = static_shape(inputs.get(key))
        if shape is not None and not _same(shape, want):
            raise InputError(
                f"{key} has shape {_show(shape)}, expected {_show(want)} for {name} of shape {_show(tokens)}"
            )


def check_id_range(low: int, high: int, limit: int, name: str, limit_name: str) -> None:
    """`low`, `high`: the smallest and largest id given in `name`; each must lie in [0, limit)."""
    if low < 0 or high >= limit:
        bad = low if low < 0 else high
        raise InputError(f"{name} contains {bad}, outside [0, {limit_name}={limit})")


def check_mask_shape(shape: tuple | None, batch_size: Any, key_len: Any, name: str) -> None:
    """`name` (an attention mask) must be exactly (batch_size, key_len); sizes that are not ints are unknown."""
    if shape is None:
        return
    expected = tuple(size if isinstance(size, int) else None for size in (batch_size, key_len))
    rows = shape[:-1]  # (B, C, S) masks of multiple-choice inputs count B·C rows
    flat = (None if None in rows else int(np.prod(rows, dtype=np.int64)), shape[-1]) if len(shape) > 1 else shape
    if not _same(tuple(flat), expected) or (len(shape) > 2 and not isinstance(batch_size, int)):
        raise InputError(
            f"{name} has shape {_show(shape)}, expected (batch, past + seq_len) = {_show(expected)}"
        )


def check_labels_shape(labels: tuple | None, expected: tuple | None, name: str = "labels") -> None:
    """`name` must have shape `expected` (the logits' shape without the class axis, for token-level labels)."""
    if labels is None or expected is None:
        return
    if not _same(tuple(labels), tuple(expected)):
        raise InputError(f"{name} has shape {_show(labels)}, expected {_show(expected)} (one target per position)")


def check_sequence_labels_shape(labels: tuple | None, logits: tuple | None, problem_type: str) -> None:
    """Sequence-classification `labels` for (B, num_labels) logits: one class id or value per row ((B,) or
    (B, 1)) for single-label classification and one-label regression, (B, num_labels) for multi-label
    classification and multi-output regression."""
    if labels is None or logits is None:
        return
    batch, num_labels = tuple(logits)
    if problem_type == "multi_label_classification" or (problem_type == "regression" and num_labels != 1):
        allowed = [(batch, num_labels)]
    else:
        allowed = [(batch,), (batch, 1)]
    if not any(_same(tuple(labels), shape) for shape in allowed):
        raise InputError(f"labels has shape {_show(labels)}, expected {' or '.join(_show(a) for a in allowed)} "
                         f"for {problem_type} over {num_labels} labels")


def _show(shape: tuple | None) -> str:
    if shape is None:
        return "(unknown)"
    sizes = ["?" if size is None else str(size) for size in shape]
    return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"
