import glob
import os

import pytest

from helpers import FIXTURES
from twinformers import AutoConfig, GenerationConfig, GPT2Config

EXAMPLES = sorted(glob.glob(os.path.join(FIXTURES, "config-examples", "*.generation_config.json")))


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_hf_generation_config_round_trips(path, tmp_path):
    with open(path) as f:
        original = f.read()
    config = GenerationConfig.from_pretrained(path)
    assert config.to_json_string() == original
    config.save_pretrained(tmp_path)
    assert (tmp_path / "generation_config.json").read_text() == original


def test_from_model_config_matches_hf_file():
    model_config = AutoConfig.from_pretrained(os.path.join(FIXTURES, "config-examples", "gpt2-causal_lm.config.json"))
    with open(os.path.join(FIXTURES, "config-examples", "gpt2-causal_lm.generation_config.json")) as f:
        expected = f.read()
    assert GenerationConfig.from_model_config(model_config).to_json_string() == expected


def test_generation_params_moved_from_model_config():
    model_config = GPT2Config(max_length=50, do_sample=True)
    generation = GenerationConfig.from_model_config(model_config)
    assert generation.max_length == 50 and generation.do_sample is True and generation.eos_token_id == 50256


def test_lengths():
    config = GenerationConfig(max_length=30)
    assert config.max_new_tokens_for(10) == 20 and config.max_new_tokens_for(40) == 0
    config.update(max_new_tokens=5, min_new_tokens=2)
    assert config.max_new_tokens_for(10) == 5 and config.min_new_tokens_for(10) == 2
    assert GenerationConfig(min_length=12).min_new_tokens_for(10) == 2
    assert GenerationConfig(eos_token_id=[1, 2]).eos_token_ids == [1, 2]
    assert GenerationConfig(eos_token_id=3).eos_token_ids == [3] and GenerationConfig().eos_token_ids == []


def test_update_returns_unused_and_unknown_keys_survive(tmp_path):
    config = GenerationConfig(custom_key=1)
    assert config.update(top_k=5, not_a_field=2) == {"not_a_field": 2}
    config.save_pretrained(tmp_path)
    loaded = GenerationConfig.from_pretrained(tmp_path)
    assert loaded.custom_key == 1 and loaded.top_k == 5 and loaded == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_p=0.0), "top_p must be in"),
        (dict(top_p=1.5), "top_p must be in"),
        (dict(do_sample=True, temperature=0.0), "temperature must be a float > 0"),
        (dict(num_beams=0), "num_beams"),
        (dict(num_return_sequences=3, num_beams=2), "num_return_sequences=3 needs num_beams >= 3"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(top_k=-2), "top_k"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
        (dict(bad_words_ids=[[]]), "bad_words_ids"),
        (dict(early_stopping="sometimes"), "early_stopping"),
    ],
)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**kwargs)


def test_sampling_allows_more_sequences_than_beams():
    assert GenerationConfig(do_sample=True, num_return_sequences=4).num_return_sequences == 4


def test_bad_file(tmp_path):
    (tmp_path / "generation_config.json").write_text("{oops")
    with pytest.raises(OSError, match="not valid JSON"):
        GenerationConfig.from_pretrained(tmp_path)
