"""Model outputs shared by every backend.

One definition per output class (Hugging Face had separate PyTorch, TF and Flax copies). A `ModelOutput`
behaves like Hugging Face's: attribute access, `out["logits"]`, and integer/slice indexing over the fields
that are not None, in declaration order (`out[0]` is the loss when a loss was computed, else the logits).
Each backend registers the classes as pytrees when it loads (`register_torch_pytrees`,
`register_jax_pytrees`); TensorFlow's `tf.nest` uses the `__tf_flatten__` protocol below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

__all__ = [
    "ModelOutput",
    "BaseModelOutputWithPast",
    "BaseModelOutputWithPastAndCrossAttentions",
    "CausalLMOutputWithPast",
    "CausalLMOutputWithCrossAttentions",
    "SequenceClassifierOutputWithPast",
    "TokenClassifierOutput",
    "QuestionAnsweringModelOutput",
    "GPT2DoubleHeadsModelOutput",
    "OUTPUT_CLASSES",
    "register_torch_pytrees",
    "register_jax_pytrees",
]


@dataclasses.dataclass
class ModelOutput:
    """Base of all outputs: a dataclass whose None fields are invisible to keys, indexing and tuples."""

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The non-None fields in declaration order (what `return_dict=False` returns)."""
        return tuple(self.values())

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r} set; set fields: {self.keys()}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        # Iterating yields field names, as iterating Hugging Face's OrderedDict-based outputs does.
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    # tf.nest protocol (TensorFlow >= 2.13): outputs can leave a tf.function intact.
    def __tf_flatten__(self) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        names = tuple(f.name for f in dataclasses.fields(self))
        return names, tuple(getattr(self, n) for n in names)

    @classmethod
    def __tf_unflatten__(cls, metadata: tuple[str, ...], components: tuple[Any, ...]) -> ModelOutput:
        return cls(**dict(zip(metadata, components)))


@dataclasses.dataclass
class BaseModelOutputWithPast(ModelOutput):
    """Output of the base models.

    Attributes:
        last_hidden_state: (B, T, D) hidden states after the final LayerNorm.
        past_key_values: per layer a `(key, value)` pair, each (B, H, S, D), when `use_cache`.
        hidden_states: embeddings + one (B, T, D) array per layer (the last after `ln_f`), when
            `output_hidden_states`.
        attentions: one (B, H, T, S) array of attention probabilities per layer, when `output_attentions`.
    """

    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class BaseModelOutputWithPastAndCrossAttentions(BaseModelOutputWithPast):
    """`BaseModelOutputWithPast` plus `cross_attentions` (one (B, H, T, S_enc) per layer) for GPT-2 with
    `add_cross_attention=True`."""

    cross_attentions: Any = None


@dataclasses.dataclass
class _LogitsWithPast(ModelOutput):
    """The fields of the outputs that score the last layer's states: a loss when labels are given, the logits,
    then the cache and the per-layer states as in `BaseModelOutputWithPast`."""

    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class CausalLMOutputWithPast(_LogitsWithPast):
    """Output of the causal language models.

    Attributes:
        loss: scalar next-token cross-entropy, averaged over labels that are not -100, when `labels`.
        logits: (B, T, V) next-token scores.
        past_key_values, hidden_states, attentions: as in `BaseModelOutputWithPast`.
    """


@dataclasses.dataclass
class CausalLMOutputWithCrossAttentions(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus `cross_attentions` (GPT-2's LM head)."""

    cross_attentions: Any = None


@dataclasses.dataclass
class SequenceClassifierOutputWithPast(_LogitsWithPast):
    """Output of `*ForSequenceClassification`.

    Attributes:
        loss: scalar; MSE for regression, cross-entropy for single-label, BCE-with-logits for multi-label.
        logits: (B, num_labels) scores of the last non-padding token of each row.
    """


@dataclasses.dataclass
class TokenClassifierOutput(ModelOutput):
    """Output of `*ForTokenClassification`: `logits` (B, T, num_labels), `loss` scalar cross-entropy."""

    loss: Any = None
    logits: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    """Output of `*ForQuestionAnswering`: span `start_logits`/`end_logits` (B, T); `loss` is the mean of
    the start and end cross-entropies."""

    loss: Any = None
    start_logits: Any = None
    end_logits: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class GPT2DoubleHeadsModelOutput(ModelOutput):
    """Output of `GPT2DoubleHeadsModel`.

    Attributes:
        loss: language-modeling loss, when `labels`. mc_loss: multiple-choice loss, when `mc_labels`.
        logits: (B, C, T, V) LM scores. mc_logits: (B, C) multiple-choice scores.
        past_key_values: per layer `(key, value)`, each (B·C, H, S, D).
    """

    loss: Any = None
    mc_loss: Any = None
    logits: Any = None
    mc_logits: Any = None
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None


OUTPUT_CLASSES: tuple[type[ModelOutput], ...] = (
    BaseModelOutputWithPast,
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithPast,
    CausalLMOutputWithCrossAttentions,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
    QuestionAnsweringModelOutput,
    GPT2DoubleHeadsModelOutput,
)


def _flatten(output: ModelOutput) -> tuple[list[Any], list[str]]:
    # Only the fields that are set become children, so None never appears as a leaf (torch's pytree
    # would treat it as one); unflattening leaves the others at None.
    names = output.keys()
    return [getattr(output, n) for n in names], names


_registered: set[str] = set()


def register_torch_pytrees() -> None:
    """Register every output class with `torch.utils._pytree` (idempotent; called by `twinformers.pt`)."""
    if "torch" in _registered:
        return
    from torch.utils import _pytree

    for cls in OUTPUT_CLASSES:
        _pytree.register_pytree_node(
            cls,
            _flatten,
            lambda values, names, cls=cls: cls(**dict(zip(names, values))),
            serialized_type_name=f"twinformers.outputs.{cls.__name__}",
        )
    _registered.add("torch")


def register_jax_pytrees() -> None:
    """Register every output class as a JAX pytree (idempotent; called by `twinformers.flax`)."""
    if "jax" in _registered:
        return
    import jax

    for cls in OUTPUT_CLASSES:
        jax.tree_util.register_pytree_node(
            cls, _flatten, lambda names, values, cls=cls: cls(**dict(zip(names, values)))
        )
    _registered.add("jax")
