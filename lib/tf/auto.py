"""Auto classes: pick the TensorFlow model class from a config's `model_type`."""

from __future__ import annotations

import os
from typing import Any

from ..configuration import AutoConfig, PretrainedConfig
from .gpt2 import (
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
)
from .gpt_neo import (
    GPTNeoForCausalLM,
    GPTNeoForQuestionAnswering,
    GPTNeoForSequenceClassification,
    GPTNeoForTokenClassification,
    GPTNeoModel,
)
from .gptj import (
    GPTJForCausalLM,
    GPTJForQuestionAnswering,
    GPTJForSequenceClassification,
    GPTJForTokenClassification,
    GPTJModel,
)
from .modeling_utils import PreTrainedModel

__all__ = [
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
]

_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token")


class _AutoModel:
    """Base of the auto classes: `_model_mapping` maps `model_type` to the class for this task."""

    _model_mapping: dict[str, type[PreTrainedModel]] = {}

    def __init__(self) -> None:
        raise OSError(f"{type(self).__name__} is not instantiated; use .from_pretrained() or .from_config()")

    @classmethod
    def _model_class(cls, config: PretrainedConfig) -> type[PreTrainedModel]:
        model_type = getattr(config, "model_type", None)
        if model_type not in cls._model_mapping:
            raise ValueError(
                f"Unrecognized model_type {model_type!r} for {cls.__name__}; supported model types: "
                f"{', '.join(sorted(cls._model_mapping))}"
            )
        return cls._model_mapping[model_type]

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any) -> PreTrainedModel:
        """A freshly initialized model of the class matching `config.model_type` (kwargs: Keras' name/dtype)."""
        return cls._model_class(config)(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any
                        ) -> PreTrainedModel:
        """Read `config.json` to pick the class, then call its `from_pretrained` (same arguments)."""
        config = kwargs.pop("config", None)
        if config is None:
            hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        elif isinstance(config, (str, os.PathLike)):
            config = AutoConfig.from_pretrained(config)
        return cls._model_class(config).from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, **kwargs
        )


class AutoModel(_AutoModel):
    _model_mapping = {"gpt2": GPT2Model, "gptj": GPTJModel, "gpt_neo": GPTNeoModel}


class AutoModelForCausalLM(_AutoModel):
    _model_mapping = {"gpt2": GPT2LMHeadModel, "gptj": GPTJForCausalLM, "gpt_neo": GPTNeoForCausalLM}


class AutoModelForSequenceClassification(_AutoModel):
    _model_mapping = {
        "gpt2": GPT2ForSequenceClassification,
        "gptj": GPTJForSequenceClassification,
        "gpt_neo": GPTNeoForSequenceClassification,
    }


class AutoModelForTokenClassification(_AutoModel):
    _model_mapping = {
        "gpt2": GPT2ForTokenClassification,
        "gptj": GPTJForTokenClassification,
        "gpt_neo": GPTNeoForTokenClassification,
    }


class AutoModelForQuestionAnswering(_AutoModel):
    _model_mapping = {
        "gpt2": GPT2ForQuestionAnswering,
        "gptj": GPTJForQuestionAnswering,
        "gpt_neo": GPTNeoForQuestionAnswering,
    }
