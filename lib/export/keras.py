"""`--format keras`: a TensorFlow twin as `OUT/model.keras` (Keras' own format: config and weights), loaded with
`keras.models.load_model` where twinformers is importable (the file names the classes, `twinformers>...`)."""

from __future__ import annotations

import os
from typing import Any

from . import staged_output

__all__ = ["export"]


def export(model: Any, out: str | os.PathLike, force: bool = False) -> None:
    """Write `out/model.keras` for any TensorFlow twin (every class registers its Keras config)."""
    with staged_output(out, force) as stage:
        model.save(os.path.join(stage, "model.keras"))
