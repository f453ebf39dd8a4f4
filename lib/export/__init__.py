"""Serving exports: artifacts that run without twinformers (ONNX, TensorFlow SavedModel, `.keras`, `jax.export`).

Framework-free plumbing is written here once: which heads a format takes, the output directory (staged in a
sibling temporary directory, then renamed, so a failed export leaves nothing behind), and the size check of
formats that embed the weights. Each format lives in its own module and imports its framework only there:
`twinformers.export.onnx` (PyTorch twin), `.saved_model` and `.keras` (TensorFlow twin), `.jax` (Flax twin).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ..checkpoints.files import staged_directory
from ..errors import TwinformersError

__all__ = ["FORMATS", "ExportError", "head_kind", "staged_output", "check_embeddable", "export_model"]

# format → backend whose twin it exports
FORMATS = {"onnx": "pt", "saved_model": "tf", "keras": "tf", "jax": "flax"}
# head kind → class-name suffixes (the same in every backend)
_HEAD_SUFFIXES = {
    "causal_lm": ("LMHeadModel", "ForCausalLM"),
    "sequence_classification": ("ForSequenceClassification",),
    "token_classification": ("ForTokenClassification",),
}


class ExportError(TwinformersError, ValueError):
    """An export that cannot be done as asked (unsupported head or format, existing output, too large)."""


def head_kind(model: Any, supported: tuple[str, ...], format: str) -> str:
    """The head kind of `model` ("causal_lm", "sequence_classification", ...), if `format` supports it."""
    name = type(model).__name__
    kind = next((k for k, suffixes in _HEAD_SUFFIXES.items() if name.endswith(suffixes)), None)
    if kind not in supported:
        raise ExportError(
            f"--format {format} does not export {name}: it takes causal LM"
            + (", sequence and token classification" if len(supported) > 1 else "")
            + " heads (one input_ids/attention_mask → logits signature)"
        )
    return kind


def check_embeddable(num_bytes: int, limit: int, format: str, hint: str) -> None:
    """ExportError when weights of `num_bytes` are too large to embed in one `format` file."""
    if num_bytes > limit:
        raise ExportError(
            f"the weights ({num_bytes / 2**30:.2f} GiB) are too large to embed in a {format} file "
            f"(limit {limit / 2**30:.2f} GiB): {hint}"
        )


@contextlib.contextmanager
def staged_output(out: str | os.PathLike, force: bool = False) -> Iterator[str]:
    """Yield a fresh directory beside `out` to write into; on success it takes `out`'s place atomically
    (`checkpoints.files.staged_directory`), on error it is removed and `out` is untouched.

    Raises:
        ExportError: `out` exists and `force` is False.
    """
    out = os.path.abspath(os.fspath(out))
    if os.path.lexists(out) and not force:
        raise ExportError(f"{out} already exists; pass --force (force=True) to replace it")
    with staged_directory(out, overwrite=force) as stage:
        yield stage


def export_model(model: Any, out: str | os.PathLike, format: str, force: bool = False, **options: Any) -> str:
    """Export `model` (a twin of the format's backend, see `FORMATS`) to `out`; returns `out`.

    Args:
        model: the twin to export: PyTorch for "onnx", TensorFlow for "saved_model"/"keras", Flax for "jax".
        out: the output directory (a file for "keras").
        format: "onnx", "saved_model", "keras" or "jax".
        force: replace an existing `out`.
        **options: the format's own options (see each module's `export`).
    """
    import importlib

    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"{__name__}.{format}")
    module.export(model, out, force=force, **options)
    return os.fspath(out)
