"""twinformers' PyTorch twin: GPT-2, GPT-J and GPT-Neo with Hugging Face's PyTorch class and key names."""

from .._backends import require_backend

require_backend("pt")

from ..outputs import register_torch_pytrees  # noqa: E402

register_torch_pytrees()

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
from .modeling_utils import PreTrainedModel  # noqa: E402

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
]
