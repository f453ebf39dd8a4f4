"""Greedy generate() is token-identical across the PyTorch, TensorFlow and Flax twins (same checkpoint,
left-padded batch), and beam search agrees too."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
jax = pytest.importorskip("jax")

import generation_cases as cases  # noqa: E402

import twinformers.flax as fx  # noqa: E402
import twinformers.pt as pt  # noqa: E402
import twinformers.tf as tft  # noqa: E402


@pytest.mark.parametrize("family", cases.FAMILIES)
def test_greedy_and_beam_search_are_identical_across_backends(family):
    path = cases.fixture_dir(family)
    ids = cases.prompts(3, 9, seed=5)
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    ids = np.where(mask == 1, ids, 0)
    settings = dict(max_new_tokens=12, pad_token_id=0, repetition_penalty=1.3, no_repeat_ngram_size=3)
    models = {
        "pt": (pt.AutoModelForCausalLM.from_pretrained(path), lambda x: torch.as_tensor(x)),
        "tf": (tft.AutoModelForCausalLM.from_pretrained(path), lambda x: x),
        "flax": (fx.AutoModelForCausalLM.from_pretrained(path), lambda x: x),
    }
    results = {}
    for name, (model, wrap) in models.items():
        greedy = model.generate(wrap(ids), attention_mask=wrap(mask), **settings)
        beams = model.generate(wrap(ids), attention_mask=wrap(mask), num_beams=3, num_return_sequences=2,
                               **settings)
        results[name] = (cases.as_numpy(greedy), cases.as_numpy(beams))
    for name in ("tf", "flax"):
        np.testing.assert_array_equal(results[name][0], results["pt"][0], err_msg=f"greedy {name} vs pt")
        np.testing.assert_array_equal(results[name][1], results["pt"][1], err_msg=f"beam search {name} vs pt")


def test_pipeline_and_stop_strings_are_identical_across_backends():
    """The text-generation pipeline (left-padded batch, greedy) returns the same texts in all three backends,
    and a stop string ends generation at the same token in each (the stop lies inside the greedy output)."""
    results = {backend: cases.check_text_generation_pipeline(backend) for backend in ("pt", "tf", "flax")}
    batch, stopped = results["pt"]
    assert stopped[0]["generated_text"].endswith(".") and "." in stopped[0]["generated_text"]
    for backend in ("tf", "flax"):
        assert results[backend] == results["pt"], f"{backend} vs pt"


def test_stop_strings_stop_each_row_at_the_same_token_across_backends():
    """A left-padded batch with stop strings that span several tokens (and one that starts in the prompt):
    PyTorch checks them on the host, TensorFlow and Flax inside their compiled loops; the rows end alike."""
    tokenizer = cases.embedded_tokenizer()
    eos = tokenizer.eos_token_id
    encoded = [tokenizer.encode(t) for t in ("Once upon a time", "The king said")]
    width = max(len(e) for e in encoded)
    ids = np.asarray([[eos] * (width - len(e)) + e for e in encoded])
    mask = (np.arange(width)[None, :] >= width - np.asarray([len(e) for e in encoded])[:, None]).astype(np.int64)
    path = cases.fixture_dir("tiny-gpt2")
    models = {
        "pt": (pt.AutoModelForCausalLM.from_pretrained(path), lambda x: torch.as_tensor(x)),
        "tf": (tft.AutoModelForCausalLM.from_pretrained(path), lambda x: x),
        "flax": (fx.AutoModelForCausalLM.from_pretrained(path), lambda x: x),
    }
    for stops in (["signal", "-end"], ["time.", "ark"], ["allement", "ipled"]):
        results = {
            name: cases.as_numpy(model.generate(wrap(ids), attention_mask=wrap(mask), max_new_tokens=24,
                                                pad_token_id=eos, stop_strings=stops, tokenizer=tokenizer))
            for name, (model, wrap) in models.items()
        }
        assert results["pt"].shape[1] < width + 24, "the rows must stop early to test anything"
        for name in ("tf", "flax"):
            np.testing.assert_array_equal(results[name], results["pt"], err_msg=f"{stops}: {name} vs pt")
