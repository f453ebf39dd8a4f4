"""Config values are checked for type, range and consistency; the ConfigError names the key, the value and the file
(through the API and the CLI)."""

import json

import numpy as np
import pytest

from twinformers.checkpoints.safetensors import write_safetensors
from twinformers.cli.main import main
from twinformers.configuration import AutoConfig, GPT2Config, GPTJConfig, GPTNeoConfig
from twinformers.errors import CheckpointError, ConfigError, TwinformersError

BAD_FIELDS = [
    ("gpt2", "n_head", "x"),
    ("gpt2", "n_layer", "2"),
    ("gpt2", "n_layer", -2),
    ("gpt2", "n_layer", 0),
    ("gpt2", "vocab_size", -1024),
    ("gpt2", "n_embd", 2.5),
    ("gpt2", "n_positions", True),
    ("gpt2", "n_inner", 0),
    ("gpt2", "resid_pdrop", 1.5),
    ("gpt2", "attn_pdrop", "0.1"),
    ("gpt2", "layer_norm_epsilon", 0),
    ("gpt2", "initializer_range", -0.02),
    ("gpt2", "use_cache", "yes"),
    ("gpt2", "scale_attn_weights", 1),
    ("gpt2", "eos_token_id", -1),
    ("gpt2", "bos_token_id", "50256"),
    ("gptj", "rotary_dim", -4),
    ("gptj", "n_head", None),
    ("gpt_neo", "num_heads", "16"),
    ("gpt_neo", "window_size", 0),
    ("gpt_neo", "classifier_dropout", 2),
    ("gpt_neo", "max_position_embeddings", []),
]


@pytest.mark.parametrize("model_type, key, value", BAD_FIELDS, ids=[f"{t}-{k}={v!r}" for t, k, v in BAD_FIELDS])
def test_bad_field_in_config_json_names_key_value_and_file(tmp_path, model_type, key, value):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, key: value}))
    with pytest.raises(ConfigError) as info:
        AutoConfig.from_pretrained(tmp_path)
    message = str(info.value)
    assert f"{key}={value!r}" in message and "config.json" in message, message
    assert isinstance(info.value, ValueError) and isinstance(info.value, TwinformersError)


@pytest.mark.parametrize(
    "config_class, kwargs, message",
    [
        (GPT2Config, dict(n_embd=30, n_head=4), "n_embd=30 must be divisible by n_head=4"),
        (GPTJConfig, dict(n_embd=32, n_head=4, rotary_dim=10), "rotary_dim=10 must be even and in"),
        (GPTNeoConfig, dict(num_layers=3, attention_types=[[["global", "local"], 2]]), "must equal num_layers = 3"),
        (GPTNeoConfig, dict(num_layers=2, attention_types="global"), "attention_types='global' is invalid"),
        (GPTNeoConfig, dict(num_layers=2, attention_types=[[["global"], "2"]]), "attention_types entries"),
        (GPT2Config, dict(id2label={"x": "A"}), "id2label"),
        (GPT2Config, dict(num_labels=0), "num_labels"),
    ],
)
def test_fields_checked_against_each_other(config_class, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        config_class(**kwargs)


def test_from_pretrained_overrides_are_checked(tmp_path):
    GPT2Config(n_embd=32, n_head=4).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="n_layer=-1"):
        GPT2Config.from_pretrained(tmp_path, n_layer=-1)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "\"gpt2\"", "\xff\xfe"])
def test_unreadable_config_json_is_a_checkpoint_error(tmp_path, text):
    (tmp_path / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match="config.json"):
        AutoConfig.from_pretrained(tmp_path)


def test_cli_reports_the_bad_field(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": -2}))
    write_safetensors(tmp_path / "model.safetensors", {"transformer.wte.weight": np.zeros((4, 2), np.float32)},
                      metadata={"format": "pt"})
    assert main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "n_layer=-2" in err and "config.json" in err and "Traceback" not in err
