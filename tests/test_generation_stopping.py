"""Framework-free parts of issue 21: stopping criteria, stop strings on byte tables, TextIteratorStreamer, user
processor checks, the pipeline's task dispatch and the top-level names (no framework loaded)."""

import queue
import subprocess
import sys
import time

import generation_cases as cases
import numpy as np
import pytest

from twinformers.generation.stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    stop_string_tables,
)
from twinformers.generation.streamers import TextIteratorStreamer
from twinformers.generation.utils import UserLogitsProcessor


@pytest.fixture(scope="module")
def tokenizer():
    return cases.embedded_tokenizer()


def test_length_time_and_eos_criteria():
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    assert MaxLengthCriteria(3)(ids, None).tolist() == [True, True]
    assert MaxLengthCriteria(4)(ids, None).tolist() == [False, False]
    assert MaxTimeCriteria(5.0, initial_timestamp=time.time() - 10)(ids, None).tolist() == [True, True]
    assert MaxTimeCriteria(60.0)(ids, None).tolist() == [False, False]
    assert EosTokenCriteria([6, 9])(ids, None).tolist() == [False, True]
    criteria = StoppingCriteriaList([EosTokenCriteria(3), MaxLengthCriteria(9)])
    assert criteria(ids, None).tolist() == [True, False] and criteria.max_length == 9
    with pytest.raises(ValueError, match="max_time must be"):
        MaxTimeCriteria(0)
    with pytest.raises(ValueError, match=r"returned shape \(3,\), expected \(2,\)"):
        StoppingCriteriaList([lambda input_ids, scores: np.zeros(3, bool)])(ids, None)


@pytest.mark.parametrize("stop", [".", "\n", " the", "ing", "self."])
def test_stop_string_fires_where_the_decoded_text_first_contains_it(tokenizer, stop):
    """Incremental checks on real text (several tokens per stop string, tokens running past it) against a
    text-level reference."""
    text = ("Once upon a time there was a thing; the king sang.\n    def load(self): return self.items\n"
            "nothing ending here")
    tokens = tokenizer.encode(text)
    prompt_length = 3
    criteria = StopStringCriteria(tokenizer, [stop])
    fired = next((end for end in range(prompt_length + 1, len(tokens) + 1)
                  if criteria(np.asarray([tokens[:end]]), None)[0]), None)
    assert fired is not None
    assert fired == cases.first_stop(tokenizer, tokens, prompt_length, stop)


def test_stop_strings_rows_and_bad_input(tokenizer):
    rows = np.asarray([tokenizer.encode("Hello world."), tokenizer.encode("Hello world!")])
    assert StopStringCriteria(tokenizer, [".", "?"])(rows, None).tolist() == [True, False]

    class Lossy:  # a tokenizer that cannot represent every character
        def encode(self, text):
            return [ord(c) for c in text if c.isascii()]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    with pytest.raises(ValueError, match="stop string 'é' cannot be encoded by the tokenizer"):
        StopStringCriteria(Lossy(), ["é"])
    with pytest.raises(ValueError, match="non-empty strings"):
        StopStringCriteria(tokenizer, [""])


def test_stop_string_tables_buckets_and_cache(tokenizer):
    """The in-loop tables: one byte vocabulary per tokenizer, widths rounded up to 8 bytes, the stop-string count
    to a power of two with rows that never match, ids past the tokenizer's vocabulary without bytes; None when a
    criterion must run on the host. (The matching itself is tested per backend against the host check.)"""
    dot, two = StopStringCriteria(tokenizer, ["."]), StopStringCriteria(tokenizer, [".", "ing"])
    assert dot.vocabulary is two.vocabulary
    single, both = stop_string_tables([dot], 1024), stop_string_tables([dot, two], 1030)
    assert single.newest.shape == (1024, 1, 9) and both.newest.shape == (1030, 4, 9)
    np.testing.assert_array_equal(both.newest[:1024, 0], single.newest[:, 0])
    assert not both.newest[:, 3].any() and not both.inside[:, 3].any() and not both.starts[:, 3].any()
    assert both.token_length[1024:].tolist() == [0] * 6 and both.inside[1024:, :3, 1].all()  # skipped ids
    period = tokenizer.encode(".")[0]
    assert single.newest[period, 0, 0] and single.token_length[period] == 1
    assert stop_string_tables([StopStringCriteria(tokenizer, ["a long stop"])], 1024).newest.shape[-1] == 17
    assert stop_string_tables([dot, MaxLengthCriteria(5)], 1024) is None
    assert stop_string_tables([], 1024) is None


def test_iterator_streamer_queue_and_timeout(tokenizer):
    ids = tokenizer.encode("Once upon a time there was a king.")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=0.05)
    streamer.put(np.asarray([ids[:2]]))
    for token in ids[2:]:
        streamer.put(np.asarray([token]))
    streamer.end()
    assert "".join(streamer) == tokenizer.decode(ids[2:])
    with pytest.raises(queue.Empty):
        next(streamer)  # nothing more comes: the timeout is honoured


def test_user_processor_signature_and_shape():
    scores = np.zeros((2, 5), np.float32)
    ids = np.zeros((2, 3), np.int64)
    two = UserLogitsProcessor(lambda input_ids, scores: scores + 1, traced=False)
    four = UserLogitsProcessor(lambda input_ids, scores, cur_len, mask: scores + cur_len, traced=False)
    assert two(ids, scores, 3, ids).tolist() == (scores + 1).tolist()
    assert four(ids, scores, 3, ids).tolist() == (scores + 3).tolist()
    with pytest.raises(ValueError, match=r"returned scores of shape \(2, 4\), expected \(2, 5\)"):
        UserLogitsProcessor(lambda input_ids, scores: scores[:, 1:], traced=False)(ids, scores, 3, ids)
    with pytest.raises(TypeError, match="must be traceable"):
        UserLogitsProcessor(lambda input_ids, scores: 1 / 0, traced=True)(ids, scores, 3, ids)
    with pytest.raises(ValueError, match="must take at least"):
        UserLogitsProcessor(lambda scores: scores, traced=False)


def test_pipeline_unknown_task_and_backend():
    import twinformers

    with pytest.raises(ValueError, match="unknown pipeline task 'summarization'; supported: .*text-generation"):
        twinformers.pipeline("summarization")
    with pytest.raises(ValueError, match="backend must be one of pt, tf, flax"):
        twinformers.pipeline("text-generation", backend="mxnet")
    with pytest.raises(ValueError, match="needs model="):
        twinformers.pipeline("question-answering", backend="pt")


def test_top_level_names_load_no_framework():
    code = (
        "import sys, twinformers as t\n"
        "names = ['pipeline', 'TextIteratorStreamer', 'TextStreamer', 'StoppingCriteria', 'StoppingCriteriaList',\n"
        "         'MaxLengthCriteria', 'MaxTimeCriteria', 'EosTokenCriteria', 'StopStringCriteria']\n"
        "[getattr(t, n) for n in names]\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'flax') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
