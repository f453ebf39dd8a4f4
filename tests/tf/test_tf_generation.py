"""generate() of the TensorFlow twins: processors vs NumPy references, strategies vs full-forward references,
and the XLA-compiled `tf.while_loop` traced once per bucket."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import generation_cases as cases  # noqa: E402

from twinformers.tf import AutoModelForCausalLM, generation  # noqa: E402

_MODELS: dict = {}


def load(family: str):
    if family not in _MODELS:
        _MODELS[family] = AutoModelForCausalLM.from_pretrained(cases.fixture_dir(family))
    return _MODELS[family]


def logits(model, ids, mask=None):
    return model(np.asarray(ids), attention_mask=mask).logits.numpy()


def run_processor(processor, ids, scores, cur_len, mask):
    # Compiled, as inside the generation loop: cur_len is a scalar tensor there.
    run = tf.function(lambda ids, scores, cur_len, mask: processor(ids, scores, cur_len, mask), jit_compile=True)
    return run(tf.constant(ids, tf.int32), tf.constant(scores), tf.constant(cur_len), tf.constant(mask, tf.int32)
               ).numpy()


ADAPTER = cases.Adapter(
    name="tf",
    load=load,
    logits=logits,
    generate=lambda model, ids, **kwargs: model.generate(np.asarray(ids), **kwargs),
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


def test_eos_stops_rows_and_pads_them():
    cases.check_eos_stops_and_pads(ADAPTER, "gpt2")


def test_sampling_is_seeded_and_filtered():
    cases.check_sampling(ADAPTER, "gpt_neo")
    cases.check_sampled_tokens_respect_filters(ADAPTER, "gpt_neo")


def test_greedy_scores_are_the_logits():
    cases.check_greedy_scores(ADAPTER, "gptj")


@pytest.mark.parametrize("family", cases.FAMILIES)
def test_beam_search_matches_reference(family):
    cases.check_beam_search(ADAPTER, family)


def test_beam_search_with_eos_and_never_stopping_matches_reference():
    cases.check_beam_search(ADAPTER, "gptj", length_penalty=2.0, early_stopping="never", eos_token_id=3)


def test_streamer_sees_prompt_then_each_token():
    cases.check_streamer(ADAPTER, "gpt2")


def test_bad_input():
    cases.check_bad_input(ADAPTER, "gpt2")


def test_compiled_loop_is_traced_once_per_bucket():
    """Prompts of 5 and 9 tokens share the 16-token bucket: the second call reuses the compiled loop (and a
    new seed is an input, not a retrace); a prompt of 17 tokens is a new bucket."""
    model = AutoModelForCausalLM.from_pretrained(cases.fixture_dir("gpt2"))  # a fresh model: count from zero
    ids = cases.prompts(2, 17)
    first = model.generate(ids[:, :5], max_new_tokens=6, pad_token_id=0)
    assert model.generate_trace_count == 1
    second = model.generate(ids[:, :9], max_new_tokens=6, pad_token_id=0)
    assert model.generate_trace_count == 1, "a second call in the same bucket must not retrace"
    model.generate(ids, max_new_tokens=6, pad_token_id=0)
    assert model.generate_trace_count == 2
    model.generate(ids[:, :5], max_new_tokens=6, pad_token_id=0, do_sample=True, seed=1)
    model.generate(ids[:, :7], max_new_tokens=6, pad_token_id=0, do_sample=True, seed=2)
    assert model.generate_trace_count == 3
    assert first.shape == (2, 11) and second.shape == (2, 15)
    np.testing.assert_array_equal(second, load("gpt2").generate(ids[:, :9], max_new_tokens=6, pad_token_id=0))


def test_beam_search_after_another_batch_size():
    """Compiled beam-search programs close over the batch size: a batch of 3 after a batch of 1 (same prompt
    bucket) must not reuse the batch-1 program, and every row equals the single-row result."""
    model = load("gpt2")
    prompt = np.array([[5, 9, 2, 7]])
    single = np.asarray(model.generate(prompt, num_beams=2, max_new_tokens=3, pad_token_id=0))
    batch = np.asarray(model.generate(np.repeat(prompt, 3, axis=0), attention_mask=np.ones((3, 4), np.int32),
                                      num_beams=2, max_new_tokens=3, pad_token_id=0))
    np.testing.assert_array_equal(batch, np.repeat(single, 3, axis=0))


def test_streaming_step_compiles_once_for_every_position():
    """Streaming runs one compiled step per token. XLA folds a `tf.slice` start it can see as an argument into
    the program, which made every new position (cache index, cur_len) a new compilation: the step's compiled
    program must be the same for the first and the last position."""
    model = load("gpt2")
    ids = cases.prompts(1, 6)
    settings = dict(max_new_tokens=4, pad_token_id=0)
    programs = model.__dict__.get("_generation_programs", {})
    before = set(programs)
    model.generate(ids, streamer=cases.NullStreamer(), **settings)
    programs = model.__dict__["_generation_programs"]
    (step_key,) = [key for key in set(programs) - before if key[0] == "step"]  # this call's step program
    step = programs[step_key]
    states = []
    programs[step_key] = lambda state: states.append(state) or step(state)
    try:
        model.generate(ids, streamer=cases.NullStreamer(), **settings)
    finally:
        programs[step_key] = step
    assert len(states) == 3 and int(states[0].cur_len) != int(states[-1].cur_len)
    first, last = (step.experimental_get_compiler_ir(state, None)(stage="hlo") for state in (states[0], states[-1]))
    assert first == last, "the compiled step depends on the position's value: it recompiles per token"


# --------------------------------------------------------------------------------------------- issue 21
def test_stop_strings_and_stopping_criteria():
    cases.check_stop_strings_and_criteria(ADAPTER)


def test_user_logits_processor():
    cases.check_user_logits_processor(ADAPTER, lambda input_ids, scores: tf.where(tf.range(scores.shape[-1]) == 14,
                                                                                  -float("inf"), scores))


def test_user_logits_processor_must_be_traceable():
    model = load("gpt2")
    with pytest.raises(TypeError, match="must be traceable"):
        model.generate(np.array([[5, 9]]), max_new_tokens=2, pad_token_id=0,
                       logits_processor=[lambda input_ids, scores: scores * float(scores.numpy().max())])


def test_iterator_streamer_chunks_join_to_the_output():
    cases.check_iterator_streamer(ADAPTER)


def test_text_generation_pipeline():
    cases.check_text_generation_pipeline("tf")


def test_stop_string_hits_match_the_host_check():
    run = tf.function(lambda tables, start, sequences, cur_len: generation.stop_string_hits(
        tables, start, sequences, cur_len), jit_compile=True)
    cases.check_stop_string_hits(lambda tables, start, sequences, cur_len: run(
        generation.StopStringTables(*(tf.constant(t) for t in tables)), tf.constant(start),
        tf.constant(sequences), tf.constant(cur_len)).numpy())


def test_stop_strings_run_inside_the_compiled_loop():
    cases.check_stop_strings_in_compiled_loop(ADAPTER, lambda model: model.__dict__["_generation_programs"])
