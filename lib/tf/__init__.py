"""twinformers' TensorFlow twin (Keras 3): GPT-2, GPT-J and GPT-Neo with Hugging Face's class and variable names.

Importing it needs TensorFlow with Keras 3 on its TensorFlow backend: `KERAS_BACKEND` is set to "tensorflow"
when unset, and another value is refused (the models are written with TensorFlow ops).
"""

import os

from .._backends import model_exports, require_backend

require_backend("tf")

_keras_backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if _keras_backend != "tensorflow":
    raise ImportError(
        f"twinformers.tf needs Keras on its TensorFlow backend, but KERAS_BACKEND={_keras_backend!r}: the models "
        "call TensorFlow ops directly. Unset KERAS_BACKEND or set it to 'tensorflow' before importing keras "
        "(use twinformers.pt or twinformers.flax for the other frameworks)."
    )

import keras  # noqa: E402

if keras.config.backend() != "tensorflow":  # keras was imported earlier with another backend
    raise ImportError(
        f"twinformers.tf needs Keras on its TensorFlow backend, but Keras is running on {keras.config.backend()!r} "
        "(it was imported before with another KERAS_BACKEND); set KERAS_BACKEND=tensorflow before importing keras."
    )

from .modeling_utils import PreTrainedModel, register_keras_pytrees  # noqa: E402

register_keras_pytrees()

from .data import prepare_tf_dataset  # noqa: E402

# The model and auto classes, as the family tables (`conversion.tables`) list them.
_MODEL_EXPORTS = model_exports(__name__)
globals().update(_MODEL_EXPORTS)

__all__ = ["PreTrainedModel", *_MODEL_EXPORTS, "prepare_tf_dataset", "TFGPT2Tokenizer"]


def __getattr__(name: str):
    # The in-graph tokenizer lives in its own module (another engineer's); import it only when asked for, so
    # `import twinformers.tf` never depends on it.
    if name == "TFGPT2Tokenizer":
        from .tokenizer import TFGPT2Tokenizer

        return TFGPT2Tokenizer
    raise AttributeError(f"module 'twinformers.tf' has no attribute {name!r}")
