"""`GenerationConfig`: decoding settings shared by every backend's `generate()`.

Read from and written to Hugging Face's `generation_config.json` (same keys, same diff-against-defaults
rule, same byte layout). Framework-free.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from typing import Any

from ..checkpoints.files import GENERATION_CONFIG_NAME, atomic_write_text, resolve_file
from ..configuration import COMPATIBLE_TRANSFORMERS_VERSION, GENERATION_DEFAULTS

__all__ = ["GenerationConfig", "save_generation_config"]

# Hugging Face's generation options that model configs still carry (`GENERATION_DEFAULTS`, their one table) and
# that twinformers does not implement: accepted on model configs, never generation fields.
_NOT_IMPLEMENTED = (
    "num_beam_groups", "diversity_penalty", "encoder_no_repeat_ngram_size", "remove_invalid_values",
    "exponential_decay_length_penalty",
)
# Every field with Hugging Face's default. Only values that differ are written to generation_config.json.
_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in GENERATION_DEFAULTS.items() if k not in _NOT_IMPLEMENTED},
    # only in generation configs
    "max_new_tokens": None,
    "min_new_tokens": None,
    "max_time": None,
    "stop_strings": None,
    "use_cache": True,
    "output_logits": None,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
}

# Keys taken from a model config when it carries them (HF moves them out of config.json on save).
_MODEL_CONFIG_KEYS = tuple(k for k in _DEFAULTS if k not in ("max_new_tokens", "min_new_tokens", "use_cache"))


class GenerationConfig:
    """Decoding settings.

    Args:
        max_length: total length (prompt included) to stop at; `max_new_tokens` wins when both are set.
        max_new_tokens: how many tokens to generate after the prompt.
        min_length / min_new_tokens: EOS is suppressed until this length is reached.
        max_time: stop after this many seconds. stop_strings: a string or list of strings that end generation
            (`generate()` then needs `tokenizer=`); see `twinformers.generation.stopping_criteria`.
        do_sample: sample instead of greedy/beam search. num_beams: beam width (1 = no beam search).
        temperature, top_k, top_p, typical_p: sampling warpers (applied in that order after penalties).
        repetition_penalty: >1 discourages tokens already present. no_repeat_ngram_size: ban repeated n-grams.
        bad_words_ids: token sequences never to generate. length_penalty, early_stopping: beam search.
        num_return_sequences: sequences per prompt (≤ num_beams for beam search).
        output_scores, return_dict_in_generate: also return the processed scores per step.
        pad_token_id, bos_token_id, eos_token_id (int or list of ints): special tokens.
        **kwargs: other keys are kept and written back (files written by newer libraries survive).
    """

    def __init__(self, **kwargs: Any) -> None:
        for key, default in _DEFAULTS.items():
            setattr(self, key, kwargs.pop(key, copy.deepcopy(default)))
        self._from_model_config = kwargs.pop("_from_model_config", False)
        kwargs.pop("transformers_version", None)
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.validate()

    # ----------------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ValueError for settings that cannot work; the message names the argument."""
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0):
            raise ValueError(f"max_new_tokens must be a non-negative int, got {self.max_new_tokens!r}")
        if not isinstance(self.max_length, int) or self.max_length < 0:
            raise ValueError(f"max_length must be a non-negative int, got {self.max_length!r}")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ValueError(f"num_beams must be an int >= 1, got {self.num_beams!r}")
        if not isinstance(self.num_return_sequences, int) or self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be an int >= 1, got {self.num_return_sequences!r}")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} needs num_beams >= {self.num_return_sequences} "
                "(greedy and beam search return at most num_beams sequences) or do_sample=True"
            )
        if self.do_sample and not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be a float > 0 when sampling, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.typical_p, (int, float)) and 0 < self.typical_p <= 1):
            raise ValueError(f"typical_p must be in (0, 1], got {self.typical_p!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
            raise ValueError(f"top_k must be a non-negative int, got {self.top_k!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0):
            raise ValueError(f"repetition_penalty must be a float > 0, got {self.repetition_penalty!r}")
        if not isinstance(self.no_repeat_ngram_size, int) or self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be a non-negative int, got {self.no_repeat_ngram_size!r}")
        if self.bad_words_ids is not None and not (
            isinstance(self.bad_words_ids, list)
            and all(isinstance(seq, list) and seq and all(isinstance(t, int) and t >= 0 for t in seq)
                    for seq in self.bad_words_ids)
        ):
            raise ValueError(f"bad_words_ids must be a list of non-empty lists of ids, got {self.bad_words_ids!r}")
        if self.max_time is not None and not (isinstance(self.max_time, (int, float)) and self.max_time > 0):
            raise ValueError(f"max_time must be a number of seconds > 0, got {self.max_time!r}")
        if self.stop_strings is not None and not (
            isinstance(self.stop_strings, str)
            or (isinstance(self.stop_strings, list) and all(isinstance(x, str) and x for x in self.stop_strings))
        ) or self.stop_strings == "":
            raise ValueError(f"stop_strings must be a string or a list of non-empty strings, got {self.stop_strings!r}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")

    @property
    def eos_token_ids(self) -> list[int]:
        """`eos_token_id` as a list (it may be an int, a list, or None)."""
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)

    def max_new_tokens_for(self, prompt_length: int) -> int:
        """Number of tokens to generate after a prompt of `prompt_length` tokens."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return max(self.max_length - prompt_length, 0)

    def min_new_tokens_for(self, prompt_length: int) -> int:
        if self.min_new_tokens is not None:
            return self.min_new_tokens
        return max(self.min_length - prompt_length, 0)

    # ----------------------------------------------------------------------------------------- updates
    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the attributes named in `kwargs`, validate, and return the kwargs that are not fields."""
        unused = {}
        for key, value in kwargs.items():
            if hasattr(self, key) and not key.startswith("_"):
                setattr(self, key, value)
            else:
                unused[key] = value
        self.validate()
        return unused

    def copy(self) -> GenerationConfig:
        return copy.deepcopy(self)

    @classmethod
    def from_model_config(cls, model_config: Any) -> GenerationConfig:
        """Defaults from a model config: its special tokens and any generation keys it still carries."""
        values = {}
        config_dict = model_config.to_dict()
        for key in _MODEL_CONFIG_KEYS:
            if key in config_dict and config_dict[key] is not None and config_dict[key] != _DEFAULTS[key]:
                values[key] = config_dict[key]
        return cls(**values, _from_model_config=True)

    # ----------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        output = copy.deepcopy(self.__dict__)
        output["transformers_version"] = COMPATIBLE_TRANSFORMERS_VERSION
        return output

    def to_diff_dict(self) -> dict[str, Any]:
        diff = {k: v for k, v in self.to_dict().items() if k not in _DEFAULTS or v != _DEFAULTS[k]}
        if not diff.get("_from_model_config"):
            diff.pop("_from_model_config", None)
        return diff

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike, config_file_name: str = GENERATION_CONFIG_NAME) -> str:
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, config_file_name)
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> GenerationConfig:
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        config_file_name: str = GENERATION_CONFIG_NAME,
        **kwargs: Any,
    ) -> GenerationConfig:
        """Load `generation_config.json` from a directory, a file path or a Hub id; kwargs override."""
        resolve_keys = ("revision", "cache_dir", "local_files_only", "token")
        resolve_kwargs = {k: kwargs.pop(k) for k in resolve_keys if k in kwargs}
        path = str(pretrained_model_name_or_path)
        file = path if os.path.isfile(path) else resolve_file(path, config_file_name, **resolve_kwargs)
        try:
            with open(file, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise OSError(f"{file} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise OSError(f"{file} must hold a JSON object")
        return cls.from_dict(data, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationConfig) and self.to_diff_dict() == other.to_diff_dict()

    def __repr__(self) -> str:
        return f"GenerationConfig {self.to_json_string()}"


# Generation ids Hugging Face copies from the model config into generation_config.json when set.
_GENERATION_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def save_generation_config(config: Any, save_directory: str | os.PathLike) -> None:
    """What every twin's `save_pretrained` writes for a model that generates, as Hugging Face does.

    `generation_config.json` gets the special-token ids `config` sets and every generation key `config` holds at
    a non-default value; those keys are MOVED: set to None in `config` (the copy about to become config.json),
    with Hugging Face's warning.
    """
    generation = {"_from_model_config": True}
    generation.update({k: getattr(config, k) for k in _GENERATION_IDS if getattr(config, k, None) is not None})
    moved = {k: getattr(config, k) for k, v in GENERATION_DEFAULTS.items() if getattr(config, k) != v}
    if moved:
        warnings.warn(
            f"Moving the following attributes in the config to the generation config: {moved}. You are "
            "seeing this warning because you've set generation parameters in the model config, as "
            "opposed to in the generation config.",
            UserWarning,
            stacklevel=3,
        )
        for key in moved:
            setattr(config, key, None)
    generation.update(moved)
    generation["transformers_version"] = COMPATIBLE_TRANSFORMERS_VERSION
    atomic_write_text(os.path.join(save_directory, GENERATION_CONFIG_NAME),
                      json.dumps(generation, indent=2, sort_keys=True) + "\n")
