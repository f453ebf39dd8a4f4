"""generate() of the Flax twins: processors vs NumPy references, strategies vs full-forward references, and
the jitted `lax.while_loop` compiled once per bucket."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import generation_cases as cases  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from twinformers.flax import AutoModelForCausalLM, generation  # noqa: E402

_MODELS: dict = {}


def load(family: str):
    if family not in _MODELS:
        _MODELS[family] = AutoModelForCausalLM.from_pretrained(cases.fixture_dir(family))
    return _MODELS[family]


def logits(model, ids, mask=None):
    return np.asarray(model(np.asarray(ids), attention_mask=mask).logits)


def run_processor(processor, ids, scores, cur_len, mask):
    # Traced, as inside the compiled loop: cur_len is an abstract scalar there.
    run = jax.jit(lambda ids, scores, cur_len, mask: processor(ids, scores, cur_len, mask))
    return np.asarray(run(jnp.asarray(ids), jnp.asarray(scores), jnp.asarray(cur_len), jnp.asarray(mask)))


ADAPTER = cases.Adapter(
    name="flax",
    load=load,
    logits=logits,
    generate=lambda model, ids, **kwargs: model.generate(np.asarray(ids), **kwargs),
    processor=lambda name, **kwargs: generation.PROCESSORS[name](**kwargs),
    run_processor=run_processor,
    seed_kwargs=lambda seed: {"prng_key": jax.random.PRNGKey(seed)},
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


def test_eos_stops_rows_and_pads_them():
    cases.check_eos_stops_and_pads(ADAPTER, "gpt2")


def test_sampling_is_seeded_and_filtered():
    cases.check_sampling(ADAPTER, "gptj")
    cases.check_sampled_tokens_respect_filters(ADAPTER, "gptj")
    model, ids = load("gptj"), cases.prompts()
    kwargs = dict(do_sample=True, max_new_tokens=5, pad_token_id=0, top_k=0, temperature=2.0)
    np.testing.assert_array_equal(model.generate(ids, seed=3, **kwargs),
                                  model.generate(ids, prng_key=jax.random.PRNGKey(3), **kwargs))


def test_greedy_scores_are_the_logits():
    cases.check_greedy_scores(ADAPTER, "gpt_neo")


@pytest.mark.parametrize("family", cases.FAMILIES)
def test_beam_search_matches_reference(family):
    cases.check_beam_search(ADAPTER, family)


def test_beam_search_with_eos_and_early_stopping_matches_reference():
    cases.check_beam_search(ADAPTER, "gpt2", length_penalty=0.5, early_stopping=True, eos_token_id=7)


def test_streamer_sees_prompt_then_each_token():
    cases.check_streamer(ADAPTER, "gpt2")


def test_bad_input():
    cases.check_bad_input(ADAPTER, "gpt2")


def test_compiled_loop_is_traced_once_per_bucket():
    """Prompts of 5 and 9 tokens share the 16-token bucket: the second call reuses the compiled loop; a
    prompt of 17 tokens is a new bucket."""
    model = AutoModelForCausalLM.from_pretrained(cases.fixture_dir("gpt2"))  # a fresh model: count from zero
    ids = cases.prompts(2, 17)
    first = model.generate(ids[:, :5], max_new_tokens=6, pad_token_id=0)
    assert model.generate_trace_count == 1
    second = model.generate(ids[:, :9], max_new_tokens=6, pad_token_id=0)
    assert model.generate_trace_count == 1, "a second call in the same bucket must not retrace"
    model.generate(ids[:, :5], max_new_tokens=6, pad_token_id=0)
    assert model.generate_trace_count == 1
    model.generate(ids, max_new_tokens=6, pad_token_id=0)
    assert model.generate_trace_count == 2
    assert first.shape == (2, 11) and second.shape == (2, 15)
    reference = load("gpt2")
    np.testing.assert_array_equal(second, reference.generate(ids[:, :9], max_new_tokens=6, pad_token_id=0))


def test_beam_search_after_another_batch_size():
    """Compiled beam-search programs close over the batch size: a batch of 3 after a batch of 1 (same prompt
    bucket) must not reuse the batch-1 program, and every row equals the single-row result."""
    model = load("gpt2")
    prompt = np.array([[5, 9, 2, 7]])
    single = np.asarray(model.generate(prompt, num_beams=2, max_new_tokens=3, pad_token_id=0))
    batch = np.asarray(model.generate(np.repeat(prompt, 3, axis=0), attention_mask=np.ones((3, 4), np.int32),
                                      num_beams=2, max_new_tokens=3, pad_token_id=0))
    np.testing.assert_array_equal(batch, np.repeat(single, 3, axis=0))



def test_generation_programs_are_traced_without_host_callbacks(monkeypatch):
    """generate() and the model's own call check the ids on the host (and every new token indexes the
    scores), so their programs are traced without the model's in-graph id check: that check's host callback
    cost JAX's fast dispatch path and a conditional per decoding step (generate() ran 25% slower than the
    linen twin, a step of a hand-written decoding loop 3x slower on a tiny model)."""
    model = AutoModelForCausalLM.from_pretrained(cases.fixture_dir("gpt2"))  # a fresh model: its programs trace now
    callbacks = []
    monkeypatch.setattr(jax.debug, "callback", lambda *args, **kwargs: callbacks.append(args))
    ids = cases.prompts(2, 5)
    model.generate(ids, max_new_tokens=3, pad_token_id=0)  # the compiled loop
    model.generate(ids, max_new_tokens=3, pad_token_id=0, num_beams=2)  # the beam-search programs
    model(ids, past_key_values=model.init_cache(2, 8))  # the wrapper's program (a decoding loop's step)
    assert callbacks == []
    with pytest.raises(ValueError, match="outside \\[0, vocab_size="):  # the wrapper's host check
        model(ids + 10**6)
    jax.jit(lambda ids: model(ids).logits)(ids)  # the model called in a user's jit keeps its check
    assert callbacks
    with pytest.raises(ValueError, match="outside \\[0, vocab_size="):  # and generate() its host check
        model.generate(ids + 10**6, max_new_tokens=3, pad_token_id=0)

# --------------------------------------------------------------------------------------------- issue 21
def test_stop_strings_and_stopping_criteria():
    cases.check_stop_strings_and_criteria(ADAPTER)


def test_user_logits_processor():
    cases.check_user_logits_processor(ADAPTER, lambda input_ids, scores: scores.at[:, 14].set(-jnp.inf))


def test_user_logits_processor_must_be_traceable():
    model = load("gpt2")
    with pytest.raises(TypeError, match="must be traceable"):
        model.generate(np.array([[5, 9]]), max_new_tokens=2, pad_token_id=0,
                       logits_processor=[lambda input_ids, scores: scores * float(scores.max())])


def test_iterator_streamer_chunks_join_to_the_output():
    cases.check_iterator_streamer(ADAPTER)


def test_text_generation_pipeline():
    cases.check_text_generation_pipeline("flax")


def test_stop_string_hits_match_the_host_check():
    run = jax.jit(generation.stop_string_hits)
    cases.check_stop_string_hits(lambda tables, start, sequences, cur_len: np.asarray(run(
        generation.StopStringTables(*(jnp.asarray(t) for t in tables)), jnp.asarray(start), jnp.asarray(sequences),
        jnp.asarray(cur_len))))


def test_stop_strings_run_inside_the_compiled_loop():
    cases.check_stop_strings_in_compiled_loop(ADAPTER, lambda model: model._generate_cache)
