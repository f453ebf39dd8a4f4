"""The framework-free half of generate(): argument resolution, processor plan, buckets, beam bookkeeping,
streamers."""

import io
import warnings

import numpy as np
import pytest

from helpers import tiny_config
from twinformers import GenerationConfig
from twinformers.generation.streamers import TextStreamer
from twinformers.generation.utils import (
    BeamHypotheses,
    BeamSearchScorer,
    bucket_length,
    left_pad,
    logits_processor_specs,
    prepare_generation,
)

CONFIG = tiny_config("gpt2", eos_token_id=5, bos_token_id=4)  # 97 tokens, 19 positions


def plan(input_ids, attention_mask=None, **kwargs):
    return prepare_generation(CONFIG, GenerationConfig.from_model_config(CONFIG), input_ids, attention_mask, **kwargs)


def test_lengths_modes_and_expansion():
    p = plan([[1, 2, 3], [4, 6, 7]], max_new_tokens=4, do_sample=True, num_return_sequences=2, pad_token_id=0)
    assert (p.mode, p.max_new_tokens, p.rows_per_prompt, p.pad_token_id, p.eos_token_ids) == ("sample", 4, 2, 0, [5])
    np.testing.assert_array_equal(p.expand(p.input_ids)[:, 0], [1, 1, 4, 4])  # each prompt's rows adjacent
    assert plan([[1, 2]], max_length=10, pad_token_id=0).max_new_tokens == 8
    assert plan([[1, 2]], max_length=10, min_length=5, pad_token_id=0).min_new_tokens == 3
    assert plan([[1, 2]], num_beams=3, num_return_sequences=2, max_length=9, pad_token_id=0).mode == "beam"
    with pytest.raises(ValueError, match="is 20 positions"):
        plan([[1]], pad_token_id=0)  # max_length defaults to 20: one more than the 19 positions
    np.testing.assert_array_equal(plan(None, pad_token_id=0, max_length=5).input_ids, [[4]])  # starts from bos


def test_attention_mask_is_inferred_from_the_pad_token_in_a_batch():
    p = plan([[0, 0, 3], [1, 2, 3]], pad_token_id=0, max_new_tokens=1)
    np.testing.assert_array_equal(p.attention_mask, [[0, 0, 1], [1, 1, 1]])
    p = plan([[0, 2, 3]], pad_token_id=0, max_new_tokens=1)  # one row: 0 is a token, as in Hugging Face
    np.testing.assert_array_equal(p.attention_mask, [[1, 1, 1]])


def test_hf_compatible_warnings():
    with pytest.warns(UserWarning, match=r"Both `max_new_tokens` \(=3\) and `max_length`\(=9\)"):
        assert plan([[1]], max_new_tokens=3, max_length=9, pad_token_id=0).max_new_tokens == 3
    with pytest.warns(UserWarning, match="Setting `pad_token_id` to `eos_token_id`:5"):
        plan([[1]], max_new_tokens=1)
    with pytest.warns(UserWarning, match="right-padding was detected"):
        plan([[1, 2], [3, 0]], attention_mask=[[1, 1], [1, 0]], pad_token_id=0, max_new_tokens=1)
    with pytest.warns(UserWarning, match="Input length of input_ids is 4, but `max_length` is set to 3"):
        assert plan([[1, 2, 3, 4]], max_length=3, pad_token_id=0).max_new_tokens == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan([[1]], max_new_tokens=1, pad_token_id=0)  # nothing to warn about


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ([[1, 2, 3]], dict(max_new_tokens=17, pad_token_id=0), r"prompt \(3 tokens\) plus max_new_tokens=17 is 20"),
        ([[1, 2]], dict(num_return_sequences=2, pad_token_id=0), "num_return_sequences=2 needs num_beams >= 2"),
        ([[1, 2]], dict(num_beams=2, do_sample=True, pad_token_id=0), "beam sampling"),
        ([[1, 2], [0, 3]], dict(attention_mask=[[1, 1], [0, 1]], eos_token_id=None), "needs a pad_token_id"),
        ([[1, 97]], dict(pad_token_id=0), r"input_ids contains 97, outside \[0, vocab_size=97\)"),
        ([[1, 2]], dict(attention_mask=[[1, 1, 1]], pad_token_id=0), "attention_mask has shape"),
        ([[1, 2]], dict(attention_mask=[[0, 0]], pad_token_id=0), "no real token"),
        ([1, 2], dict(pad_token_id=0), "non-empty"),
        ([[1.5]], dict(pad_token_id=0), "integer token ids"),
        ([[1]], dict(pad_token_id=0, foo=1), r"neither generation settings nor inputs: \['foo'\]"),
        ([[1]], dict(do_sample=True, temperature=0.0, pad_token_id=0), "temperature must be a float > 0"),
    ],
)
def test_bad_arguments(args, kwargs, message):
    attention_mask = kwargs.pop("attention_mask", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=message):
            plan(args, attention_mask, **kwargs)


def test_generation_config_argument_is_not_mutated():
    config = GenerationConfig(max_new_tokens=3, pad_token_id=0)
    p = prepare_generation(CONFIG, GenerationConfig(), [[1]], None, config, max_new_tokens=5)
    assert p.max_new_tokens == 5 and config.max_new_tokens == 3


def test_processor_specs_follow_hugging_faces_order():
    config = GenerationConfig(do_sample=True, temperature=0.5, top_k=7, top_p=0.9, typical_p=0.8,
                              repetition_penalty=1.2, no_repeat_ngram_size=2, bad_words_ids=[[3]])
    names = [name for name, _ in logits_processor_specs(config, min_length=6, eos_token_ids=[1])]
    assert names == ["RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor",
                     "MinLengthLogitsProcessor", "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
                     "TypicalLogitsWarper"]
    assert logits_processor_specs(GenerationConfig(), 0, [1]) == []  # greedy: no warpers
    assert logits_processor_specs(GenerationConfig(do_sample=True), 0, []) == [("TopKLogitsWarper", {"top_k": 50})]
    assert logits_processor_specs(GenerationConfig(), 4, []) == []  # no EOS: nothing to hold back


def test_buckets_and_left_padding():
    assert [bucket_length(n, 16) for n in (1, 16, 17)] == [16, 16, 32]
    assert bucket_length(30, 16, cap=20) == 30 and bucket_length(10, 16, cap=12) == 12
    ids, mask = left_pad(np.array([[7, 8]]), np.array([[1, 1]]), 4, 0)
    np.testing.assert_array_equal(ids, [[0, 0, 7, 8]])
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="cannot left-pad"):
        left_pad(ids, mask, 3, 0)


def test_beam_hypotheses_keep_the_best_and_know_when_done():
    hyps = BeamHypotheses(num_beams=2, length_penalty=1.0, early_stopping=False, max_length=10)
    hyps.add(np.array([1]), -4.0, 4)  # score -1.0
    hyps.add(np.array([2]), -1.0, 2)  # -0.5
    hyps.add(np.array([3]), -6.0, 3)  # -2.0: worse than both, not kept
    assert sorted(s for s, _ in hyps.beams) == [-1.0, -0.5] and hyps.worst_score == -1.0
    assert hyps.is_done(best_sum_logprobs=-5.0, cur_len=5)  # -1.0 cannot beat the worst kept
    assert not hyps.is_done(best_sum_logprobs=-4.0, cur_len=5)  # -0.8 could
    never = BeamHypotheses(2, 1.0, "never", max_length=10)
    never.beams, never.worst_score = hyps.beams, hyps.worst_score
    assert not never.is_done(-5.0, 5)  # at the longest length, -0.5 would still win
    assert BeamHypotheses(1, 1.0, True, 10).is_done(0.0, 1) is False  # needs num_beams hypotheses first


def test_beam_scorer_step_and_finalize():
    scorer = BeamSearchScorer(batch_size=1, num_beams=2, length_penalty=1.0, early_stopping=False,
                              num_beam_hyps_to_keep=2, prompt_lengths=np.array([3]), max_new_tokens=4)
    np.testing.assert_array_equal(scorer.initial_scores(), [0.0, -1e9])
    # candidates best first: EOS (9) from beam 1 in the top 2 becomes a hypothesis, the next two continue
    scores, tokens, rows = scorer.process(
        np.zeros((2, 1), np.int64) + [[4], [6]], np.array([[-1.0, -2.0, -3.0, -4.0]]),
        np.array([[9, 7, 8, 9]]), np.array([[1, 0, 1, 0]]), eos_token_ids=[9], pad_token_id=0,
    )
    np.testing.assert_array_equal(tokens, [7, 8])
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_allclose(scores, [-2.0, -3.0])
    assert len(scorer.hypotheses[0]) == 1 and scorer.hypotheses[0].beams[0][0] == pytest.approx(-1.0 / 4)
    generated = np.array([[4, 7], [6, 8]])
    out, best = scorer.finalize(generated, scores, max_new_tokens=4, eos_token_ids=[9], pad_token_id=0)
    # ranked: [6] ended by EOS (-0.25), then [4, 7] (-2 / 5 = -0.4); the shorter one gets its EOS back
    np.testing.assert_array_equal(out, [[6, 9, 0], [4, 7, 9]])
    np.testing.assert_allclose(best, [-0.25, -0.4])


class CharTokenizer:
    """ids are code points."""

    def decode(self, ids, **kwargs):
        return "".join(chr(i) for i in ids)


def test_text_streamer_prints_complete_words_then_the_rest():
    out = io.StringIO()
    streamer = TextStreamer(CharTokenizer(), file=out)
    streamer.put(np.array([[ord(c) for c in "Hi "]]))
    assert out.getvalue() == "Hi "
    for c in "you":
        streamer.put(np.array([ord(c)]))
    assert out.getvalue() == "Hi "  # the word may still change: wait
    streamer.put(np.array([ord(" ")]))
    assert out.getvalue() == "Hi you "
    streamer.put(np.array([ord("x")]))
    streamer.end()
    assert out.getvalue() == "Hi you x\n"


def test_text_streamer_skip_prompt_and_batch_check():
    out = io.StringIO()
    streamer = TextStreamer(CharTokenizer(), skip_prompt=True, file=out)
    streamer.put(np.array([[ord("a"), ord(" ")]]))
    streamer.put(np.array([ord("b")]))
    streamer.end()
    assert out.getvalue() == "b\n"
    with pytest.raises(ValueError, match="batch size 1"):
        TextStreamer(CharTokenizer()).put(np.zeros((2, 3), int))
