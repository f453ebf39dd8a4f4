"""twinformers: GPT-2, GPT-J and GPT-Neo as PyTorch, TensorFlow (Keras 3) and Flax twins.

Importing this package imports no deep-learning framework. Names resolve lazily: configs, outputs and
tokenizers are framework-free; `twinformers.pt`, `twinformers.tf` and `twinformers.flax` hold the
backends with unprefixed class names, and the top level also offers Hugging Face's names
(`GPT2LMHeadModel` → PyTorch, `TFGPT2LMHeadModel`, `FlaxGPT2LMHeadModel`) so migrating is a one-line
import change.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._backends import BACKENDS, require_backend
from .conversion.tables import AUTO_CLASSES, TABLES, model_classes

__version__ = "0.1.0"

# Every backend's model classes, from the family tables (the one registry), then the auto classes.
MODEL_CLASSES = (*(name for family in TABLES for name in model_classes(family)), *AUTO_CLASSES)

_FRAMEWORK_FREE = {
    "twinformers.configuration": (
        "PretrainedConfig", "GPT2Config", "GPTJConfig", "GPTNeoConfig", "AutoConfig",
    ),
    "twinformers.outputs": (
        "ModelOutput", "BaseModelOutputWithPast", "BaseModelOutputWithPastAndCrossAttentions",
        "CausalLMOutputWithPast", "CausalLMOutputWithCrossAttentions", "SequenceClassifierOutputWithPast",
        "TokenClassifierOutput", "QuestionAnsweringModelOutput", "GPT2DoubleHeadsModelOutput",
    ),
    "twinformers.generation.config": ("GenerationConfig",),
    "twinformers.generation.streamers": ("TextStreamer", "TextIteratorStreamer"),
    "twinformers.generation.stopping_criteria": (
        "StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria",
        "StopStringCriteria",
    ),
    "twinformers.pipelines": ("pipeline",),
    "twinformers.tokenization.gpt2": ("GPT2Tokenizer",),
    "twinformers.tokenization.gpt2_fast": ("GPT2TokenizerFast",),
    "twinformers.tokenization.auto": ("AutoTokenizer",),
    "twinformers.adapters.config": ("LoraConfig",),
}

_LAZY: dict[str, tuple[str, str]] = {}
for _module, _names in _FRAMEWORK_FREE.items():
    for _name in _names:
        _LAZY[_name] = (_module, _name)
for _name in MODEL_CLASSES:
    _LAZY[_name] = ("twinformers.pt", _name)
    _LAZY[f"TF{_name}"] = ("twinformers.tf", _name)
    _LAZY[f"Flax{_name}"] = ("twinformers.flax", _name)
_LAZY["TFGPT2Tokenizer"] = ("twinformers.tf", "TFGPT2Tokenizer")
for _name in ("LogitsProcessor", "LogitsProcessorList"):  # Hugging Face's names: PyTorch's, TF..., Flax...
    _LAZY[_name] = ("twinformers.pt.generation", _name)
    _LAZY[f"TF{_name}"] = ("twinformers.tf.generation", _name)
    _LAZY[f"Flax{_name}"] = ("twinformers.flax.generation", _name)

__all__ = ["__version__", "BACKENDS", *sorted(_LAZY), "pt", "tf", "flax"]


def __getattr__(name: str) -> Any:
    if name in ("pt", "tf", "flax"):
        return importlib.import_module(f"twinformers.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'twinformers' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
