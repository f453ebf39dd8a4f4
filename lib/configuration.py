"""Model configurations shared by every backend.

`PretrainedConfig` reads and writes Hugging Face ``config.json`` files field for field; the three family
configs carry every parameter and default the seed documents list. Nothing here imports a deep-learning
framework.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

from .checkpoints.files import atomic_write_text, pop_hub_arguments, resolve_file
from .errors import CheckpointError, ConfigError

__all__ = [
    "PretrainedConfig",
    "GPT2Config",
    "GPTJConfig",
    "GPTNeoConfig",
    "AutoConfig",
    "CONFIG_MAPPING",
    "CONFIG_NAME",
    "COMPATIBLE_TRANSFORMERS_VERSION",
    "classifier_dropout",
    "residual_init_std",
    "resolve_model_config",
]

CONFIG_NAME = "config.json"
# The Hugging Face transformers release whose file layout twinformers reads and writes.
COMPATIBLE_TRANSFORMERS_VERSION = "4.47.1"

ACTIVATIONS = (
    "gelu",
    "gelu_new",
    "gelu_fast",
    "gelu_pytorch_tanh",
    "quick_gelu",
    "relu",
    "silu",
    "swish",
    "tanh",
    "sigmoid",
    "linear",
)

# Attributes of every config, with Hugging Face's defaults (transformers 4.47.1). A key whose value equals
# its default here (and the model-class default) is not written to config.json.
_COMMON_DEFAULTS: dict[str, Any] = {
    "return_dict": True,
    "output_hidden_states": False,
    "output_attentions": False,
    "torchscript": False,
    "torch_dtype": None,
    "use_bfloat16": False,
    "tf_legacy_loss": False,
    "pruned_heads": {},
    "tie_word_embeddings": True,
    "chunk_size_feed_forward": 0,
    "is_encoder_decoder": False,
    "is_decoder": False,
    "cross_attention_hidden_size": None,
    "add_cross_attention": False,
    "tie_encoder_decoder": False,
    "architectures": None,
    "finetuning_task": None,
    "tokenizer_class": None,
    "prefix": None,
    "bos_token_id": None,
    "pad_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "task_specific_params": None,
    "problem_type": None,
    "_name_or_path": "",
    "_attn_implementation_autoset": False,
}

# Generation parameters that Hugging Face still keeps on model configs. They are accepted and written
# back, but `generate()` reads them from `generation_config.json` (see `GenerationConfig`).
GENERATION_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "early_stopping": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "num_return_sequences": 1,
    "output_scores": False,
    "return_dict_in_generate": False,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
}

_PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
# Runtime-only attributes that never go to config.json.
_NOT_SERIALIZED = ("_attn_implementation", "_commit_hash")


# What every field may hold (`check_field`). Families add their own in `field_rules`.
_COMMON_RULES: dict[str, str] = {
    **dict.fromkeys(("return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
                     "tie_word_embeddings", "is_encoder_decoder", "is_decoder", "add_cross_attention",
                     "tie_encoder_decoder"), "bool"),
    **dict.fromkeys(("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id"),
                    "token id"),
    "chunk_size_feed_forward": "non-negative int",
}


def check_field(key: str, value: Any, rule: str) -> None:
    """Raise ConfigError naming `key` and `value` unless `value` fits `rule`.

    Rules: "positive int", "non-negative int", "optional positive int" (None too), "bool", "probability" (a number
    in [0, 1]), "optional probability", "positive float", "non-negative float", "token id" (None, an int >= 0, or a
    list of them), "optional str".
    """
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = (is_int or isinstance(value, float)) and value == value  # NaN is no number here
    if rule.startswith("optional ") and value is None:
        return
    base = rule.removeprefix("optional ")
    ok = {
        "positive int": is_int and value > 0,
        "non-negative int": is_int and value >= 0,
        "bool": isinstance(value, bool),
        "probability": is_number and 0 <= value <= 1,
        "positive float": is_number and 0 < value < float("inf"),
        "non-negative float": is_number and 0 <= value < float("inf"),
        "token id": value is None or (is_int and value >= 0) or (
            isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ),
        "str": isinstance(value, str),
    }[base]
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {_RULE_WORDS.get(rule, rule)}")


_RULE_WORDS = {
    "probability": "a number in [0, 1]",
    "optional probability": "None or a number in [0, 1]",
    "token id": "None, an int >= 0 or a list of them",
    "positive int": "a positive int",
    "optional positive int": "None or a positive int",
    "non-negative int": "an int >= 0",
    "bool": "true or false",
    "positive float": "a positive number",
    "non-negative float": "a number >= 0",
    "optional str": "None or a string",
}


class StoredAs:
    """A public attribute kept as `_<name>` and passed through `convert(value, name)` whenever it is set: the
    checked settings of configs and tokenizers (`name_or_path`, `padding_side`, ...) written once."""

    def __init__(self, convert: Callable[[Any, str], Any], doc: str) -> None:
        self.convert = convert
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.stored = name, f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self.stored)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj, self.stored, self.convert(value, self.name))


class PretrainedConfig:
    """Base class of all configs: attribute storage, aliases and Hugging Face-compatible JSON I/O.

    Args:
        **kwargs: any common attribute (`output_attentions`, `output_hidden_states`, `return_dict`,
            `use_cache`, `torch_dtype`, `tie_word_embeddings`, `bos_token_id`, `eos_token_id`,
            `pad_token_id`, `id2label`, `label2id`, `num_labels`, `problem_type`, `architectures`,
            `task_specific_params`, ...). Unknown keys are kept as attributes and written back.
    """

    model_type: str = ""
    attribute_map: dict[str, str] = {}
    field_rules: dict[str, str] = {}  # the family's fields and what they may hold (`check_field`)

    def __setattr__(self, name: str, value: Any) -> None:
        name = type(self).attribute_map.get(name, name)
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: resolve aliases such as `hidden_size`.
        target = type(self).attribute_map.get(name)
        if target is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return getattr(self, target)

    def __init__(self, **kwargs: Any) -> None:
        kwargs = {type(self).attribute_map.get(k, k): v for k, v in kwargs.items()}
        for key, default in {**_COMMON_DEFAULTS, **GENERATION_DEFAULTS}.items():
            setattr(self, key, kwargs.pop(key, copy.deepcopy(default)))
        self._attn_implementation = kwargs.pop("attn_implementation", None)

        id2label = kwargs.pop("id2label", None)
        num_labels = kwargs.pop("num_labels", None)
        label2id = kwargs.pop("label2id", None)
        if id2label is not None:
            if not isinstance(id2label, dict) or not all(str(k).lstrip("-").isdigit() for k in id2label):
                raise ConfigError(f"id2label={id2label!r} is invalid: expected a mapping of int ids to labels")
            self.id2label = {int(k): v for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(self.id2label):
                raise ConfigError(
                    f"num_labels={num_labels} does not match id2label with {len(self.id2label)} entries"
                )
        else:
            self.num_labels = 2 if num_labels is None else num_labels
        if label2id is not None:
            if not isinstance(label2id, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                         or str(v).isdigit() for v in label2id.values()):
                raise ConfigError(f"label2id={label2id!r} is invalid: expected a mapping of labels to int ids")
            self.label2id = {k: int(v) for k, v in label2id.items()}
        else:
            self.label2id = {v: k for k, v in self.id2label.items()}

        if self.problem_type not in _PROBLEM_TYPES:
            raise ConfigError(f"problem_type must be one of {_PROBLEM_TYPES}, got {self.problem_type!r}")
        kwargs.pop("transformers_version", None)
        kwargs.pop("twinformers_version", None)
        for key, value in kwargs.items():  # unknown keys survive a round trip
            setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Check the type and range of every field, then the fields against each other.

        Raises:
            ConfigError (a ValueError): the message names the key and the value.
        """
        for key, rule in {**_COMMON_RULES, **type(self).field_rules}.items():
            check_field(key, getattr(self, key), rule)
        self._check_consistency()

    def _check_consistency(self) -> None:
        """Checks across fields; families add theirs."""

    def _set_fields(self, kwargs: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Set a family's own `fields`, in order; an alias among `kwargs` (`hidden_size=` for `n_embd`) wins over
        the parameter it names, as in Hugging Face. Returns the other kwargs, for `PretrainedConfig.__init__`."""
        kwargs = {type(self).attribute_map.get(k, k): v for k, v in kwargs.items()}
        for name, value in fields.items():
            setattr(self, name, kwargs.pop(name, value))
        return kwargs

    # ----------------------------------------------------------------------------------------- labels
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, num_labels: int) -> None:
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
            raise ConfigError(f"num_labels must be a positive int, got {num_labels!r}")
        if getattr(self, "id2label", None) is None or len(self.id2label) != num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict and not self.torchscript

    # Stored as `_name_or_path`, the key Hugging Face writes to config.json.
    name_or_path = StoredAs(lambda value, name: str(value), "Where the config was loaded from.")

    # ----------------------------------------------------------------------------------------- dicts
    def to_dict(self) -> dict[str, Any]:
        """All attributes as a JSON-ready dict (aliases resolved, runtime-only fields dropped)."""
        output = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in _NOT_SERIALIZED}
        output["model_type"] = self.model_type
        output["transformers_version"] = COMPATIBLE_TRANSFORMERS_VERSION
        return output

    def to_diff_dict(self) -> dict[str, Any]:
        """The keys Hugging Face writes to config.json: model-specific ones, and those off their defaults."""
        base_defaults = {**_COMMON_DEFAULTS, **GENERATION_DEFAULTS, "id2label": {0: "LABEL_0", 1: "LABEL_1"}}
        base_defaults["label2id"] = {"LABEL_0": 0, "LABEL_1": 1}
        class_defaults = type(self)().to_dict()
        diff = {}
        for key, value in self.to_dict().items():
            if (
                key not in base_defaults
                or key == "transformers_version"
                or value != base_defaults[key]
                or (key in class_defaults and value != class_defaults[key])
            ):
                diff[key] = value
        return diff

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> PretrainedConfig:
        """Build a config from a dict (a parsed config.json); `kwargs` override its values."""
        return cls(**{**config_dict, **kwargs})

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, key, value)

    def to_json_string(self, use_diff: bool = True) -> str:
        config_dict = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(config_dict, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        atomic_write_text(json_file_path, self.to_json_string(use_diff=use_diff))

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> PretrainedConfig:
        with _naming_file(json_file):
            return cls.from_dict(_read_json(json_file))

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write `config.json` into `save_directory` (created if needed); returns the file path."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory!r} is a file, expected a directory")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        self.to_json_file(path)
        return path

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, return_unused_kwargs: bool = False, **kwargs: Any
    ) -> PretrainedConfig:
        """Load `config.json` from a directory, a file path or a Hugging Face Hub id.

        `revision`, `cache_dir`, `local_files_only` and `token` go to the Hub download (`resolve_file`); other
        keyword arguments that name config attributes override the file's values.
        """
        path = str(pretrained_model_name_or_path)
        hub = pop_hub_arguments(kwargs)
        config_file = path if os.path.isfile(path) else resolve_file(path, CONFIG_NAME, **hub)
        config_dict = _read_json(config_file)
        model_type = config_dict.get("model_type")
        if cls.model_type and model_type and model_type != cls.model_type:
            raise ConfigError(
                f"{config_file} has model_type {model_type!r}, which {cls.__name__} "
                f"(model_type {cls.model_type!r}) cannot load; use AutoConfig"
            )
        with _naming_file(config_file):
            config = cls.from_dict(config_dict)
        unused = {}
        for key, value in kwargs.items():
            if hasattr(config, key):
                setattr(config, key, value)
            else:
                unused[key] = value
        config.validate()  # the overrides too
        return (config, unused) if return_unused_kwargs else config

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string(use_diff=False)}"


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    except FileNotFoundError as err:
        raise CheckpointError(f"config file not found: {path}") from err
    except RecursionError as err:
        raise CheckpointError(f"{path} is nested too deeply to be a config") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


@contextlib.contextmanager
def _naming_file(path: str | os.PathLike) -> Iterator[None]:
    """Add the file's name to a ConfigError raised while building a config from it; a field of the wrong type
    that a check does not cover yet (a TypeError deep in a comparison) becomes a ConfigError too."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: a field has the wrong type: {err}") from err


def _check_activation(activation_function: str) -> None:
    if activation_function not in ACTIVATIONS:
        raise ConfigError(
            f"activation_function {activation_function!r} is not supported; choose one of {', '.join(ACTIVATIONS)}"
        )


def _check_heads(hidden: int, heads: int, hidden_name: str, heads_name: str) -> None:
    if hidden % heads != 0:
        raise ConfigError(f"{hidden_name}={hidden} must be divisible by {heads_name}={heads}")


_SHARED_RULES = {
    "vocab_size": "positive int",
    "activation_function": "str",
    "layer_norm_epsilon": "positive float",
    "initializer_range": "non-negative float",
    "use_cache": "bool",
}


class GPT2Config(PretrainedConfig):
    """Configuration of GPT-2 models; the defaults give `gpt2` (124M).

    Args:
        vocab_size: number of tokens. n_positions: longest sequence (position table size).
        n_embd: hidden size D. n_layer: number of blocks. n_head: attention heads H.
        n_inner: MLP width (None → 4·n_embd). activation_function: one of `ACTIVATIONS`.
        resid_pdrop, embd_pdrop, attn_pdrop: dropout rates. layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: std of the normal init. summary_type ('last', 'first', 'mean', 'cls_index'),
        summary_use_proj, summary_activation ('tanh' or None), summary_proj_to_labels,
        summary_first_dropout: the multiple-choice head of `GPT2DoubleHeadsModel`.
        scale_attn_weights: divide scores by sqrt(head dim). use_cache: return key/value caches.
        scale_attn_by_inverse_layer_idx: also divide scores by (layer index + 1).
        reorder_and_upcast_attn: compute scores in float32 with the scale applied before the product.
    """

    model_type = "gpt2"
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }
    field_rules = {
        **_SHARED_RULES,
        **dict.fromkeys(("n_positions", "n_embd", "n_layer", "n_head"), "positive int"),
        "n_inner": "optional positive int",
        **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"), "probability"),
        "summary_type": "str",
        "summary_activation": "optional str",
        **dict.fromkeys(("summary_use_proj", "summary_proj_to_labels", "scale_attn_weights",
                         "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"), "bool"),
    }

    def __init__(
        self,
        vocab_size: int = 50257,
        n_positions: int = 1024,
        n_embd: int = 768,
        n_layer: int = 12,
        n_head: int = 12,
        n_inner: int | None = None,
        activation_function: str = "gelu_new",
        resid_pdrop: float = 0.1,
        embd_pdrop: float = 0.1,
        attn_pdrop: float = 0.1,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        summary_type: str = "cls_index",
        summary_use_proj: bool = True,
        summary_activation: str | None = None,
        summary_proj_to_labels: bool = True,
        summary_first_dropout: float = 0.1,
        scale_attn_weights: bool = True,
        use_cache: bool = True,
        bos_token_id: int = 50256,
        eos_token_id: int = 50256,
        scale_attn_by_inverse_layer_idx: bool = False,
        reorder_and_upcast_attn: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs = self._set_fields(
            kwargs, vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            n_inner=n_inner, activation_function=activation_function, resid_pdrop=resid_pdrop, embd_pdrop=embd_pdrop,
            attn_pdrop=attn_pdrop, layer_norm_epsilon=layer_norm_epsilon, initializer_range=initializer_range,
            summary_type=summary_type, summary_use_proj=summary_use_proj, summary_activation=summary_activation,
            summary_first_dropout=summary_first_dropout, summary_proj_to_labels=summary_proj_to_labels,
            scale_attn_weights=scale_attn_weights, use_cache=use_cache,
            scale_attn_by_inverse_layer_idx=scale_attn_by_inverse_layer_idx,
            reorder_and_upcast_attn=reorder_and_upcast_attn,
        )
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)

    def _check_consistency(self) -> None:
        _check_activation(self.activation_function)
        _check_heads(self.n_embd, self.n_head, "n_embd", "n_head")
        if self.summary_type not in ("last", "first", "mean", "cls_index"):
            raise ConfigError(
                f"summary_type must be 'last', 'first', 'mean' or 'cls_index', got {self.summary_type!r}"
            )


class GPTJConfig(PretrainedConfig):
    """Configuration of GPT-J models; the defaults give EleutherAI/gpt-j-6B.

    Args:
        vocab_size, n_positions, n_embd, n_layer, n_head, n_inner, activation_function, resid_pdrop,
        embd_pdrop, attn_pdrop, layer_norm_epsilon, initializer_range, use_cache: as in `GPT2Config`.
        rotary_dim: leading dims of each head that get the rotary position embedding (None → all).
        tie_word_embeddings: GPT-J's `lm_head` is its own matrix (with a bias) by default.
    """

    model_type = "gptj"
    attribute_map = GPT2Config.attribute_map
    field_rules = {
        **_SHARED_RULES,
        **dict.fromkeys(("n_positions", "n_embd", "n_layer", "n_head"), "positive int"),
        **dict.fromkeys(("n_inner", "rotary_dim"), "optional positive int"),
        **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), "probability"),
    }

    def __init__(
        self,
        vocab_size: int = 50400,
        n_positions: int = 2048,
        n_embd: int = 4096,
        n_layer: int = 28,
        n_head: int = 16,
        rotary_dim: int | None = 64,
        n_inner: int | None = None,
        activation_function: str = "gelu_new",
        resid_pdrop: float = 0.0,
        embd_pdrop: float = 0.0,
        attn_pdrop: float = 0.0,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        bos_token_id: int = 50256,
        eos_token_id: int = 50256,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs = self._set_fields(
            kwargs, vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            n_inner=n_inner, rotary_dim=rotary_dim, activation_function=activation_function, resid_pdrop=resid_pdrop,
            embd_pdrop=embd_pdrop, attn_pdrop=attn_pdrop, layer_norm_epsilon=layer_norm_epsilon,
            initializer_range=initializer_range, use_cache=use_cache,
        )
        super().__init__(
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs
        )

    def _check_consistency(self) -> None:
        _check_activation(self.activation_function)
        _check_heads(self.n_embd, self.n_head, "n_embd", "n_head")
        head_dim = self.n_embd // self.n_head
        if self.rotary_dim is not None and (self.rotary_dim > head_dim or self.rotary_dim % 2):
            raise ConfigError(f"rotary_dim={self.rotary_dim} must be even and in (0, head dim {head_dim}]")


class GPTNeoConfig(PretrainedConfig):
    """Configuration of GPT-Neo models; the defaults give EleutherAI/gpt-neo-1.3B.

    Args:
        vocab_size, max_position_embeddings, hidden_size, num_layers, num_heads, intermediate_size
        (None → 4·hidden_size), activation_function, layer_norm_epsilon, initializer_range, use_cache.
        attention_types: `[[["global", "local"], n], ...]`, expanded into `attention_layers` (one entry per
            layer; its length must equal `num_layers`).
        window_size: how many positions (the query's own included) a `local` layer sees.
        resid_dropout, embed_dropout, attention_dropout, classifier_dropout: dropout rates.
    """

    model_type = "gpt_neo"
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}
    field_rules = {
        **_SHARED_RULES,
        **dict.fromkeys(("max_position_embeddings", "hidden_size", "num_layers", "num_heads", "window_size"),
                        "positive int"),
        "intermediate_size": "optional positive int",
        **dict.fromkeys(("resid_dropout", "embed_dropout", "attention_dropout"), "probability"),
        "classifier_dropout": "optional probability",
    }

    def __init__(
        self,
        vocab_size: int = 50257,
        max_position_embeddings: int = 2048,
        hidden_size: int = 2048,
        num_layers: int = 24,
        attention_types: list | None = None,
        num_heads: int = 16,
        intermediate_size: int | None = None,
        window_size: int = 256,
        activation_function: str = "gelu_new",
        resid_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        classifier_dropout: float = 0.1,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        bos_token_id: int = 50256,
        eos_token_id: int = 50256,
        **kwargs: Any,
    ) -> None:
        if attention_types is None:
            attention_types = [[["global", "local"], 12]]
        attention_layers = self.expand_attention_types_params(attention_types)
        given_layers = kwargs.pop("attention_layers", None)
        if given_layers is not None and (not isinstance(given_layers, (list, tuple))
                                         or list(given_layers) != attention_layers):
            raise ConfigError(
                f"attention_layers {given_layers} disagrees with attention_types {attention_types} "
                f"(which expand to {attention_layers})"
            )
        kwargs = self._set_fields(
            kwargs, vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, hidden_size=hidden_size,
            num_layers=num_layers, num_heads=num_heads, intermediate_size=intermediate_size, window_size=window_size,
            activation_function=activation_function, resid_dropout=resid_dropout, embed_dropout=embed_dropout,
            attention_dropout=attention_dropout, classifier_dropout=classifier_dropout,
            layer_norm_epsilon=layer_norm_epsilon, initializer_range=initializer_range, use_cache=use_cache,
            attention_types=attention_types, attention_layers=attention_layers,
        )
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)

    def _check_consistency(self) -> None:
        _check_activation(self.activation_function)
        _check_heads(self.hidden_size, self.num_heads, "hidden_size", "num_heads")
        if len(self.attention_layers) != self.num_layers:
            raise ConfigError(
                "Configuration for convolutional module is incorrect: len(config.attention_layers) "
                f"= {len(self.attention_layers)} must equal num_layers = {self.num_layers} "
                f"(attention_types={self.attention_types})"
            )

    @staticmethod
    def expand_attention_types_params(attention_types: list) -> list[str]:
        """`[[["global", "local"], 2]]` → `["global", "local", "global", "local"]`."""
        layers: list[str] = []
        if not isinstance(attention_types, (list, tuple)):
            raise ConfigError(f"attention_types={attention_types!r} is invalid: expected [[[types...], repeat], ...]")
        for entry in attention_types:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], (list, tuple))
                    and isinstance(entry[1], int) and not isinstance(entry[1], bool) and 0 <= entry[1] <= 10_000):
                raise ConfigError(f"attention_types entries must be [[types...], repeat], got {entry!r}")
            kinds, repeat = entry
            for kind in kinds:
                if kind not in ("global", "local"):
                    raise ConfigError(f"attention type must be 'global' or 'local', got {kind!r}")
            layers.extend(list(kinds) * repeat)
        return layers


CONFIG_MAPPING: dict[str, type[PretrainedConfig]] = {
    "gpt2": GPT2Config,
    "gptj": GPTJConfig,
    "gpt_neo": GPTNeoConfig,
}


class AutoConfig:
    """Picks the config class from `model_type` in config.json."""

    def __init__(self) -> None:
        raise OSError("AutoConfig is not instantiated; use AutoConfig.from_pretrained or AutoConfig.for_model")

    @staticmethod
    def config_class(model_type: str | None, source: str = "") -> type[PretrainedConfig]:
        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            where = f" in {source}" if source else ""
            raise ConfigError(
                f"Unrecognized model_type {model_type!r}{where}; twinformers supports "
                f"{', '.join(sorted(CONFIG_MAPPING))}"
            )
        return CONFIG_MAPPING[model_type]

    @classmethod
    def for_model(cls, model_type: str, **kwargs: Any) -> PretrainedConfig:
        return cls.config_class(model_type)(**kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> PretrainedConfig:
        path = str(pretrained_model_name_or_path)
        hub = pop_hub_arguments(kwargs)
        config_file = path if os.path.isfile(path) else resolve_file(path, CONFIG_NAME, **hub)
        model_type = _read_json(config_file).get("model_type")
        return cls.config_class(model_type, config_file).from_pretrained(config_file, **kwargs)


def classifier_dropout(config: PretrainedConfig) -> float:
    """Dropout before a token-classification head: `config.classifier_dropout` when set, else 0.1 (as HF)."""
    rate = getattr(config, "classifier_dropout", None)
    return 0.1 if rate is None else float(rate)


def residual_init_std(config: PretrainedConfig) -> float:
    """GPT-2's scaled init of the residual projections (`c_proj`): initializer_range / √(2·n_layer)."""
    return config.initializer_range / math.sqrt(2 * config.num_hidden_layers)


def resolve_model_config(
    model_name: str,
    config_class: type[PretrainedConfig],
    path: str,
    config: PretrainedConfig | str | os.PathLike | None,
    hub: dict[str, Any],
    config_kwargs: dict[str, Any],
) -> PretrainedConfig:
    """The config a model's `from_pretrained(path, config=..., **config_kwargs)` builds, in every backend.

    `config` None or a path: read it (or `path`'s config.json) with `config_kwargs` as overrides; a config object:
    a copy with the overrides applied. Keyword arguments that are no config attribute raise TypeError naming
    `model_name.from_pretrained`. The result's `name_or_path` is `path`.
    """
    if config is None or isinstance(config, (str, os.PathLike)):
        config, unused = config_class.from_pretrained(
            config if config is not None else path, return_unused_kwargs=True, **hub, **config_kwargs
        )
    else:
        config = copy.deepcopy(config)
        unused = {k: v for k, v in config_kwargs.items() if not hasattr(config, k)}
        config.update({k: v for k, v in config_kwargs.items() if k not in unused})
    if unused:
        raise TypeError(f"{model_name}.from_pretrained got unexpected keyword arguments {sorted(unused)}")
    config.name_or_path = path
    return config
