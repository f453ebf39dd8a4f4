"""twinformers' TensorFlow twin (Keras 3): GPT-2, GPT-J and GPT-Neo with Hugging Face's class and variable names.

Importing it needs TensorFlow with Keras 3 on its TensorFlow backend: `KERAS_BACKEND` is set to "tensorflow"
when unset, and another value is refused (the models are written with TensorFlow ops).
"""

import os

from .._backends import require_backend

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

from .auto import (  # noqa: E402
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from .data import prepare_tf_dataset  # noqa: E402
from .gpt2 import (  # noqa: E402
    GPT2DoubleHeadsModel,
    GPT2ForCausalLM,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
)
from .gpt_neo import (  # noqa: E402
    GPTNeoForCausalLM,
    GPTNeoForQuestionAnswering,
    GPTNeoForSequenceClassification,
    GPTNeoForTokenClassification,
    GPTNeoModel,
    GPTNeoPreTrainedModel,
)
from .gptj import (  # noqa: E402
    GPTJForCausalLM,
    GPTJForQuestionAnswering,
    GPTJForSequenceClassification,
    GPTJForTokenClassification,
    GPTJModel,
    GPTJPreTrainedModel,
)

__all__ = [
    "PreTrainedModel",
    "GPT2Model", "GPT2LMHeadModel", "GPT2ForCausalLM", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification", "GPT2ForQuestionAnswering", "GPT2PreTrainedModel",
    "GPTJModel", "GPTJForCausalLM", "GPTJForSequenceClassification", "GPTJForTokenClassification",
    "GPTJForQuestionAnswering", "GPTJPreTrainedModel",
    "GPTNeoModel", "GPTNeoForCausalLM", "GPTNeoForSequenceClassification", "GPTNeoForTokenClassification",
    "GPTNeoForQuestionAnswering", "GPTNeoPreTrainedModel",
    "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
    "prepare_tf_dataset", "TFGPT2Tokenizer",
]


def __getattr__(name: str):
    # The in-graph tokenizer lives in its own module (another engineer's); import it only when asked for, so
    # `import twinformers.tf` never depends on it.
    if name == "TFGPT2Tokenizer":
        from .tokenizer import TFGPT2Tokenizer

        return TFGPT2Tokenizer
    raise AttributeError(f"module 'twinformers.tf' has no attribute {name!r}")
