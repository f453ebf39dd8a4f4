import glob
import json
import os

import pytest

from helpers import FIXTURES
from twinformers import AutoConfig, GPT2Config, GPTJConfig, GPTNeoConfig
from twinformers.configuration import CONFIG_MAPPING, PretrainedConfig

EXAMPLES = sorted(glob.glob(os.path.join(FIXTURES, "config-examples", "*.config.json")))


def test_examples_present():
    assert len(EXAMPLES) >= 15


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_hf_config_round_trips_byte_exact(path):
    """A config.json written by Hugging Face loads and is written back with the same bytes."""
    with open(path) as f:
        original = f.read()
    config = AutoConfig.from_pretrained(path)
    assert config.to_json_string() == original


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_hf_config_values(path):
    with open(path) as f:
        data = json.load(f)
    config = AutoConfig.from_pretrained(path)
    assert type(config) is CONFIG_MAPPING[data["model_type"]]
    for key, value in data.items():
        if key in ("transformers_version", "id2label"):
            continue
        assert getattr(config, key) == value, key
    expected_labels = len(data.get("id2label", {"0": 0, "1": 1}))
    assert config.num_labels == expected_labels


def test_defaults_match_seeds():
    gpt2 = GPT2Config()
    assert (gpt2.vocab_size, gpt2.n_positions, gpt2.n_embd, gpt2.n_layer, gpt2.n_head) == (50257, 1024, 768, 12, 12)
    assert gpt2.n_inner is None and gpt2.activation_function == "gelu_new" and gpt2.summary_type == "cls_index"
    assert gpt2.tie_word_embeddings and gpt2.bos_token_id == gpt2.eos_token_id == 50256
    gptj = GPTJConfig()
    assert (gptj.vocab_size, gptj.n_positions, gptj.n_embd, gptj.n_layer, gptj.n_head, gptj.rotary_dim) == (
        50400, 2048, 4096, 28, 16, 64)
    assert gptj.tie_word_embeddings is False and gptj.resid_pdrop == 0.0
    neo = GPTNeoConfig()
    assert (neo.vocab_size, neo.max_position_embeddings, neo.hidden_size, neo.num_layers, neo.num_heads) == (
        50257, 2048, 2048, 24, 16)
    assert neo.window_size == 256 and neo.classifier_dropout == 0.1
    assert neo.attention_layers == ["global", "local"] * 12


def test_attribute_aliases():
    config = GPT2Config(hidden_size=48, num_attention_heads=4, num_hidden_layers=3, max_position_embeddings=32)
    assert (config.n_embd, config.n_head, config.n_layer, config.n_positions) == (48, 4, 3, 32)
    config.hidden_size = 64
    assert config.n_embd == 64 and "hidden_size" not in config.to_dict()
    neo = GPTNeoConfig(num_attention_heads=4, hidden_size=32, num_hidden_layers=2,
                       attention_types=[[["global", "local"], 1]])
    assert neo.num_heads == 4 and neo.num_hidden_layers == 2


def test_labels_stay_consistent():
    config = GPT2Config(num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    config = GPT2Config(id2label={"0": "neg", "1": "pos"})
    assert config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}
    config.num_labels = 4
    assert len(config.id2label) == 4
    with pytest.raises(ValueError, match="num_labels"):
        GPT2Config(num_labels=3, id2label={0: "a", 1: "b"})


def test_unknown_keys_survive_round_trip(tmp_path):
    config = GPTJConfig(n_embd=32, n_head=4, rotary_dim=4, my_custom_field={"a": [1, 2]})
    config.save_pretrained(tmp_path)
    loaded = GPTJConfig.from_pretrained(tmp_path)
    assert loaded.my_custom_field == {"a": [1, 2]}
    assert loaded == config


def test_diff_dict_keeps_only_specific_or_changed_keys():
    config = GPT2Config(n_embd=32, n_head=4, pad_token_id=0, output_attentions=True)
    diff = config.to_diff_dict()
    assert diff["pad_token_id"] == 0 and diff["output_attentions"] is True
    assert "output_hidden_states" not in diff and "tie_word_embeddings" not in diff
    assert "tie_word_embeddings" in GPTJConfig().to_diff_dict()  # GPT-J's class default differs from the base


def test_from_pretrained_overrides_and_unused(tmp_path):
    GPT2Config(n_embd=32, n_head=4).save_pretrained(tmp_path)
    config, unused = GPT2Config.from_pretrained(tmp_path, n_layer=5, not_a_field=1, return_unused_kwargs=True)
    assert config.n_layer == 5 and unused == {"not_a_field": 1}


def test_autoconfig_dispatch_and_errors(tmp_path):
    for model_type, cls in CONFIG_MAPPING.items():
        assert isinstance(AutoConfig.for_model(model_type), cls)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="gpt2.*gpt_neo.*gptj"):
        AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'gptj'"):
        GPT2Config.from_pretrained(os.path.join(FIXTURES, "config-examples", "gptj-base.config.json"))


def test_bad_files(tmp_path):
    with pytest.raises(OSError, match="has no file named config.json"):
        AutoConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(OSError, match="not valid JSON"):
        GPT2Config.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(OSError, match="JSON object"):
        GPT2Config.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="neither an existing directory nor a valid Hub"):
        GPT2Config.from_pretrained(str(tmp_path / "missing" / "..." / "x y"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(activation_function="gelu_magic"), "activation_function 'gelu_magic' is not supported"),
        (dict(n_embd=30, n_head=4), "n_embd=30 must be divisible by n_head=4"),
        (dict(summary_type="attn"), "summary_type"),
        (dict(problem_type="ranking"), "problem_type"),
    ],
)
def test_gpt2_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPT2Config(**kwargs)


def test_gptj_rotary_validation():
    with pytest.raises(ValueError, match="rotary_dim=12"):
        GPTJConfig(n_embd=32, n_head=4, rotary_dim=12)
    with pytest.raises(ValueError, match="rotary_dim=3"):
        GPTJConfig(n_embd=32, n_head=4, rotary_dim=3)


def test_gpt_neo_attention_types():
    config = GPTNeoConfig(num_layers=3, attention_types=[[["global"], 1], [["local", "global"], 1]])
    assert config.attention_layers == ["global", "local", "global"]
    with pytest.raises(ValueError, match=r"len\(config.attention_layers\) = 4 must equal num_layers = 3"):
        GPTNeoConfig(num_layers=3, attention_types=[[["global", "local"], 2]])
    with pytest.raises(ValueError, match="'global' or 'local'"):
        GPTNeoConfig(num_layers=1, attention_types=[[["sparse"], 1]])
    with pytest.raises(ValueError, match="disagrees"):
        GPTNeoConfig(num_layers=2, attention_types=[[["global", "local"], 1]], attention_layers=["local", "local"])


def test_base_config_is_generic():
    config = PretrainedConfig(foo=1)
    assert config.foo == 1 and config.num_labels == 2 and config.use_return_dict
    with pytest.raises(AttributeError):
        _ = config.does_not_exist
