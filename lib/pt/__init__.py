"""twinformers' PyTorch twin: GPT-2, GPT-J and GPT-Neo with Hugging Face's PyTorch class and key names."""

from .._backends import model_exports, require_backend

require_backend("pt")

from ..outputs import register_torch_pytrees  # noqa: E402

register_torch_pytrees()

from .modeling_utils import PreTrainedModel  # noqa: E402

# The model and auto classes, as the family tables (`conversion.tables`) list them.
_MODEL_EXPORTS = model_exports(__name__)
globals().update(_MODEL_EXPORTS)

__all__ = ["PreTrainedModel", *_MODEL_EXPORTS]
