"""`generate()` for the Flax twins: logits processors and warpers, then `GenerationMixin`.

`lib/pt/generation.py` and `lib/tf/generation.py` have the same classes in the same order. Argument
resolution, the processor plan and beam bookkeeping are framework-free (`twinformers.generation.utils`).

Every processor is called as `processor(input_ids, scores, cur_len, attention_mask)` on the fixed token
buffer: input_ids (B, L) with slots [0, cur_len) filled, attention_mask (B, L) 1 where a slot holds a real
token (not padding), scores (B, V) float32; `cur_len` may be traced.

Greedy search and sampling run as one `jax.jit`-compiled `lax.while_loop` over a `StaticCache`. Prompts are
left-padded to a multiple of `pad_to_multiple_of`, so the loop compiles once per (batch, padded length,
settings) bucket; the compiled loops are kept on the model. Stop strings are matched inside the loop on
per-token tables (`stop_string_hits`). With a streamer or host-side stopping criteria, the same step
function runs jitted from a Python loop instead. Beam search steps the jitted model from Python around the NumPy scorer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..generation.config import GenerationConfig
from ..generation.stopping_criteria import StopStringTables, stop_string_tables
from ..generation.streamers import BaseStreamer
from ..generation.utils import (
    BeamSearchScorer,
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    GenerationPlan,
    bucket_length,
    default_generation_config,
    left_pad,
    logits_processor_specs,
    prepare_generation,
)
from ..model_math import positions_from_mask
from . import ops
from .ops import StaticCache, lm_head_logits

__all__ = [
    "LogitsProcessor",
    "RepetitionPenaltyLogitsProcessor",
    "NoRepeatNGramLogitsProcessor",
    "NoBadWordsLogitsProcessor",
    "MinLengthLogitsProcessor",
    "TemperatureLogitsWarper",
    "TopKLogitsWarper",
    "TopPLogitsWarper",
    "TypicalLogitsWarper",
    "LogitsProcessorList",
    "GenerationMixin",
]

Array = jax.Array
FILTER_VALUE = -float("inf")


# --------------------------------------------------------------------------------------------- helpers
def filled_tokens(attention_mask: Array, cur_len: int | Array) -> Array:
    """(B, L) bool: the slot holds a real token among the first `cur_len`."""
    return attention_mask.astype(bool) & (jnp.arange(attention_mask.shape[-1]) < cur_len)


def token_presence(tokens: Array, keep: Array, vocab_size: int) -> Array:
    """(B, N) token ids where `keep` (B, N) is True → (B, V) bool, True for every such id."""
    ids = jnp.where(keep, tokens, vocab_size)  # dropped entries land in an extra column
    present = jnp.zeros((tokens.shape[0], vocab_size + 1), dtype=bool)
    return present.at[jnp.arange(tokens.shape[0])[:, None], ids].set(True)[:, :vocab_size]


def last_tokens(input_ids: Array, valid: Array, cur_len: int | Array, length: int) -> tuple[Array, Array]:
    """The `length` slots before `cur_len`: tokens (B, length) and whether all of them are real (B,)."""
    start = jnp.maximum(cur_len - length, 0)
    enough = cur_len >= length
    tokens = jax.lax.dynamic_slice_in_dim(input_ids, start, length, axis=1)
    return tokens, jax.lax.dynamic_slice_in_dim(valid, start, length, axis=1).all(-1) & enough


# --------------------------------------------------------------------------------------------- processors
class LogitsProcessor:
    """Base class: `__call__(input_ids, scores, cur_len, attention_mask) -> scores`."""

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        raise NotImplementedError


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Divide positive (multiply negative) scores of tokens already in the sequence by `penalty`."""

    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise ValueError(f"repetition_penalty must be a float > 0, got {penalty!r}")
        self.penalty = penalty

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        present = token_presence(input_ids, filled_tokens(attention_mask, cur_len), scores.shape[-1])
        penalized = jnp.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return jnp.where(present, penalized, scores)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban every token that would complete an n-gram already in the sequence."""

    def __init__(self, ngram_size: int) -> None:
        if not isinstance(ngram_size, int) or ngram_size < 1:
            raise ValueError(f"no_repeat_ngram_size must be a positive int, got {ngram_size!r}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        n, length = self.ngram_size, input_ids.shape[-1]
        if n > length:
            return scores
        valid = filled_tokens(attention_mask, cur_len)
        starts = length - n + 1
        # Every n-gram of the buffer, (B, W, n), and whether it lies wholly among the real tokens.
        ngrams = jnp.stack([input_ids[:, k : k + starts] for k in range(n)], axis=-1)
        ngram_valid = jnp.stack([valid[:, k : k + starts] for k in range(n)], axis=-1).all(-1)
        prefix, prefix_valid = last_tokens(input_ids, valid, cur_len, n - 1)  # (B, n-1), (B,)
        matches = (ngrams[..., :-1] == prefix[:, None, :]).all(-1) & ngram_valid & prefix_valid[:, None]  # (B, W)
        banned = token_presence(ngrams[..., -1], matches, scores.shape[-1])
        return jnp.where(banned, FILTER_VALUE, scores)


class NoBadWordsLogitsProcessor(LogitsProcessor):
    """Ban the last token of each `bad_words_ids` sequence when the tokens before it were just generated
    (single-token entries are always banned). A bad word equal to `[eos]` is ignored, as in Hugging Face."""

    def __init__(self, bad_words_ids: list[list[int]], eos_token_id: int | list[int] | None = None) -> None:
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        self.bad_words_ids = [list(seq) for seq in bad_words_ids if not (len(seq) == 1 and seq[0] in eos)]
        if not all(seq and all(isinstance(t, int) and t >= 0 for t in seq) for seq in self.bad_words_ids):
            raise ValueError(f"bad_words_ids must be a list of non-empty lists of ids, got {bad_words_ids!r}")

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        vocab_size = scores.shape[-1]
        valid = filled_tokens(attention_mask, cur_len)
        vocab = jnp.arange(vocab_size)
        banned = jnp.zeros(scores.shape, dtype=bool)
        for seq in self.bad_words_ids:
            if seq[-1] >= vocab_size:
                continue
            if len(seq) == 1:
                hit = jnp.ones(scores.shape[0], dtype=bool)
            else:
                tail, tail_valid = last_tokens(input_ids, valid, cur_len, len(seq) - 1)
                prefix = jnp.asarray(seq[:-1], dtype=input_ids.dtype)
                hit = (tail == prefix).all(-1) & tail_valid  # (B,)
            banned |= hit[:, None] & (vocab == seq[-1])
        return jnp.where(banned, FILTER_VALUE, scores)


class MinLengthLogitsProcessor(LogitsProcessor):
    """Ban the EOS tokens while fewer than `min_length` slots are filled."""

    def __init__(self, min_length: int, eos_token_id: int | list[int]) -> None:
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"min_length must be a non-negative int, got {min_length!r}")
        self.min_length = min_length
        self.eos_token_id = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        vocab = jnp.arange(scores.shape[-1])
        is_eos = jnp.isin(vocab, jnp.asarray(self.eos_token_id))
        return jnp.where(is_eos & (cur_len < self.min_length), FILTER_VALUE, scores)


class TemperatureLogitsWarper(LogitsProcessor):
    """Divide the scores by `temperature` (< 1 sharpens, > 1 flattens the distribution)."""

    def __init__(self, temperature: float) -> None:
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a float > 0, got {temperature!r}")
        self.temperature = temperature

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keep the `top_k` highest scores (ties with the k-th included), filter the rest."""

    def __init__(self, top_k: int, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        top_k = min(self.top_k, scores.shape[-1])
        kth_best = jax.lax.top_k(scores, top_k)[0][:, -1:]  # (B, 1)
        return jnp.where(scores < kth_best, self.filter_value, scores)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p`."""

    def __init__(self, top_p: float, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        order = jnp.argsort(scores, axis=-1)  # ascending
        sorted_scores = jnp.take_along_axis(scores, order, axis=-1)
        cumulative = jax.nn.softmax(sorted_scores, axis=-1).cumsum(-1)
        # Drop the low tail holding at most 1 - top_p of the mass; the best `min_tokens_to_keep` always stay.
        sorted_remove = cumulative <= 1 - self.top_p
        sorted_remove = sorted_remove.at[:, -self.min_tokens_to_keep :].set(False)
        remove = scatter_sorted(sorted_remove, order)
        return jnp.where(remove, self.filter_value, scores)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy, up to `mass`."""

    def __init__(self, mass: float = 0.9, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(mass, (int, float)) and 0 < mass < 1):
            raise ValueError(f"typical_p must be in (0, 1), got {mass!r}")
        self.mass = mass
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        log_probs = jax.nn.log_softmax(scores, axis=-1)
        probs = jnp.exp(log_probs)
        entropy = -jnp.where(probs > 0, log_probs * probs, 0.0).sum(-1, keepdims=True)  # (B, 1)
        distance = jnp.abs(-log_probs - entropy)
        order = jnp.argsort(distance, axis=-1)
        sorted_distance = jnp.take_along_axis(distance, order, axis=-1)
        cumulative = jax.nn.softmax(jnp.take_along_axis(scores, order, axis=-1), axis=-1).cumsum(-1)
        last = jnp.minimum((cumulative < self.mass).sum(-1, keepdims=True), scores.shape[-1] - 1)  # (B, 1)
        sorted_remove = sorted_distance > jnp.take_along_axis(sorted_distance, last, axis=-1)
        sorted_remove = sorted_remove.at[:, : self.min_tokens_to_keep].set(False)
        remove = scatter_sorted(sorted_remove, order)
        return jnp.where(remove, self.filter_value, scores)


def scatter_sorted(sorted_values: Array, order: Array) -> Array:
    """Undo a sort along the last axis: out[b, order[b, i]] = sorted_values[b, i]."""
    rows = jnp.arange(order.shape[0])[:, None]
    return jnp.zeros_like(sorted_values).at[rows, order].set(sorted_values)


def stop_string_hits(stops: StopStringTables, text_start: Array, sequences: Array, cur_len: Array) -> Array:
    """(B,) bool: the rows whose newest token (slot cur_len - 1) completes a stop string, matched on the
    tables (see `StopStringTables`) over the newest W slots; slots before `text_start` (bucket padding) hold
    no text."""
    width = stops.newest.shape[-1] - 1
    slots = cur_len - width + jnp.arange(width)  # the newest W slots, oldest first
    window = jnp.take(sequences, jnp.maximum(slots, 0), axis=1)  # (B, W)
    in_text = slots >= text_start  # (W,)
    needed = stops.newest[window[:, -1]]  # (B, N, W + 1): s[:e] must come before the newest token
    hit = needed[..., 0]  # (B, N)
    for k in reversed(range(width - 1)):
        token = window[:, k]
        hit |= jnp.any(needed & stops.starts[token], axis=-1) & in_text[k]
        # Walk back over a token lying inside the stop string: e bytes needed after it → e - len(token) before.
        source = jnp.arange(width + 1)[None, :] + stops.token_length[token][:, None]  # (B, W + 1)
        carried = needed & stops.inside[token]
        moved = jnp.take_along_axis(carried, jnp.minimum(source, width)[:, None, :], axis=-1)
        needed = moved & (source <= width)[:, None, :] & in_text[k]
        hit |= needed[..., 0]
    return jnp.any(hit, axis=-1)


class LogitsProcessorList(list):
    """Processors applied in order; `from_generation_config` builds the list a GenerationConfig asks for."""

    def __call__(self, input_ids: Array, scores: Array, cur_len: int | Array, attention_mask: Array) -> Array:
        for processor in self:
            scores = processor(input_ids, scores, cur_len, attention_mask)
        return scores

    @classmethod
    def from_generation_config(cls, config: GenerationConfig, min_length: int, eos_token_ids: list[int]
                               ) -> LogitsProcessorList:
        """The processors and warpers of `config` (see `generation_utils.logits_processor_specs`).

        Args:
            min_length: buffer slots (prompt slots included) before which EOS is banned.
        """
        return cls(PROCESSORS[name](**kwargs) for name, kwargs in logits_processor_specs(config, min_length,
                                                                                            eos_token_ids))


PROCESSORS: dict[str, type[LogitsProcessor]] = {
    cls.__name__: cls
    for cls in (
        RepetitionPenaltyLogitsProcessor, NoRepeatNGramLogitsProcessor, NoBadWordsLogitsProcessor,
        MinLengthLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper,
    )
}


# --------------------------------------------------------------------------------------------- the mixin
class DecodeState(NamedTuple):
    """The loop state of greedy search and sampling (a pytree, the `lax.while_loop` carry).

    sequences (B, L) token buffer; attention_mask (B, L); cur_len () slots filled; next_positions (B,) the
    next token's position; unfinished (B,) rows still generating; cache; logits (B, V) for the next token;
    rng the PRNG key; scores (N, B, V) processed scores per step (or None).
    """

    sequences: Array
    attention_mask: Array
    cur_len: Array
    next_positions: Array
    unfinished: Array
    cache: StaticCache
    logits: Array
    rng: Array
    scores: Array | None


def token_embeddings(wte: Any, input_ids: Array) -> Array:
    """`wte(input_ids)` (B, T) -> (B, T, D) as the decoding loop needs it: no float32 copy of a half-precision table.

    XLA on CPU has no bfloat16/float16 gather: it gathers from a float32 convert of the table, and in
    `generate`'s while loop it hoists that convert out of the loop, so a float32 copy of the token table stayed
    live (0.5x of a 2-layer GPT-J-6B-width checkpoint). Inside a conditional the convert is no longer loop
    invariant: it stays fused into the gather, which converts only the rows it reads. Both branches are the
    same lookup, so the result is `wte(input_ids)` whichever is taken.
    """
    if wte.embedding[...].dtype not in (jnp.bfloat16, jnp.float16):
        return wte(input_ids)
    return jax.lax.cond(input_ids[0, 0] >= 0, wte, wte, input_ids)


class GenerationMixin:
    """`generate()` for causal LM heads (classes whose `can_generate()` is True)."""

    # Prompts are left-padded to a multiple of this many tokens: one compiled loop serves a whole bucket.
    pad_to_multiple_of = 16

    @property
    def generation_config(self) -> GenerationConfig:
        """The default settings of `generate()`: the checkpoint's `generation_config.json`, else the model
        config's. Assign a GenerationConfig to change them."""
        if getattr(self, "_generation_config", None) is None:
            self._generation_config = default_generation_config(self.config)
        return self._generation_config

    @generation_config.setter
    def generation_config(self, value: GenerationConfig) -> None:
        if not isinstance(value, GenerationConfig):
            raise ValueError(f"generation_config must be a GenerationConfig, got {type(value).__name__}")
        self._generation_config = value

    def generate(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        generation_config: GenerationConfig | None = None,
        streamer: BaseStreamer | None = None,
        prng_key: Array | None = None,
        seed: int | None = None,
        params: dict | None = None,
        **kwargs: Any,
    ) -> Array | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
        """Generate continuations of `input_ids` (greedy, sampling or beam search, as the settings say).

        Args:
            input_ids: (B, P) int prompts; left-pad a batch (a padded row generates what its prompt alone
                would). None starts from `bos_token_id`.
            attention_mask: (B, P) 1 = token, 0 = padding; default: 0 where `input_ids == pad_token_id`.
            generation_config: settings instead of `self.generation_config`.
            streamer: gets the prompt, then each new token (greedy and sampling; runs the step-by-step path).
            stopping_criteria, logits_processor, tokenizer (in kwargs): the call's own stopping criteria (run on
                the host between compiled steps; stop strings are matched inside the compiled loop) and
                processors (compiled: they must be traceable), and the tokenizer `stop_strings=` need (see
                `generation.stopping_criteria`).
            prng_key: the sampling key; `seed` makes one (default `jax.random.PRNGKey(0)`).
            params: the params to run with (default `self.params`); an active LoRA adapter is folded in.
            **kwargs: GenerationConfig fields, e.g. `max_new_tokens=20, do_sample=True, top_p=0.9`.
        Returns:
            (B * num_return_sequences, P + N) int32 token ids, or with `return_dict_in_generate=True` a
            GenerateDecoderOnlyOutput / GenerateBeamDecoderOnlyOutput (with `scores` if `output_scores`).
        """
        if not self.can_generate():
            raise TypeError(f"{type(self).__name__} has no language-modeling head, so it cannot generate()")
        plan = prepare_generation(
            self.config, self.generation_config, _as_numpy(input_ids), _as_numpy(attention_mask), generation_config,
            traced=True, **kwargs,
        )
        if streamer is not None and plan.mode == "beam":
            raise ValueError("streamer cannot be used with beam search; set num_beams=1")
        if prng_key is None:
            prng_key = jax.random.PRNGKey(0 if seed is None else seed)
        params = self.adapted_params(self.params if params is None else params)  # with the active LoRA adapter
        if plan.mode == "beam":
            return self._beam_search(plan, params)
        return self._sample(plan, params, streamer, prng_key)

    # ----------------------------------------------------------------------------------------- decoding
    def _logits_processors(self, plan: GenerationPlan, prompt_length: int) -> LogitsProcessorList:
        """The configured processors and warpers, then the call's own `logits_processor=` list."""
        processors = LogitsProcessorList.from_generation_config(
            plan.config, prompt_length + plan.min_new_tokens, plan.eos_token_ids
        )
        processors.extend(plan.logits_processor)
        return processors

    def _next_logits(self, params: dict, input_ids: Array, attention_mask: Array, position_ids: Array,
                     cache: StaticCache) -> tuple[Array, StaticCache]:
        """Run the new tokens (B, T) through the model into the cache; float32 logits (B, V) of the last one.
        Only the last position goes through the LM head (the prompt's other logits are never used)."""

        def last_logits(module: Any) -> tuple[Array, StaticCache]:
            outputs = module.transformer(
                inputs_embeds=token_embeddings(module.transformer.wte, input_ids), past_key_values=cache,
                attention_mask=attention_mask, position_ids=position_ids, use_cache=True, return_dict=True,
            )
            logits = lm_head_logits(module.lm_head, module.transformer.wte, outputs.last_hidden_state[:, -1])
            return logits.astype(jnp.float32), outputs.past_key_values

        return last_logits(self._compiled().bind(params))

    def _bucketed_prompts(self, plan: GenerationPlan) -> tuple[np.ndarray, np.ndarray]:
        """The prompts (B', P') and mask left-padded to the bucket length, expanded to B' rows."""
        width = bucket_length(plan.prompt_length, self.pad_to_multiple_of, plan.max_positions - plan.max_new_tokens)
        # The bucket's padding slots are masked and cut off the result: id 0 keeps them inside the vocabulary
        # (the model checks its ids; a config's pad token may lie outside it).
        input_ids, prompt_mask = left_pad(plan.input_ids, plan.attention_mask, width, 0)
        return plan.expand(input_ids), plan.expand(prompt_mask)

    def _decoder(self, plan: GenerationPlan, prompt_length: int) -> tuple[Any, Any, Any]:
        """The pure functions of greedy search / sampling for this plan: `prefill(params, input_ids,
        prompt_mask, position_ids, rng, stops) -> state` (cache filled, first token chosen), `step(params,
        state, stops)` (one more token) and `cond(state)` (whether to continue). `stops`: None, or the
        stop-string tables and the first text slot, matched after every token (`stop_string_hits`)."""
        config = plan.config
        total = prompt_length + plan.max_new_tokens
        processors = self._logits_processors(plan, prompt_length)
        eos = jnp.asarray(plan.eos_token_ids, dtype=jnp.int32)

        def select(state: DecodeState, stops: tuple[StopStringTables, Array] | None) -> DecodeState:
            scores = processors(state.sequences, state.logits, state.cur_len, state.attention_mask)
            rng, sample_rng = jax.random.split(state.rng)
            if plan.mode == "sample":
                next_tokens = jax.random.categorical(sample_rng, scores, axis=-1).astype(jnp.int32)
            else:
                next_tokens = jnp.argmax(scores, axis=-1).astype(jnp.int32)
            next_tokens = jnp.where(state.unfinished, next_tokens, plan.pad_token_id)  # finished rows get padding
            sequences = jax.lax.dynamic_update_slice(state.sequences, next_tokens[:, None], (0, state.cur_len))
            all_scores = state.scores
            if all_scores is not None:
                step_index = state.cur_len - prompt_length
                all_scores = jax.lax.dynamic_update_slice(all_scores, scores[None], (step_index, 0, 0))
            unfinished = state.unfinished & ~jnp.isin(next_tokens, eos)
            if stops is not None:
                unfinished &= ~stop_string_hits(*stops, sequences, state.cur_len + 1)
            return state._replace(sequences=sequences, cur_len=state.cur_len + 1, unfinished=unfinished, rng=rng,
                                  scores=all_scores)

        def prefill(params: dict, input_ids: Array, prompt_mask: Array, position_ids: Array, rng: Array,
                    stops: tuple[StopStringTables, Array] | None = None) -> DecodeState:
            rows = input_ids.shape[0]
            sequences = jnp.full((rows, total), plan.pad_token_id, dtype=jnp.int32).at[:, :prompt_length].set(input_ids)
            attention_mask = jnp.ones((rows, total), dtype=jnp.int32).at[:, :prompt_length].set(prompt_mask)
            cache = self.init_cache(rows, total)
            logits, cache = self._next_logits(params, input_ids, attention_mask, position_ids, cache)
            all_scores = None
            if config.output_scores:
                all_scores = jnp.zeros((plan.max_new_tokens, rows, logits.shape[-1]), dtype=jnp.float32)
            state = DecodeState(
                sequences=sequences, attention_mask=attention_mask, cur_len=jnp.asarray(prompt_length, jnp.int32),
                next_positions=prompt_mask.sum(-1).astype(jnp.int32), unfinished=jnp.ones(rows, dtype=bool),
                cache=cache, logits=logits, rng=rng, scores=all_scores,
            )
            return select(state, stops)

        def step(params: dict, state: DecodeState, stops: tuple[StopStringTables, Array] | None = None
                 ) -> DecodeState:
            last = jax.lax.dynamic_slice_in_dim(state.sequences, state.cur_len - 1, 1, axis=1)  # (B, 1)
            logits, cache = self._next_logits(
                params, last, state.attention_mask, state.next_positions[:, None], state.cache
            )
            return select(state._replace(logits=logits, cache=cache, next_positions=state.next_positions + 1), stops)

        def cond(state: DecodeState) -> Array:
            return (state.cur_len < total) & state.unfinished.any()

        return prefill, step, cond

    def _generation_program(self, name: str, key: tuple, build: Any) -> Any:
        """A jitted function kept on the model per settings `key`; jax.jit itself keys on the input shapes.

        It is traced without the model's in-graph id checks (`ops.check_ids`): the prompt's ids and the
        positions were checked on the host (`prepare_generation`) and every new token indexes the vocabulary's
        scores, so the check cannot fire here, yet its host callback would cost each call JAX's fast dispatch
        path and each decoding step a conditional (generate() ran 25% slower; docs/benchmarks-flax.md)."""
        if "_generate_cache" not in self.__dict__:
            self._generate_cache: dict[tuple, Any] = {}
            self.generate_trace_count = 0
        if (name, key) not in self._generate_cache:
            function = build()

            def without_id_checks(*args: Any) -> Any:
                with ops.host_checked_ids():  # runs while tracing only
                    return function(*args)

            self._generate_cache[(name, key)] = jax.jit(without_id_checks)
        return self._generate_cache[(name, key)]

    def _settings_key(self, plan: GenerationPlan, prompt_length: int) -> tuple:
        """What a compiled function depends on besides the input shapes: the settings and the bucket (the
        decoding functions close over the padded prompt length, and beam search over the batch size). The call's
        own processors count by identity: pass the same objects again to reuse a compiled program (the program
        keeps them alive, so an id is never reused while its program exists)."""
        host_only = ("max_time", "stop_strings")  # host checks, or stop-string tables passed as loop arguments
        settings = {k: v for k, v in plan.config.to_diff_dict().items() if k not in host_only}
        return (repr(sorted(settings.items())), plan.mode, plan.max_new_tokens, plan.min_new_tokens,
                tuple(plan.eos_token_ids), plan.pad_token_id, prompt_length, plan.batch_size,
                tuple(id(p.processor) for p in plan.logits_processor))

    def _sample(self, plan: GenerationPlan, params: dict, streamer: BaseStreamer | None, rng: Array
                ) -> Array | GenerateDecoderOnlyOutput:
        """Greedy search or sampling: one compiled `lax.while_loop` (stop strings matched inside it), or
        jitted steps when streaming or with other stopping criteria (they run on the host)."""
        input_ids, prompt_mask = self._bucketed_prompts(plan)
        prompt_length = input_ids.shape[1]
        position_ids = positions_from_mask(prompt_mask)
        prefill, step, cond = self._decoder(plan, prompt_length)
        key = self._settings_key(plan, prompt_length)
        tables = stop_string_tables(plan.stopping_criteria, self.config.vocab_size)
        if streamer is None and (tables is not None or not plan.stopping_criteria):
            stops = None
            if tables is not None:  # arguments, not constants: one program serves every stop string of a bucket
                text_start = jnp.asarray(prompt_length - plan.prompt_length, jnp.int32)
                stops = (StopStringTables(*(jnp.asarray(table) for table in tables)), text_start)

            def build() -> Any:
                def loop(params: dict, input_ids: Array, prompt_mask: Array, position_ids: Array, rng: Array,
                         stops: tuple[StopStringTables, Array] | None) -> DecodeState:
                    self.generate_trace_count += 1  # runs only while tracing: counts compilations
                    state = prefill(params, input_ids, prompt_mask, position_ids, rng, stops)
                    return jax.lax.while_loop(cond, lambda state: step(params, state, stops), state)

                return loop

            state = self._generation_program("loop", key, build)(params, input_ids, prompt_mask, position_ids, rng,
                                                                 stops)
        else:
            if streamer is not None:
                streamer.put(plan.input_ids)
            jitted_prefill = self._generation_program("prefill", key, lambda: prefill)
            state = self._between_steps(plan, jitted_prefill(params, input_ids, prompt_mask, position_ids, rng),
                                        streamer)
            jitted_step = self._generation_program("step", key, lambda: step)
            while bool(cond(state)):
                state = self._between_steps(plan, jitted_step(params, state), streamer)
            if streamer is not None:
                streamer.end()
        cur_len = int(state.cur_len)
        sequences = state.sequences[:, prompt_length - plan.prompt_length : cur_len]  # drop the bucket padding
        if plan.config.return_dict_in_generate:
            scores = None
            if state.scores is not None:
                scores = tuple(state.scores[i] for i in range(cur_len - prompt_length))
            return GenerateDecoderOnlyOutput(sequences=sequences, scores=scores)
        return sequences

    def _between_steps(self, plan: GenerationPlan, state: DecodeState, streamer: BaseStreamer | None
                       ) -> DecodeState:
        """On the host after each compiled step: hand the newest tokens to the streamer, and stop the rows the
        stopping criteria say are done (they see the sequences without the bucket padding)."""
        cur_len = int(state.cur_len)
        if streamer is not None:
            streamer.put(np.asarray(state.sequences[:, cur_len - 1]))
        if plan.stopping_criteria:
            bucket_padding = state.sequences.shape[1] - plan.prompt_length - plan.max_new_tokens
            done = plan.stopping_criteria(np.asarray(state.sequences[:, bucket_padding:cur_len]))
            state = state._replace(unfinished=state.unfinished & jnp.asarray(~done))
        return state

    def _beam_search(self, plan: GenerationPlan, params: dict) -> Array | GenerateBeamDecoderOnlyOutput:
        """Beam search: jitted model steps, the hypothesis bookkeeping in `BeamSearchScorer` (NumPy)."""
        config = plan.config
        batch_size, num_beams = plan.batch_size, plan.num_beams
        rows = batch_size * num_beams
        input_ids, prompt_mask = self._bucketed_prompts(plan)
        prompt_length = input_ids.shape[1]
        total = prompt_length + plan.max_new_tokens
        processors = self._logits_processors(plan, prompt_length)
        key = self._settings_key(plan, prompt_length)

        def beam_candidates(sequences: Array, logits: Array, cur_len: Array, attention_mask: Array, beam_scores: Array
                       ) -> tuple[Array, Array, Array]:
            scores = processors(sequences, jax.nn.log_softmax(logits, axis=-1), cur_len, attention_mask)
            vocab_size = scores.shape[-1]
            top_scores, top_ids = jax.lax.top_k(
                (scores + beam_scores[:, None]).reshape(batch_size, num_beams * vocab_size), 2 * num_beams
            )  # (B, 2K), best first
            return scores, top_scores, top_ids

        def reorder_beams(sequences: Array, cache: StaticCache, beam_rows: Array) -> tuple[Array, StaticCache]:
            # Each row continues the beam it was chosen from.
            return sequences[beam_rows], jax.tree_util.tree_map(lambda x: x[beam_rows] if x.ndim else x, cache)

        next_logits = self._generation_program("logits", key, lambda: self._next_logits)
        candidates = self._generation_program("candidates", key, lambda: beam_candidates)
        reorder = self._generation_program("reorder", key, lambda: reorder_beams)
        sequences = jnp.full((rows, total), plan.pad_token_id, dtype=jnp.int32).at[:, :prompt_length].set(input_ids)
        attention_mask = jnp.ones((rows, total), dtype=jnp.int32).at[:, :prompt_length].set(prompt_mask)
        logits, cache = next_logits(params, jnp.asarray(input_ids), attention_mask,
                                    jnp.asarray(positions_from_mask(prompt_mask)), self.init_cache(rows, total))
        next_positions = jnp.asarray(prompt_mask.sum(-1), dtype=jnp.int32)
        scorer = BeamSearchScorer(
            batch_size, num_beams, config.length_penalty, config.early_stopping, plan.num_return_sequences,
            plan.attention_mask.sum(-1), plan.max_new_tokens,
        )
        beam_scores = jnp.asarray(scorer.initial_scores())
        all_scores = []
        cur_len = prompt_length
        while cur_len < total:
            scores, top_scores, top_ids = candidates(sequences, logits, jnp.asarray(cur_len), attention_mask,
                                                     beam_scores)
            if config.output_scores:
                all_scores.append(scores)
            vocab_size = scores.shape[-1]
            top_ids = np.asarray(top_ids)
            beam_scores_np, beam_tokens_np, beam_rows_np = scorer.process(
                np.asarray(sequences[:, prompt_length:cur_len]), np.asarray(top_scores), top_ids % vocab_size,
                top_ids // vocab_size, plan.eos_token_ids, plan.pad_token_id,
            )
            beam_tokens = jnp.asarray(beam_tokens_np, dtype=jnp.int32)
            beam_scores = jnp.asarray(beam_scores_np)
            sequences, cache = reorder(sequences, cache, jnp.asarray(beam_rows_np))
            sequences = sequences.at[:, cur_len].set(beam_tokens)
            cur_len += 1
            text = slice(prompt_length - plan.prompt_length, cur_len)  # without the bucket padding
            if cur_len == total or scorer.is_done or plan.beams_stopped(np.asarray(sequences[:, text])):
                break
            logits, cache = next_logits(params, beam_tokens[:, None], attention_mask, next_positions[:, None], cache)
            next_positions = next_positions + 1
        generated, sequence_scores = scorer.finalize(
            np.asarray(sequences[:, prompt_length:cur_len]), np.asarray(beam_scores), plan.max_new_tokens,
            plan.eos_token_ids, plan.pad_token_id,
        )
        prompts = np.repeat(plan.input_ids, plan.num_return_sequences, axis=0)
        sequences = jnp.asarray(np.concatenate([prompts, generated], axis=1), dtype=jnp.int32)
        if config.return_dict_in_generate:
            return GenerateBeamDecoderOnlyOutput(
                sequences=sequences, sequences_scores=jnp.asarray(sequence_scores), scores=tuple(all_scores) or None
            )
        return sequences


def _as_numpy(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x)
