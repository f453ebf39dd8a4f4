"""generate() of the PyTorch twins: processors vs NumPy references, strategies vs full-forward references."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import generation_cases as cases  # noqa: E402

from twinformers.pt import AutoModelForCausalLM, generation  # noqa: E402

_MODELS: dict = {}


def load(family: str):
    if family not in _MODELS:
        _MODELS[family] = AutoModelForCausalLM.from_pretrained(cases.fixture_dir(family))
    return _MODELS[family]


def logits(model, ids, mask=None):
    with torch.no_grad():
        mask = None if mask is None else torch.as_tensor(mask)
        return model(torch.as_tensor(ids), attention_mask=mask).logits.numpy()


def run_processor(processor, ids, scores, cur_len, mask):
    return processor(torch.as_tensor(ids), torch.as_tensor(scores), cur_len, torch.as_tensor(mask)).numpy()


ADAPTER = cases.Adapter(
    name="pt",
    load=load,
    logits=logits,
    generate=lambda model, ids, **kwargs: model.generate(torch.as_tensor(ids), **{
        k: torch.as_tensor(v) if k == "attention_mask" else v for k, v in kwargs.items()
    }),
    processor=lambda name, **kwargs: generation.PROCESSORS[name](**kwargs),
    run_processor=run_processor,
    seed_kwargs=lambda seed: {"seed": seed},
)


@pytest.mark.parametrize("name, kwargs, reference", cases.PROCESSOR_CASES, ids=lambda x: str(x)[:40])
def test_processor_matches_reference(name, kwargs, reference):
    cases.check_processor(ADAPTER, name, kwargs, reference)


def test_processor_list_from_generation_config():
    cases.check_processor_list_from_config(ADAPTER, generation)


@pytest.mark.parametrize("family", cases.FAMILIES)
def test_greedy_equals_argmax_loop_of_full_forwards(family):
    cases.check_greedy_matches_forward_loop(ADAPTER, family)


@pytest.mark.parametrize("family", cases.FAMILIES)
def test_left_padded_batch_generates_what_each_prompt_generates_alone(family):
    cases.check_left_padding_matches_alone(ADAPTER, family)


def test_left_padding_with_beams_and_penalties():
    cases.check_left_padding_matches_alone(ADAPTER, "gpt_neo", num_beams=2, repetition_penalty=1.5,
                                           no_repeat_ngram_size=2)


def test_eos_stops_rows_and_pads_them():
    cases.check_eos_stops_and_pads(ADAPTER, "gpt2")


@pytest.mark.parametrize("family", ["gpt2", "gptj"])
def test_sampling_is_seeded_and_filtered(family):
    cases.check_sampling(ADAPTER, family)
    cases.check_sampled_tokens_respect_filters(ADAPTER, family)


def test_generator_argument_and_global_seed():
    model, ids = load("gpt2"), torch.as_tensor(cases.prompts())
    kwargs = dict(do_sample=True, max_new_tokens=6, pad_token_id=0, top_k=0, temperature=2.0)
    first = model.generate(ids, generator=torch.Generator().manual_seed(11), **kwargs)
    assert torch.equal(first, model.generate(ids, generator=torch.Generator().manual_seed(11), **kwargs))
    torch.manual_seed(4)
    unseeded = model.generate(ids, **kwargs)
    torch.manual_seed(4)
    assert torch.equal(unseeded, model.generate(ids, **kwargs))


def test_greedy_scores_are_the_logits():
    cases.check_greedy_scores(ADAPTER, "gptj")


@pytest.mark.parametrize("family", cases.FAMILIES)
def test_beam_search_matches_reference(family):
    cases.check_beam_search(ADAPTER, family)


@pytest.mark.parametrize(
    "settings",
    [dict(length_penalty=0.5, early_stopping=True, eos_token_id=7), dict(length_penalty=2.0, early_stopping="never",
     eos_token_id=3, num_beams=4, num_return_sequences=4), dict(eos_token_id=12, length_penalty=-1.0)],
    ids=["early", "never", "negative-penalty"],
)
def test_beam_search_settings_match_reference(settings):
    cases.check_beam_search(ADAPTER, "gpt2", **settings)


def test_streamer_sees_prompt_then_each_token():
    cases.check_streamer(ADAPTER, "gpt2")


def test_bad_input():
    cases.check_bad_input(ADAPTER, "gpt2")
    with pytest.raises(TypeError, match="cannot generate"):
        from twinformers.pt import GPT2Model

        GPT2Model(load("gpt2").config).generate(torch.ones((1, 2), dtype=torch.long))


def test_static_cache_decoding_matches_eager_cache():
    """One token at a time through a StaticCache gives the tuple cache's logits at every position."""
    for family in cases.FAMILIES:
        model = load(family)
        ids = torch.as_tensor(cases.prompts(2, 7))
        mask = torch.ones_like(ids)
        mask[1, :2] = 0
        positions = torch.as_tensor(np.maximum(mask.cumsum(-1).numpy() - 1, 0))
        expected = model(ids, attention_mask=mask, position_ids=positions).logits
        cache = model.init_cache(2, 10)
        full_mask = torch.nn.functional.pad(mask, (0, 3), value=1)
        out = model(ids[:, :4], past_key_values=cache, attention_mask=full_mask, position_ids=positions[:, :4])
        steps = [out.logits]
        cache = out.past_key_values
        assert cache.index == 4
        for t in range(4, 7):
            out = model(ids[:, t : t + 1], past_key_values=cache, attention_mask=full_mask,
                        position_ids=positions[:, t : t + 1])
            cache = out.past_key_values
            steps.append(out.logits)
        actual = torch.cat(steps, dim=1)
        valid = mask.bool().numpy()
        np.testing.assert_allclose(actual.detach().numpy()[valid], expected.detach().numpy()[valid], atol=1e-5,
                                   err_msg=family)


# --------------------------------------------------------------------------------------------- issue 21
def test_stop_strings_and_stopping_criteria():
    cases.check_stop_strings_and_criteria(ADAPTER)


def test_user_logits_processor():
    cases.check_user_logits_processor(ADAPTER, lambda input_ids, scores: scores.index_fill(1, torch.tensor([14]),
                                                                                       -float("inf")))


def test_iterator_streamer_chunks_join_to_the_output():
    cases.check_iterator_streamer(ADAPTER)


def test_text_generation_pipeline():
    cases.check_text_generation_pipeline("pt")
