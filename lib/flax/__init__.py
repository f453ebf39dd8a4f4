"""twinformers' Flax twin: GPT-2, GPT-J and GPT-Neo as `flax.nnx` modules wrapped with Hugging Face's Flax API
(`params`, `init_cache`, `to_bf16`, ...); `model.params` is exactly the `flax_model.msgpack` tree and
`model.nnx_module` the `nnx.Module` itself."""

from .._backends import model_exports, require_backend

require_backend("flax")

from ..outputs import register_jax_pytrees  # noqa: E402

register_jax_pytrees()

from .modeling_utils import PreTrainedModel, StaticCache  # noqa: E402

# The model and auto classes, as the family tables (`conversion.tables`) list them.
_MODEL_EXPORTS = model_exports(__name__)
globals().update(_MODEL_EXPORTS)

__all__ = ["PreTrainedModel", "StaticCache", *_MODEL_EXPORTS]
