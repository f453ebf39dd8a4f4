"""Framework-free generation test cases, run by every backend's test module through a small adapter.

The references here are independent NumPy / plain-Python re-statements of Hugging Face's documented
semantics (per-row token lists, one full forward per step, no cache, no buffers), so they share no code
with `twinformers.generation.utils` or the backends' vectorized processors.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from helpers import FAMILIES, HF_FIXTURES  # noqa: F401 (the cases run for every family)

INF = float("inf")


def fixture_dir(family: str) -> str:
    """HF-written tiny causal-LM checkpoint (vocab 100, 64 positions, random weights with biases); "tiny-gpt2":
    the trained GPT-2 embedded in twinformers, with its tokenizer (vocab 1024)."""
    if family == "tiny-gpt2":
        from twinformers.demo.embedded import embedded_model_path

        return embedded_model_path()
    return os.path.join(HF_FIXTURES, f"{family}-pt-causal_lm")


@dataclass
class Adapter:
    """What the shared cases need from a backend.

    load(family) -> model; logits(model, ids (B, T) np, mask or None) -> (B, T, V) np from a full forward
    without cache; generate(model, ids, **kwargs) -> np array or output object with np-convertible fields;
    processor(name, **kwargs) -> the backend's processor; run_processor(proc, ids, scores, cur_len, mask) -> np;
    seed_kwargs(seed) -> the backend's RNG arguments of generate().
    """

    name: str
    load: Callable[[str], Any]
    logits: Callable[..., np.ndarray]
    generate: Callable[..., Any]
    processor: Callable[..., Any]
    run_processor: Callable[..., np.ndarray]
    seed_kwargs: Callable[[int], dict]


# --------------------------------------------------------------------------------------------- references
def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def ref_repetition_penalty(tokens: list[int], scores: np.ndarray, penalty: float) -> np.ndarray:
    out = scores.copy()
    for t in set(tokens):
        out[t] = out[t] * penalty if out[t] < 0 else out[t] / penalty
    return out


def ref_no_repeat_ngram(tokens: list[int], scores: np.ndarray, n: int) -> np.ndarray:
    out = scores.copy()
    if len(tokens) + 1 < n:
        return out
    seen: dict[tuple, list[int]] = {}
    for i in range(len(tokens) - n + 1):
        seen.setdefault(tuple(tokens[i : i + n - 1]), []).append(tokens[i + n - 1])
    for t in seen.get(tuple(tokens[len(tokens) - n + 1 :]), []):
        out[t] = -INF
    return out


def ref_bad_words(tokens: list[int], scores: np.ndarray, bad_words: list[list[int]]) -> np.ndarray:
    out = scores.copy()
    for seq in bad_words:
        prefix = seq[:-1]
        if not prefix or (len(tokens) >= len(prefix) and tokens[len(tokens) - len(prefix) :] == prefix):
            out[seq[-1]] = -INF
    return out


def ref_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    kth = np.sort(scores)[::-1][k - 1]
    return np.where(scores < kth, -INF, scores)


def ref_top_p(scores: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the most likely tokens until their probability reaches top_p (the token crossing it stays)."""
    probs = np.exp(log_softmax(scores))
    order = np.argsort(-scores)
    keep = np.zeros(scores.shape, dtype=bool)
    mass = 0.0
    for t in order:
        keep[t] = True
        mass += probs[t]
        if mass >= top_p:
            break
    return np.where(keep, scores, -INF)


def ref_typical(scores: np.ndarray, mass: float) -> np.ndarray:
    logp = log_softmax(scores)
    p = np.exp(logp)
    entropy = -(p * logp).sum()
    order = np.argsort(np.abs(-logp - entropy), kind="stable")
    keep = np.zeros(scores.shape, dtype=bool)
    total = 0.0
    for t in order:  # the most typical tokens first, until their mass reaches `mass`
        keep[t] = True
        total += p[t]
        if total >= mass:
            break
    return np.where(keep, scores, -INF)


def reference_greedy(logits_fn: Callable, prompt: list[int], max_new: int, eos: list[int] = ()) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_new):
        token = int(np.argmax(logits_fn(tokens)))
        tokens.append(token)
        if token in eos:
            break
    return tokens


def reference_beam_search(logits_fn: Callable, prompt: list[int], num_beams: int, max_new: int,
                          length_penalty: float = 1.0, early_stopping: bool | str = False, eos: list[int] = (),
                          keep: int = 1) -> list[tuple[float, list[int]]]:
    """Hugging Face's beam search for one unpadded prompt, spelled out: 2K candidates per step, EOS
    candidates ranked in the top K become hypotheses scored sum_logprobs / len ** length_penalty (len
    without the EOS), stop when the n-best list cannot improve, add the open beams at the end.
    Returns the `keep` best (score, generated tokens)."""
    beams = [(0.0, [])] + [(-1e9, [])] * (num_beams - 1)
    hyps: list[tuple[float, list[int]]] = []

    def add(score: float, tokens: list[int]) -> None:
        hyps.append((score / (len(prompt) + len(tokens)) ** length_penalty, tokens))
        hyps.sort(key=lambda h: -h[0])
        del hyps[num_beams:]

    def done(best: float, cur_len: int) -> bool:
        if len(hyps) < num_beams:
            return False
        if early_stopping is True:
            return True
        length = prompt_max if early_stopping == "never" and length_penalty > 0 else cur_len
        return hyps[-1][0] >= best / length**length_penalty

    prompt_max = len(prompt) + max_new
    for step in range(max_new):
        candidates = []
        for index, (score, tokens) in enumerate(beams):
            logp = log_softmax(logits_fn(list(prompt) + tokens))
            candidates += [(score + logp[v], index, v) for v in range(len(logp))]
        candidates.sort(key=lambda c: -c[0])
        candidates = candidates[: 2 * num_beams]
        new_beams = []
        for rank, (score, index, token) in enumerate(candidates):
            if token in eos:
                if rank < num_beams:
                    add(score, beams[index][1])
            else:
                new_beams.append((score, beams[index][1] + [token]))
            if len(new_beams) == num_beams:
                break
        is_done = done(candidates[0][0], len(prompt) + step)
        beams = new_beams
        if is_done:
            break
    else:
        is_done = False
    if not is_done:
        for score, tokens in beams:
            add(score, tokens)
    return hyps[:keep]


# --------------------------------------------------------------------------------------------- helpers
def as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x)


def prompts(batch: int = 3, length: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 100, (batch, length)).astype(np.int64)


def logits_fn_for(adapter: Adapter, model: Any) -> Callable[[list[int]], np.ndarray]:
    return lambda tokens: adapter.logits(model, np.asarray([tokens]))[0, -1]


# --------------------------------------------------------------------------------------------- processors
PROCESSOR_SCENARIO_SEED = 3


def processor_scenario() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A (3, 12) buffer over a 12-token vocab so tokens repeat: row 1 left-padded by 3, cur_len 9 (slots
    9.. unwritten), and (3, 12) distinct scores."""
    rng = np.random.default_rng(PROCESSOR_SCENARIO_SEED)
    ids = rng.integers(0, 4, (3, 12))
    ids[0, 5:8] = ids[0, 1:4]  # a repeated trigram in row 0
    ids[2, 6:8] = [2, 3]
    mask = np.ones((3, 12), dtype=np.int64)
    mask[1, :3] = 0
    ids[1, :3] = 11  # padding tokens must be ignored
    scores = rng.permutation(36).reshape(3, 12).astype(np.float32) / 5 - 3
    return ids, mask, scores, 9


PROCESSOR_CASES = [
    ("RepetitionPenaltyLogitsProcessor", {"penalty": 1.7}, lambda t, s: ref_repetition_penalty(t, s, 1.7)),
    ("NoRepeatNGramLogitsProcessor", {"ngram_size": 1}, lambda t, s: ref_no_repeat_ngram(t, s, 1)),
    ("NoRepeatNGramLogitsProcessor", {"ngram_size": 2}, lambda t, s: ref_no_repeat_ngram(t, s, 2)),
    ("NoRepeatNGramLogitsProcessor", {"ngram_size": 3}, lambda t, s: ref_no_repeat_ngram(t, s, 3)),
    ("NoBadWordsLogitsProcessor", {"bad_words_ids": [[5], [2, 3, 7], [1, 8], [9]], "eos_token_id": 9},
     lambda t, s: ref_bad_words(t, s, [[5], [2, 3, 7], [1, 8]])),
    ("MinLengthLogitsProcessor", {"min_length": 10, "eos_token_id": [4, 6]},
     lambda t, s: np.where(np.isin(np.arange(12), [4, 6]), -INF, s)),
    ("MinLengthLogitsProcessor", {"min_length": 9, "eos_token_id": 4}, lambda t, s: s),
    ("TemperatureLogitsWarper", {"temperature": 0.7}, lambda t, s: s / np.float32(0.7)),
    ("TopKLogitsWarper", {"top_k": 4}, lambda t, s: ref_top_k(s, 4)),
    ("TopPLogitsWarper", {"top_p": 0.8}, lambda t, s: ref_top_p(s, 0.8)),
    ("TopPLogitsWarper", {"top_p": 0.3}, lambda t, s: ref_top_p(s, 0.3)),
    ("TypicalLogitsWarper", {"mass": 0.6}, lambda t, s: ref_typical(s, 0.6)),
]


def check_processor(adapter: Adapter, name: str, kwargs: dict, reference: Callable) -> None:
    ids, mask, scores, cur_len = processor_scenario()
    processor = adapter.processor(name, **kwargs)
    actual = adapter.run_processor(processor, ids, scores, cur_len, mask)
    for b in range(ids.shape[0]):
        tokens = [int(t) for t, m in zip(ids[b, :cur_len], mask[b, :cur_len]) if m]
        expected = reference(tokens, scores[b].astype(np.float64))
        assert np.array_equal(np.isinf(actual[b]), np.isinf(expected)), (
            f"{name}{kwargs} row {b}: filtered {np.flatnonzero(np.isinf(actual[b]))}, "
            f"expected {np.flatnonzero(np.isinf(expected))}"
        )
        finite = ~np.isinf(expected)
        np.testing.assert_allclose(actual[b][finite], expected[finite], rtol=1e-6, atol=1e-6,
                                   err_msg=f"{name}{kwargs} row {b}")


def check_processor_list_from_config(adapter: Adapter, module: Any) -> None:
    """The list a GenerationConfig asks for, in Hugging Face's order."""
    from twinformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=0.5, top_k=7, top_p=0.9, typical_p=0.8,
                              repetition_penalty=1.2, no_repeat_ngram_size=2, bad_words_ids=[[3]])
    processors = module.LogitsProcessorList.from_generation_config(config, min_length=5, eos_token_ids=[1])
    assert [type(p).__name__ for p in processors] == [
        "RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor",
        "MinLengthLogitsProcessor", "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
        "TypicalLogitsWarper",
    ]
    greedy = module.LogitsProcessorList.from_generation_config(GenerationConfig(), min_length=0, eos_token_ids=[1])
    assert len(greedy) == 0  # defaults: greedy without warpers (top_k=50 only applies when sampling)


# --------------------------------------------------------------------------------------------- strategies
def check_greedy_matches_forward_loop(adapter: Adapter, family: str) -> None:
    model = adapter.load(family)
    ids = prompts()
    out = as_numpy(adapter.generate(model, ids, max_new_tokens=9, pad_token_id=0))
    logits_fn = logits_fn_for(adapter, model)
    expected = np.array([reference_greedy(logits_fn, list(row), 9) for row in ids])
    np.testing.assert_array_equal(out, expected)


def check_left_padding_matches_alone(adapter: Adapter, family: str, **kwargs: Any) -> None:
    """A left-padded batch generates exactly what each prompt generates alone."""
    model = adapter.load(family)
    ids = prompts(3, 7, seed=1)
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :1] = 0
    ids = np.where(mask == 1, ids, 0)
    batched = as_numpy(adapter.generate(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0, **kwargs))
    for b in range(3):
        alone = as_numpy(adapter.generate(model, ids[b : b + 1][:, mask[b] == 1], max_new_tokens=8, pad_token_id=0,
                                          **kwargs))
        rows = len(alone)
        np.testing.assert_array_equal(batched[b * rows : (b + 1) * rows, 7:], alone[:, int(mask[b].sum()) :],
                                      err_msg=f"row {b}")


def check_eos_stops_and_pads(adapter: Adapter, family: str) -> None:
    model = adapter.load(family)
    ids = prompts()
    free = as_numpy(adapter.generate(model, ids, max_new_tokens=8, pad_token_id=0))
    eos = int(free[0, 6 + 2])  # row 0 ends at its third new token
    out = as_numpy(adapter.generate(model, ids, max_new_tokens=8, eos_token_id=eos, pad_token_id=0))
    for b in range(3):
        new = list(free[b, 6:])
        end = new.index(eos) + 1 if eos in new else len(new)
        expected = new[:end] + [0] * (len(new) - end)
        np.testing.assert_array_equal(out[b, 6:], expected[: out.shape[1] - 6], err_msg=f"row {b}")
    assert out.shape[1] - 6 == max(
        (list(free[b, 6:]).index(eos) + 1 if eos in free[b, 6:] else 8) for b in range(3)
    ), "generation stops when every row has finished"
    # eos as a list, and min_new_tokens keeps it from ending early
    out = as_numpy(adapter.generate(model, ids[:1], max_new_tokens=8, eos_token_id=[97, eos], min_new_tokens=4,
                                    pad_token_id=0))
    assert eos not in out[0, 6:10]


def check_sampling(adapter: Adapter, family: str) -> None:
    model = adapter.load(family)
    ids = prompts()
    kwargs = dict(do_sample=True, max_new_tokens=8, pad_token_id=0, temperature=2.0, top_k=0)
    first = as_numpy(adapter.generate(model, ids, **kwargs, **adapter.seed_kwargs(7)))
    again = as_numpy(adapter.generate(model, ids, **kwargs, **adapter.seed_kwargs(7)))
    other = as_numpy(adapter.generate(model, ids, **kwargs, **adapter.seed_kwargs(8)))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other), "a different seed should change a hot, unfiltered sample"
    # top_k=1 leaves one candidate: sampling must then reproduce greedy search
    greedy = as_numpy(adapter.generate(model, ids, max_new_tokens=8, pad_token_id=0))
    top1 = as_numpy(adapter.generate(model, ids, do_sample=True, top_k=1, max_new_tokens=8, pad_token_id=0,
                                     **adapter.seed_kwargs(1)))
    np.testing.assert_array_equal(top1, greedy)
    many = as_numpy(adapter.generate(model, ids[:1], do_sample=True, num_return_sequences=4, max_new_tokens=8,
                                     pad_token_id=0, temperature=3.0, top_k=0, **adapter.seed_kwargs(3)))
    assert many.shape == (4, 14) and (many[:, :6] == ids[:1]).all()
    assert len({tuple(r) for r in many[:, 6:]}) > 1, "num_return_sequences draws independent samples"


def check_sampled_tokens_respect_filters(adapter: Adapter, family: str) -> None:
    """Every sampled token is one the processed scores allow (scores returned with output_scores)."""
    model = adapter.load(family)
    ids = prompts()
    out = adapter.generate(model, ids, do_sample=True, top_k=3, top_p=0.6, temperature=0.8, max_new_tokens=6,
                           pad_token_id=0, return_dict_in_generate=True, output_scores=True,
                           **adapter.seed_kwargs(5))
    sequences = as_numpy(out.sequences)
    assert len(out.scores) == sequences.shape[1] - 6
    for step, scores in enumerate(out.scores):
        scores = as_numpy(scores)
        assert scores.shape == (3, 100)
        assert (np.isfinite(scores).sum(-1) <= 3).all(), "top_k=3 leaves at most 3 candidates"
        chosen = scores[np.arange(3), sequences[:, 6 + step]]
        assert np.isfinite(chosen).all(), f"step {step}: a filtered token was sampled"


def check_greedy_scores(adapter: Adapter, family: str) -> None:
    model = adapter.load(family)
    ids = prompts()
    out = adapter.generate(model, ids, max_new_tokens=4, pad_token_id=0, return_dict_in_generate=True,
                           output_scores=True)
    sequences = as_numpy(out.sequences)
    logits = adapter.logits(model, sequences)
    for step, scores in enumerate(out.scores):
        np.testing.assert_allclose(as_numpy(scores), logits[:, 5 + step], atol=1e-5)


def check_beam_search(adapter: Adapter, family: str, **settings: Any) -> None:
    model = adapter.load(family)
    ids = prompts(2, 5, seed=2)
    num_beams, keep = settings.pop("num_beams", 3), settings.pop("num_return_sequences", 2)
    out = adapter.generate(model, ids, num_beams=num_beams, num_return_sequences=keep, max_new_tokens=6,
                           pad_token_id=0, return_dict_in_generate=True, output_scores=True, **settings)
    sequences, scores = as_numpy(out.sequences), as_numpy(out.sequences_scores)
    logits_fn = logits_fn_for(adapter, model)
    eos = settings.get("eos_token_id")
    for b in range(2):
        expected = reference_beam_search(
            logits_fn, list(ids[b]), num_beams, 6, settings.get("length_penalty", 1.0),
            settings.get("early_stopping", False), [eos] if eos is not None else [], keep,
        )
        for k, (score, tokens) in enumerate(expected):
            row = sequences[b * keep + k]
            np.testing.assert_array_equal(row[:5], ids[b])
            np.testing.assert_array_equal(row[5 : 5 + len(tokens)], tokens, err_msg=f"prompt {b} hypothesis {k}")
            np.testing.assert_allclose(scores[b * keep + k], score, rtol=1e-4, err_msg=f"prompt {b} hyp {k}")


class NullStreamer:
    """A streamer that drops what it gets (forces the step-by-step path)."""

    def put(self, value: Any) -> None:
        pass

    def end(self) -> None:
        pass


def check_streamer(adapter: Adapter, family: str) -> None:
    from twinformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self) -> None:
            self.values: list[np.ndarray] = []
            self.ended = False

        def put(self, value: np.ndarray) -> None:
            self.values.append(np.asarray(value))

        def end(self) -> None:
            self.ended = True

    model = adapter.load(family)
    ids = prompts(1, 6)
    expected = as_numpy(adapter.generate(model, ids, max_new_tokens=5, pad_token_id=0))
    streamer = Collect()
    out = as_numpy(adapter.generate(model, ids, max_new_tokens=5, pad_token_id=0, streamer=streamer))
    np.testing.assert_array_equal(out, expected)
    assert streamer.ended
    np.testing.assert_array_equal(streamer.values[0], ids)
    np.testing.assert_array_equal(np.concatenate([v.reshape(-1) for v in streamer.values[1:]]), expected[0, 6:])


def check_bad_input(adapter: Adapter, family: str) -> None:
    model = adapter.load(family)
    ids = prompts()
    with pytest.raises(ValueError, match="more than the model's maximum of 64"):
        adapter.generate(model, ids, max_new_tokens=59, pad_token_id=0)
    with pytest.raises(ValueError, match="num_return_sequences=3 needs num_beams >= 3"):
        adapter.generate(model, ids, num_return_sequences=3, pad_token_id=0)
    mask = np.ones_like(ids)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="needs a pad_token_id"):
        adapter.generate(model, ids, attention_mask=mask, pad_token_id=None, eos_token_id=None, max_new_tokens=2)
    with pytest.raises(ValueError, match="neither generation settings nor inputs"):
        adapter.generate(model, ids, max_new_tokens=2, pad_token_id=0, not_an_option=1)
    with pytest.raises(ValueError, match="input_ids contains 100"):
        adapter.generate(model, np.full((1, 3), 100), max_new_tokens=2, pad_token_id=0)
    with pytest.raises(ValueError, match="top_p must be in"):
        adapter.generate(model, ids, do_sample=True, top_p=1.5, pad_token_id=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = as_numpy(adapter.generate(model, ids, max_length=8, max_new_tokens=3, pad_token_id=0))
    assert out.shape[1] == 9, "max_new_tokens wins over max_length"
    assert any("`max_new_tokens` will take precedence" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = as_numpy(adapter.generate(model, ids, max_new_tokens=1))  # the fixture has no pad token
    assert any("Setting `pad_token_id` to `eos_token_id`:50256" in str(w.message) for w in caught)


# --------------------------------------------------------------------------------------------- issue 21
def embedded_tokenizer() -> Any:
    """The tokenizer of the tiny trained GPT-2 embedded in twinformers (`fixture_dir("tiny-gpt2")`)."""
    from twinformers.tokenization.auto import AutoTokenizer

    return AutoTokenizer.from_pretrained(fixture_dir("tiny-gpt2"))


def first_stop(tokenizer: Any, tokens: list[int], prompt_length: int, stop: str) -> int | None:
    """Reference: the number of tokens after which the decoded text first contains `stop` in a part that ends
    in a generated token (text-level search on growing prefixes, no byte tables)."""
    for end in range(prompt_length + 1, len(tokens) + 1):
        before = tokenizer.decode(tokens[: end - 1]).encode("utf-8", "surrogatepass")
        text = tokenizer.decode(tokens[:end]).encode("utf-8", "surrogatepass")
        if stop.encode() in text and text.find(stop.encode(), max(len(before) - len(stop) + 1, 0)) >= 0:
            return end
    return None


def check_stop_strings_and_criteria(adapter: Adapter) -> None:
    """stop_strings end generation where the reference says (the rest is padding); a user criterion stops its
    rows; max_time stops; bad input is a clear error."""
    from twinformers.generation.stopping_criteria import MaxLengthCriteria, StoppingCriteria

    tokenizer = embedded_tokenizer()
    model = adapter.load("tiny-gpt2")
    eos = tokenizer.eos_token_id
    prompt = tokenizer.encode("Once upon a time")
    ids = np.asarray([prompt])
    full = as_numpy(adapter.generate(model, ids, max_new_tokens=24, pad_token_id=eos))[0].tolist()
    stop = "."
    end = first_stop(tokenizer, full, len(prompt), stop)
    assert end is not None and end < len(full), "the continuation must contain the stop string to test it"
    out = as_numpy(adapter.generate(model, ids, max_new_tokens=24, pad_token_id=eos, stop_strings=[stop],
                                    tokenizer=tokenizer))[0].tolist()
    assert out[:end] == full[:end] and set(out[end:]) <= {eos}, (out, full, end)

    class StopAfter(StoppingCriteria):  # a user criterion: stop once 3 tokens were generated
        def __call__(self, input_ids, scores, **kwargs):
            return np.full(input_ids.shape[0], input_ids.shape[1] >= len(prompt) + 3)

    out = as_numpy(adapter.generate(model, ids, max_new_tokens=24, pad_token_id=eos, stopping_criteria=[StopAfter()]))
    assert out[0].tolist() == full[: len(prompt) + 3]
    out = as_numpy(adapter.generate(model, ids, max_new_tokens=24, pad_token_id=eos,
                                    stopping_criteria=[MaxLengthCriteria(len(prompt) + 2)]))
    assert out[0].tolist() == full[: len(prompt) + 2]
    out = as_numpy(adapter.generate(model, ids, max_new_tokens=24, pad_token_id=eos, max_time=1e-9))
    assert out.shape[1] == len(prompt) + 1, "max_time already passed: stop after the first token"
    with pytest.raises(ValueError, match="stop_strings need the model's tokenizer"):
        adapter.generate(model, ids, max_new_tokens=2, pad_token_id=eos, stop_strings=["."])
    with pytest.raises(ValueError, match="stop_strings must be a string or a list of non-empty strings"):
        adapter.generate(model, ids, max_new_tokens=2, pad_token_id=eos, stop_strings=[""], tokenizer=tokenizer)
    # Beam search ends when the criteria mark every beam done (Hugging Face's rule); the hypotheses then get
    # the EOS column finalize adds to hypotheses shorter than max_new_tokens.
    beams = dict(num_beams=3, num_return_sequences=2, pad_token_id=eos)
    short = as_numpy(adapter.generate(model, ids, max_new_tokens=3, **beams))
    out = as_numpy(adapter.generate(model, ids, max_new_tokens=24, stopping_criteria=[StopAfter()], **beams))
    assert out.shape == (2, len(prompt) + 4) and (out[:, -1] == eos).all()
    np.testing.assert_array_equal(out[:, :-1], short)
    out = as_numpy(adapter.generate(model, ids, max_new_tokens=24, max_time=1e-9, **beams))
    assert out.shape[1] == len(prompt) + 2, "max_time already passed: beam search ends after the first step"


STOP_TEXTS = ("Once upon a time there was a thing; the king sang.\n    def load(self): return self.items\n",
              "The king said-endarkipled.\n    if not isinstance(obj, _fparts):\n        return self.x")
STOP_CASES = ([".", " the", "ing", "self.", "g sang.\n    def", "e"], ["."], ["ing"], ["g sang.\n    def"],
              ["self.", "endark"], [".eOnce", "eThe"])  # the last two would match the bucket padding "e.e"


def check_stop_string_hits(hits: Callable[..., np.ndarray]) -> None:
    """The backend's compiled `stop_string_hits` on the tables (`stop_string_tables`) fires at exactly the tokens
    where the host-side StopStringCriteria does, for single- and multi-token stop strings, several per call,
    two rows at once, the bucket's padding slots (junk that would match) excluded by `text_start`.
    `hits(tables, text_start, sequences (B, L), cur_len) -> (B,)` runs the backend's function compiled."""
    from twinformers.generation.stopping_criteria import StopStringCriteria, stop_string_tables

    tokenizer = embedded_tokenizer()
    rows = [tokenizer.encode(text) for text in STOP_TEXTS]
    junk = tokenizer.encode("e.e")  # bucket padding made of tokens that would complete a stop string
    length = max(len(r) for r in rows)
    sequences = np.asarray([junk + r + r[: length - len(r)] for r in rows], dtype=np.int32)
    start = len(junk)
    fired = 0
    for stops in STOP_CASES:
        criterion = StopStringCriteria(tokenizer, stops)
        tables = stop_string_tables([criterion], 1024)
        for cur_len in range(start + 1, sequences.shape[1] + 1):
            expected = criterion(sequences[:, start:cur_len])
            got = np.asarray(hits(tables, start, sequences, cur_len))
            assert got.tolist() == expected.tolist(), (stops, cur_len, got, expected)
            fired += int(expected.sum())
    assert fired > 20, "the texts must contain the stop strings many times to test anything"


def check_stop_strings_in_compiled_loop(adapter: Adapter, programs: Callable[[Any], dict]) -> None:
    """Stop strings run inside the single compiled loop: each row of a left-padded batch stops where the
    text-level reference says (stop strings spanning several tokens, one starting in the prompt), the same as
    the host-side check between compiled steps (forced by a streamer); no step-by-step program is built, and
    other stop strings of the same size bucket reuse the compiled loop. `programs(model)` is the model's dict
    of compiled generation programs, keyed (name, settings)."""
    tokenizer = embedded_tokenizer()
    model = adapter.load("tiny-gpt2")
    eos = tokenizer.eos_token_id
    texts = ["Once upon a time", "The king said"]
    encoded = [tokenizer.encode(t) for t in texts]
    width = max(len(e) for e in encoded)
    ids = np.asarray([[eos] * (width - len(e)) + e for e in encoded])
    mask = np.asarray([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    settings = dict(attention_mask=mask, max_new_tokens=24, pad_token_id=eos, tokenizer=tokenizer)
    full = as_numpy(adapter.generate(model, ids, **{k: v for k, v in settings.items() if k != "tokenizer"}))
    count = getattr(model, "generate_trace_count", 0)
    for stops in (["signal", "-end"], ["time.", "ark"], ["allement", "ipled"]):
        before = set(programs(model))
        out = as_numpy(adapter.generate(model, ids, stop_strings=stops, **settings))
        assert not any(name in ("step", "prefill") for name, _ in set(programs(model)) - before), \
            "stop strings must not fall back to the step-by-step path"
        for row, encoding in enumerate(encoded):
            tokens = full[row, width - len(encoding):].tolist()
            ends = [first_stop(tokenizer, tokens, len(encoding), stop) for stop in stops]
            end = min(e for e in ends if e is not None)
            assert end < len(tokens), (stops, row)
            got = out[row, width - len(encoding):].tolist()
            assert got[:end] == tokens[:end] and set(got[end:]) <= {eos}, (stops, row, got, tokens, end)
        stepwise = as_numpy(adapter.generate(model, ids, stop_strings=stops, streamer=NullStreamer(), **settings))
        np.testing.assert_array_equal(out, stepwise, err_msg=f"compiled vs host check, {stops}")
    assert out.shape[1] < full.shape[1], "every row stopped early: the result is shorter"
    assert model.generate_trace_count - count == 1, "stop strings of one size bucket share one compiled loop"


def check_user_logits_processor(adapter: Adapter, ban: Callable[[Any, Any], Any]) -> None:
    """A user processor (HF's two-argument signature) is applied after the configured ones; a wrong shape is a
    clear error. `ban(input_ids, scores)` is the backend's processor setting the score of token 14 to -inf."""
    model = adapter.load("gpt2")
    ids = np.array([[5, 9, 2, 7]])
    plain = as_numpy(adapter.generate(model, ids, max_new_tokens=6, pad_token_id=0))
    assert 14 in plain[0, 4:], "the fixture's greedy continuation must contain the token the processor bans"
    banned = as_numpy(adapter.generate(model, ids, max_new_tokens=6, pad_token_id=0, logits_processor=[ban]))
    assert 14 not in banned[0, 4:]
    with pytest.raises(ValueError, match=r"returned scores of shape \(1, 99\), expected \(1, 100\)"):
        adapter.generate(model, ids, max_new_tokens=2, pad_token_id=0,
                         logits_processor=[lambda input_ids, scores: scores[:, :-1]])


def check_iterator_streamer(adapter: Adapter) -> None:
    """TextIteratorStreamer, consumed from another thread, yields chunks that join to the decoded output."""
    import threading

    from twinformers import TextIteratorStreamer

    tokenizer = embedded_tokenizer()
    model = adapter.load("tiny-gpt2")
    ids = np.asarray([tokenizer.encode("Once upon a time")])
    settings = dict(max_new_tokens=12, pad_token_id=tokenizer.eos_token_id)
    expected = as_numpy(adapter.generate(model, ids, **settings))[0]
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=300)
    thread = threading.Thread(target=adapter.generate, args=(model, ids), kwargs=dict(streamer=streamer, **settings))
    thread.start()
    chunks = list(streamer)
    thread.join()
    assert len(chunks) > 1
    assert "".join(chunks) == tokenizer.decode(expected[ids.shape[1] :].tolist())


def check_text_generation_pipeline(backend: str) -> list:
    """The pipeline's batched, left-padded greedy outputs equal each prompt generated alone; returns them."""
    import twinformers

    generator = twinformers.pipeline("text-generation", backend=backend)
    prompts_ = ["Once upon a time", "def"]
    batch = generator(prompts_, max_new_tokens=8)
    assert [len(r) for r in batch] == [1, 1]
    for prompt, result in zip(prompts_, batch):
        alone = generator(prompt, max_new_tokens=8)
        assert result == alone and result[0]["generated_text"].startswith(prompt)
    short = generator(prompts_[0], max_new_tokens=8, return_full_text=False)
    assert prompts_[0] + short[0]["generated_text"] == batch[0][0]["generated_text"]
    stopped = generator(prompts_[0], max_new_tokens=24, stop_strings=".")
    return [batch, stopped]
