"""Auto classes: pick the PyTorch model class from a config's `model_type`."""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from ..configuration import AutoConfig, PretrainedConfig
from ..conversion.tables import AUTO_CLASSES, TABLES
from .modeling_utils import PreTrainedModel

__all__ = [
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
]

_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token")


def _model_mapping(auto_class: str) -> dict[str, type[PreTrainedModel]]:
    """model_type → this backend's class for the head `auto_class` picks, from the family tables."""
    head = AUTO_CLASSES[auto_class]
    return {
        family: getattr(importlib.import_module(f".{family}", __package__), table.classes[head])
        for family, table in TABLES.items()
        if head in table.classes
    }


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
    def from_config(
        cls, config: PretrainedConfig, torch_dtype: torch.dtype | None = None, attn_implementation: str | None = None
    ) -> PreTrainedModel:
        """A freshly initialized model of the class matching `config.model_type`."""
        model_class = cls._model_class(config)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        model = model_class(config)
        return model.to(torch_dtype) if torch_dtype is not None else model

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
    _model_mapping = _model_mapping("AutoModel")


class AutoModelForCausalLM(_AutoModel):
    _model_mapping = _model_mapping("AutoModelForCausalLM")


class AutoModelForSequenceClassification(_AutoModel):
    _model_mapping = _model_mapping("AutoModelForSequenceClassification")


class AutoModelForTokenClassification(_AutoModel):
    _model_mapping = _model_mapping("AutoModelForTokenClassification")


class AutoModelForQuestionAnswering(_AutoModel):
    _model_mapping = _model_mapping("AutoModelForQuestionAnswering")
