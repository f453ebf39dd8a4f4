"""AutoTokenizer: pick GPT2TokenizerFast (default) or GPT2Tokenizer for a checkpoint folder or Hub id.

The class is read from tokenizer_config.json's `tokenizer_class`, else from config.json's `model_type`
(gpt2, gptj and gpt_neo all use GPT-2's byte-level BPE, as in Hugging Face's auto mapping).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from ..checkpoints.files import pop_hub_arguments, resolve_file
from .base import PreTrainedTokenizerBase, read_json
from .gpt2 import GPT2Tokenizer
from .gpt2_fast import GPT2TokenizerFast

__all__ = ["AutoTokenizer", "TOKENIZER_MAPPING"]

logger = logging.getLogger(__name__)

# model_type → (slow class, fast class)
TOKENIZER_MAPPING: dict[str, tuple[type[GPT2Tokenizer], type[GPT2TokenizerFast]]] = {
    "gpt2": (GPT2Tokenizer, GPT2TokenizerFast),
    "gptj": (GPT2Tokenizer, GPT2TokenizerFast),
    "gpt_neo": (GPT2Tokenizer, GPT2TokenizerFast),
}
_CLASS_NAMES = {"GPT2Tokenizer": "gpt2", "GPT2TokenizerFast": "gpt2"}


class AutoTokenizer:
    """Factory: `AutoTokenizer.from_pretrained(path)` returns the right tokenizer class for a checkpoint."""

    def __init__(self) -> None:
        raise OSError("AutoTokenizer is a factory: use AutoTokenizer.from_pretrained(path)")

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, use_fast: bool = True, **kwargs: Any
    ) -> PreTrainedTokenizerBase:
        """Load the tokenizer of a checkpoint folder (or Hub id).

        Args:
            use_fast: GPT2TokenizerFast (default; falls back to GPT2Tokenizer when `tokenizers` is missing)
                or GPT2Tokenizer.
            **kwargs: `revision`, `cache_dir`, `local_files_only`, `token` for the Hub download; the others are
                passed to the tokenizer's `from_pretrained` (e.g. `padding_side="left"`).

        Raises:
            ValueError: the checkpoint names a tokenizer or model type twinformers does not implement, or
                names none.
        """
        source = os.fspath(pretrained_model_name_or_path)
        hub = pop_hub_arguments(kwargs)
        family = None
        config_path = resolve_file(source, "tokenizer_config.json", required=False, **hub)
        if config_path is not None:
            config = read_json(config_path, "tokenizer config")
            name = config.get("tokenizer_class") if isinstance(config, dict) else None
            if name is not None:
                family = _CLASS_NAMES.get(name)
                if family is None:
                    raise ValueError(
                        f"{config_path} names tokenizer_class={name!r}; twinformers implements "
                        f"{sorted(_CLASS_NAMES)}"
                    )
        if family is None:
            model_config_path = resolve_file(source, "config.json", required=False, **hub)
            if model_config_path is None:
                raise ValueError(
                    f"cannot tell which tokenizer {source} needs: it has no tokenizer_config.json with a "
                    "tokenizer_class and no config.json with a model_type"
                )
            model_config = read_json(model_config_path, "model config")
            model_type = model_config.get("model_type") if isinstance(model_config, dict) else None
            if model_type not in TOKENIZER_MAPPING:
                raise ValueError(
                    f"{model_config_path} has model_type={model_type!r}; twinformers has tokenizers for "
                    f"{sorted(TOKENIZER_MAPPING)}"
                )
            family = model_type
        slow_class, fast_class = TOKENIZER_MAPPING[family]
        if use_fast and importlib.util.find_spec("tokenizers") is None:
            logger.warning("the `tokenizers` library is not installed; loading the slow %s", slow_class.__name__)
            use_fast = False
        tokenizer_class = fast_class if use_fast else slow_class
        return tokenizer_class.from_pretrained(source, **hub, **kwargs)
