"""twinformers' Flax twin: GPT-2, GPT-J and GPT-Neo as `flax.linen` modules wrapped with Hugging Face's Flax API
(`params`, `init_cache`, `to_bf16`, ...); `model.params` is exactly the `flax_model.msgpack` tree."""

from .._backends import require_backend

require_backend("flax")

from ..outputs import register_jax_pytrees  # noqa: E402

register_jax_pytrees()

from .auto import (  # noqa: E402
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
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
from .modeling_utils import PreTrainedModel, StaticCache  # noqa: E402

__all__ = [
    "PreTrainedModel", "StaticCache",
    "GPT2Model", "GPT2LMHeadModel", "GPT2ForCausalLM", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification", "GPT2ForQuestionAnswering", "GPT2PreTrainedModel",
    "GPTJModel", "GPTJForCausalLM", "GPTJForSequenceClassification", "GPTJForTokenClassification",
    "GPTJForQuestionAnswering", "GPTJPreTrainedModel",
    "GPTNeoModel", "GPTNeoForCausalLM", "GPTNeoForSequenceClassification", "GPTNeoForTokenClassification",
    "GPTNeoForQuestionAnswering", "GPTNeoPreTrainedModel",
    "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
]
