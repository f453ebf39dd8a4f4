"""`generate()` for the TensorFlow twins: logits processors and warpers, then `GenerationMixin`.

`lib/pt/generation.py` and `lib/flax/generation.py` have the same classes in the same order. Argument
resolution, the processor plan and beam bookkeeping are framework-free (`twinformers.generation.utils`).

Every processor is called as `processor(input_ids, scores, cur_len, attention_mask)` on the fixed token
buffer: input_ids (B, L) with slots [0, cur_len) filled, attention_mask (B, L) 1 where a slot holds a real
token (not padding), scores (B, V) float32; `cur_len` is a scalar tensor.

Greedy search and sampling run as one `tf.function(jit_compile=True)`: XLA compiles the prefill and a
`tf.while_loop` over a `StaticCache` together. Prompts are left-padded to a multiple of
`pad_to_multiple_of`, so the loop compiles once per (batch, padded length, settings) bucket; the compiled
functions are kept on the model. Stop strings are matched inside the loop on per-token tables
(`stop_string_hits`). With a streamer or host-side stopping criteria, the same step function runs
XLA-compiled from a Python loop instead. Beam search steps the compiled model from Python around the NumPy
scorer. Sampling draws from stateless RNG (`seed=`), so a seed reproduces a generation inside and outside the
compiled loop.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python.xla import dynamic_slice, dynamic_update_slice

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
from .ops import StaticCache

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

Tensor = tf.Tensor
FILTER_VALUE = -float("inf")


# --------------------------------------------------------------------------------------------- helpers
def filled_tokens(attention_mask: Tensor, cur_len: int | Tensor) -> Tensor:
    """(B, L) bool: the slot holds a real token among the first `cur_len`."""
    return tf.cast(attention_mask, tf.bool) & (tf.range(attention_mask.shape[-1]) < cur_len)


def token_presence(tokens: Tensor, keep: Tensor, vocab_size: int) -> Tensor:
    """(B, N) token ids where `keep` (B, N) is True → (B, V) bool, True for every such id."""
    batch_size, length = tokens.shape
    ids = tf.where(keep, tf.cast(tokens, tf.int32), vocab_size)  # dropped entries land in an extra column
    rows = tf.broadcast_to(tf.range(batch_size)[:, None], (batch_size, length))
    indices = tf.reshape(tf.stack([rows, ids], axis=-1), (-1, 2))
    counts = tf.scatter_nd(indices, tf.ones(batch_size * length, tf.int32), (batch_size, vocab_size + 1))
    return counts[:, :vocab_size] > 0


def last_tokens(input_ids: Tensor, valid: Tensor, cur_len: int | Tensor, length: int) -> tuple[Tensor, Tensor]:
    """The `length` slots before `cur_len`: tokens (B, length) and whether all of them are real (B,)."""
    start = tf.maximum(cur_len - length, 0)
    enough = cur_len >= length
    size = tf.stack([input_ids.shape[0], length])
    tokens = dynamic_slice(input_ids, tf.stack([0, start]), size)
    return tokens, tf.reduce_all(dynamic_slice(valid, tf.stack([0, start]), size), axis=-1) & enough


def scatter_sorted(sorted_values: Tensor, order: Tensor) -> Tensor:
    """Undo a sort along the last axis: out[b, order[b, i]] = sorted_values[b, i]."""
    return tf.gather(sorted_values, tf.argsort(order, axis=-1), batch_dims=1)


def stop_string_hits(stops: StopStringTables, text_start: Tensor, sequences: Tensor, cur_len: Tensor) -> Tensor:
    """(B,) bool: the rows whose newest token (slot cur_len - 1) completes a stop string, matched on the
    tables (see `StopStringTables`) over the newest W slots; slots before `text_start` (bucket padding) hold
    no text."""
    width = stops.newest.shape[-1] - 1
    slots = cur_len - width + tf.range(width)  # the newest W slots, oldest first
    window = tf.gather(sequences, tf.maximum(slots, 0), axis=1)  # (B, W)
    in_text = slots >= text_start  # (W,)
    needed = tf.gather(stops.newest, window[:, -1])  # (B, N, W + 1): s[:e] must come before the newest token
    hit = needed[..., 0]  # (B, N)
    for k in reversed(range(width - 1)):
        token = window[:, k]
        hit |= tf.reduce_any(needed & tf.gather(stops.starts, token), axis=-1) & in_text[k]
        # Walk back over a token lying inside the stop string: e bytes needed after it → e - len(token) before.
        source = tf.range(width + 1)[None, :] + tf.gather(stops.token_length, token)[:, None]  # (B, W + 1)
        carried = needed & tf.gather(stops.inside, token)
        index = tf.broadcast_to(tf.minimum(source, width)[:, None, :], tf.shape(carried))
        moved = tf.gather(carried, index, batch_dims=2)
        needed = moved & (source <= width)[:, None, :] & in_text[k]
        hit |= needed[..., 0]
    return tf.reduce_any(hit, axis=-1)


# --------------------------------------------------------------------------------------------- processors
class LogitsProcessor:
    """Base class: `__call__(input_ids, scores, cur_len, attention_mask) -> scores`."""

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        raise NotImplementedError


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Divide positive (multiply negative) scores of tokens already in the sequence by `penalty`."""

    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise ValueError(f"repetition_penalty must be a float > 0, got {penalty!r}")
        self.penalty = penalty

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        present = token_presence(input_ids, filled_tokens(attention_mask, cur_len), scores.shape[-1])
        penalized = tf.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return tf.where(present, penalized, scores)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban every token that would complete an n-gram already in the sequence."""

    def __init__(self, ngram_size: int) -> None:
        if not isinstance(ngram_size, int) or ngram_size < 1:
            raise ValueError(f"no_repeat_ngram_size must be a positive int, got {ngram_size!r}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        n, length = self.ngram_size, input_ids.shape[-1]
        if n > length:
            return scores
        valid = filled_tokens(attention_mask, cur_len)
        starts = length - n + 1
        # Every n-gram of the buffer, (B, W, n), and whether it lies wholly among the real tokens.
        ngrams = tf.stack([input_ids[:, k : k + starts] for k in range(n)], axis=-1)
        ngram_valid = tf.reduce_all(tf.stack([valid[:, k : k + starts] for k in range(n)], axis=-1), axis=-1)
        prefix, prefix_valid = last_tokens(input_ids, valid, cur_len, n - 1)  # (B, n-1), (B,)
        matches = tf.reduce_all(ngrams[..., :-1] == prefix[:, None, :], axis=-1) & ngram_valid & prefix_valid[:, None]
        banned = token_presence(ngrams[..., -1], matches, scores.shape[-1])
        return tf.where(banned, FILTER_VALUE, scores)


class NoBadWordsLogitsProcessor(LogitsProcessor):
    """Ban the last token of each `bad_words_ids` sequence when the tokens before it were just generated
    (single-token entries are always banned). A bad word equal to `[eos]` is ignored, as in Hugging Face."""

    def __init__(self, bad_words_ids: list[list[int]], eos_token_id: int | list[int] | None = None) -> None:
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        self.bad_words_ids = [list(seq) for seq in bad_words_ids if not (len(seq) == 1 and seq[0] in eos)]
        if not all(seq and all(isinstance(t, int) and t >= 0 for t in seq) for seq in self.bad_words_ids):
            raise ValueError(f"bad_words_ids must be a list of non-empty lists of ids, got {bad_words_ids!r}")

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        vocab_size = scores.shape[-1]
        valid = filled_tokens(attention_mask, cur_len)
        vocab = tf.range(vocab_size)
        banned = tf.zeros(scores.shape, dtype=tf.bool)
        for seq in self.bad_words_ids:
            if seq[-1] >= vocab_size:
                continue
            if len(seq) == 1:
                hit = tf.ones(scores.shape[:1], dtype=tf.bool)
            else:
                tail, tail_valid = last_tokens(input_ids, valid, cur_len, len(seq) - 1)
                prefix = tf.constant(seq[:-1], dtype=input_ids.dtype)
                hit = tf.reduce_all(tail == prefix, axis=-1) & tail_valid  # (B,)
            banned |= hit[:, None] & (vocab == seq[-1])
        return tf.where(banned, FILTER_VALUE, scores)


class MinLengthLogitsProcessor(LogitsProcessor):
    """Ban the EOS tokens while fewer than `min_length` slots are filled."""

    def __init__(self, min_length: int, eos_token_id: int | list[int]) -> None:
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"min_length must be a non-negative int, got {min_length!r}")
        self.min_length = min_length
        self.eos_token_id = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        vocab = tf.range(scores.shape[-1])
        is_eos = tf.reduce_any(vocab[:, None] == tf.constant(self.eos_token_id, tf.int32)[None, :], axis=-1)
        return tf.where(is_eos & (cur_len < self.min_length), FILTER_VALUE, scores)


class TemperatureLogitsWarper(LogitsProcessor):
    """Divide the scores by `temperature` (< 1 sharpens, > 1 flattens the distribution)."""

    def __init__(self, temperature: float) -> None:
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a float > 0, got {temperature!r}")
        self.temperature = temperature

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keep the `top_k` highest scores (ties with the k-th included), filter the rest."""

    def __init__(self, top_k: int, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        top_k = min(self.top_k, scores.shape[-1])
        kth_best = tf.math.top_k(scores, top_k).values[:, -1:]  # (B, 1)
        return tf.where(scores < kth_best, self.filter_value, scores)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p`."""

    def __init__(self, top_p: float, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        order = tf.argsort(scores, axis=-1)  # ascending
        sorted_scores = tf.gather(scores, order, batch_dims=1)
        cumulative = tf.cumsum(tf.nn.softmax(sorted_scores, axis=-1), axis=-1)
        # Drop the low tail holding at most 1 - top_p of the mass; the best `min_tokens_to_keep` always stay.
        sorted_remove = cumulative <= 1 - self.top_p
        keep_best = tf.range(scores.shape[-1]) >= scores.shape[-1] - self.min_tokens_to_keep
        sorted_remove = sorted_remove & ~keep_best
        remove = scatter_sorted(sorted_remove, order)
        return tf.where(remove, self.filter_value, scores)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy, up to `mass`."""

    def __init__(self, mass: float = 0.9, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(mass, (int, float)) and 0 < mass < 1):
            raise ValueError(f"typical_p must be in (0, 1), got {mass!r}")
        self.mass = mass
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
        log_probs = tf.nn.log_softmax(scores, axis=-1)
        probs = tf.exp(log_probs)
        entropy = -tf.reduce_sum(tf.where(probs > 0, log_probs * probs, 0.0), axis=-1, keepdims=True)  # (B, 1)
        distance = tf.abs(-log_probs - entropy)
        order = tf.argsort(distance, axis=-1)
        sorted_distance = tf.gather(distance, order, batch_dims=1)
        cumulative = tf.cumsum(tf.nn.softmax(tf.gather(scores, order, batch_dims=1), axis=-1), axis=-1)
        last = tf.minimum(tf.reduce_sum(tf.cast(cumulative < self.mass, tf.int32), -1, keepdims=True),
                          scores.shape[-1] - 1)  # (B, 1)
        sorted_remove = sorted_distance > tf.gather(sorted_distance, last, batch_dims=1)
        sorted_remove = sorted_remove & (tf.range(scores.shape[-1]) >= self.min_tokens_to_keep)
        remove = scatter_sorted(sorted_remove, order)
        return tf.where(remove, self.filter_value, scores)


class LogitsProcessorList(list):
    """Processors applied in order; `from_generation_config` builds the list a GenerationConfig asks for."""

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int | Tensor, attention_mask: Tensor) -> Tensor:
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
    """The loop state of greedy search and sampling (a `tf.nest` structure, the `tf.while_loop` variable).

    sequences (B, L) token buffer; attention_mask (B, L); cur_len () slots filled; next_positions (B,) the
    next token's position; unfinished (B,) rows still generating; cache; logits (B, V) for the next token;
    rng (2,) the stateless seed; scores (N, B, V) processed scores per step (or (0,) when not kept).
    """

    sequences: Tensor
    attention_mask: Tensor
    cur_len: Tensor
    next_positions: Tensor
    unfinished: Tensor
    cache: StaticCache
    logits: Tensor
    rng: Tensor
    scores: Tensor


def token_embeddings(wte: Any, input_ids: Tensor) -> Tensor:
    """`wte(input_ids)` (B, T) -> (B, T, D) as the decoding loop needs it: no float32 copy of a half-precision table.

    XLA on CPU has no bfloat16/float16 gather: it gathers from a float32 convert of the table, and in
    `generate`'s while loop it hoists that convert out of the loop, so a float32 copy of the token table stayed
    live (0.5x of a 2-layer GPT-J-6B-width checkpoint). Inside a conditional the convert is no longer loop
    invariant: it stays fused into the gather, which converts only the rows it reads. Both branches are the
    same lookup, so the result is `wte(input_ids)` whichever is taken.
    """
    if tf.as_dtype(wte.embeddings.dtype) not in (tf.bfloat16, tf.float16):
        return wte(input_ids)
    branch = tf.cast(input_ids[0, 0] < 0, tf.int32)  # an index, not a predicate: XLA turns a cheap two-way
    return tf.switch_case(branch, [lambda: wte(input_ids)] * 2)  # `cond` into a select of both branches


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

    def init_cache(self, batch_size: int, max_length: int) -> StaticCache:
        """A zeroed `StaticCache` for `batch_size` rows and up to `max_length` positions: pass it as
        `past_key_values`, then the `past_key_values` each call returns, so every step keeps its shapes.

        Args:
            batch_size: rows. max_length: positions the cache holds, at most the model's position table.
        """
        config = self.config
        if not 0 < max_length <= config.max_position_embeddings:
            raise ValueError(
                f"max_length={max_length} must be in [1, {config.max_position_embeddings}] "
                "(n_positions / max_position_embeddings)"
            )
        num_heads = config.num_attention_heads
        shape = (batch_size, num_heads, max_length, config.hidden_size // num_heads)
        key_values = tuple(
            (tf.zeros(shape, self.compute_dtype), tf.zeros(shape, self.compute_dtype))
            for _ in range(config.num_hidden_layers)
        )
        return StaticCache(key_values=key_values, index=tf.zeros((), tf.int32))

    def generate(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        streamer: BaseStreamer | None = None,
        seed: int | Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
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
            seed: the stateless sampling seed (an int, or a (2,) int tensor as `tf.random.stateless_*` take);
                default: drawn from TensorFlow's global generator (`tf.random.set_seed`).
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
        if seed is None:
            seed = tf.random.uniform((2,), maxval=2**31 - 1, dtype=tf.int32)
        rng = tf.cast(tf.broadcast_to(seed, (2,)) if np.ndim(seed) == 0 else seed, tf.int32)
        if plan.mode == "beam":
            return self._beam_search(plan)
        return self._sample(plan, streamer, rng)

    # ----------------------------------------------------------------------------------------- decoding
    def _logits_processors(self, plan: GenerationPlan, prompt_length: int) -> LogitsProcessorList:
        """The configured processors and warpers, then the call's own `logits_processor=` list."""
        processors = LogitsProcessorList.from_generation_config(
            plan.config, prompt_length + plan.min_new_tokens, plan.eos_token_ids
        )
        processors.extend(plan.logits_processor)
        return processors

    def _next_logits(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache: StaticCache
                     ) -> tuple[Tensor, StaticCache]:
        """Run the new tokens (B, T) through the model into the cache; float32 logits (B, V) of the last one.
        Only the last position goes through the LM head (the prompt's other logits are never used)."""
        outputs = self.base_model(
            inputs_embeds=token_embeddings(self.get_input_embeddings(), input_ids), past_key_values=cache,
            attention_mask=attention_mask, position_ids=position_ids, use_cache=True, return_dict=True,
        )
        logits = self.get_output_embeddings()(outputs.last_hidden_state[:, -1])
        return tf.cast(logits, tf.float32), outputs.past_key_values

    def _bucketed_prompts(self, plan: GenerationPlan) -> tuple[np.ndarray, np.ndarray]:
        """The prompts (B', P') and mask left-padded to the bucket length, expanded to B' rows."""
        width = bucket_length(plan.prompt_length, self.pad_to_multiple_of, plan.max_positions - plan.max_new_tokens)
        # The bucket's padding slots are masked and cut off the result: id 0 keeps them inside the vocabulary
        # (the model checks its ids; a config's pad token may lie outside it).
        input_ids, prompt_mask = left_pad(plan.input_ids, plan.attention_mask, width, 0)
        return plan.expand(input_ids).astype(np.int32), plan.expand(prompt_mask).astype(np.int32)

    def _decoder(self, plan: GenerationPlan, prompt_length: int) -> tuple[Any, Any, Any]:
        """The functions of greedy search / sampling for this plan: `prefill(input_ids, prompt_mask,
        position_ids, rng, stops) -> state` (cache filled, first token chosen), `step(state, stops)` (one more
        token) and `cond(state)` (whether to continue). `stops`: None, or the stop-string tables and the first
        text slot, matched after every token (`stop_string_hits`)."""
        config = plan.config
        total = prompt_length + plan.max_new_tokens
        processors = self._logits_processors(plan, prompt_length)
        eos = tf.constant(plan.eos_token_ids, dtype=tf.int32, shape=(len(plan.eos_token_ids),))

        def select(state: DecodeState, stops: tuple[StopStringTables, Tensor] | None) -> DecodeState:
            scores = processors(state.sequences, state.logits, state.cur_len, state.attention_mask)
            if plan.mode == "sample":
                # A fresh stateless seed per slot: the same seed reproduces the draw in any execution mode.
                sample_seed = state.rng + tf.stack([0, state.cur_len])
                next_tokens = tf.random.stateless_categorical(scores, 1, sample_seed, dtype=tf.int32)[:, 0]
            else:
                next_tokens = tf.argmax(scores, axis=-1, output_type=tf.int32)
            next_tokens = tf.where(state.unfinished, next_tokens, plan.pad_token_id)  # finished rows get padding
            sequences = dynamic_update_slice(state.sequences, next_tokens[:, None], tf.stack([0, state.cur_len]))
            all_scores = state.scores
            if config.output_scores:
                step_index = state.cur_len - prompt_length
                all_scores = dynamic_update_slice(all_scores, scores[None], tf.stack([step_index, 0, 0]))
            unfinished = state.unfinished & ~tf.reduce_any(next_tokens[:, None] == eos[None, :], axis=-1)
            if stops is not None:
                unfinished &= ~stop_string_hits(*stops, sequences, state.cur_len + 1)
            return state._replace(sequences=sequences, cur_len=state.cur_len + 1, unfinished=unfinished,
                                  scores=all_scores)

        def prefill(input_ids: Tensor, prompt_mask: Tensor, position_ids: Tensor, rng: Tensor,
                    stops: tuple[StopStringTables, Tensor] | None = None) -> DecodeState:
            rows = tf.shape(input_ids)[0]  # a tensor: the batch may be unknown while tracing (a serving signature)
            padding = tf.fill((rows, plan.max_new_tokens), plan.pad_token_id)
            sequences = tf.concat([input_ids, padding], axis=1)
            attention_mask = tf.concat([prompt_mask, tf.ones((rows, plan.max_new_tokens), tf.int32)], axis=1)
            cache = self.init_cache(rows, total)
            logits, cache = self._next_logits(input_ids, attention_mask, position_ids, cache)
            all_scores = tf.zeros((0,), tf.float32)
            if config.output_scores:
                all_scores = tf.zeros((plan.max_new_tokens, rows, logits.shape[-1]), dtype=tf.float32)
            state = DecodeState(
                sequences=sequences, attention_mask=attention_mask, cur_len=tf.constant(prompt_length, tf.int32),
                next_positions=tf.reduce_sum(prompt_mask, axis=-1), unfinished=tf.ones(rows, dtype=tf.bool),
                cache=cache, logits=logits, rng=rng, scores=all_scores,
            )
            return select(state, stops)

        def step(state: DecodeState, stops: tuple[StopStringTables, Tensor] | None = None) -> DecodeState:
            last = dynamic_slice(state.sequences, tf.stack([0, state.cur_len - 1]), (tf.shape(state.sequences)[0], 1))
            logits, cache = self._next_logits(last, state.attention_mask, state.next_positions[:, None], state.cache)
            return select(state._replace(logits=logits, cache=cache, next_positions=state.next_positions + 1), stops)

        def cond(state: DecodeState) -> Tensor:
            return (state.cur_len < total) & tf.reduce_any(state.unfinished)

        return prefill, step, cond

    def _generation_program(self, name: str, key: tuple, build: Any) -> Any:
        """An XLA-compiled function kept on the model per settings `key`; tf.function itself keys on the input
        shapes (kept out of Keras' attribute tracking)."""
        if "_generation_programs" not in self.__dict__:
            self.__dict__["_generation_programs"] = {}
            self.__dict__["generate_trace_count"] = 0
        programs = self.__dict__["_generation_programs"]
        if (name, key) not in programs:
            programs[(name, key)] = tf.function(build(), jit_compile=True, reduce_retracing=False)
        return programs[(name, key)]

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

    def _sample(self, plan: GenerationPlan, streamer: BaseStreamer | None, rng: Tensor
                ) -> Tensor | GenerateDecoderOnlyOutput:
        """Greedy search or sampling: one XLA-compiled `tf.while_loop` (stop strings matched inside it), or
        compiled steps when streaming or with other stopping criteria (they run on the host)."""
        input_ids, prompt_mask = self._bucketed_prompts(plan)
        prompt_length = input_ids.shape[1]
        position_ids = positions_from_mask(prompt_mask).astype(np.int32)
        prefill, step, cond = self._decoder(plan, prompt_length)
        key = self._settings_key(plan, prompt_length)
        tables = stop_string_tables(plan.stopping_criteria, self.config.vocab_size)
        if streamer is None and (tables is not None or not plan.stopping_criteria):
            stops = None
            if tables is not None:  # arguments, not constants: one program serves every stop string of a bucket
                text_start = tf.constant(prompt_length - plan.prompt_length, tf.int32)
                stops = (StopStringTables(*(tf.constant(table) for table in tables)), text_start)

            def build() -> Any:
                def loop(input_ids: Tensor, prompt_mask: Tensor, position_ids: Tensor, rng: Tensor,
                         stops: tuple[StopStringTables, Tensor] | None) -> DecodeState:
                    self.__dict__["generate_trace_count"] += 1  # runs only while tracing: counts compilations
                    state = prefill(input_ids, prompt_mask, position_ids, rng, stops)
                    return tf.while_loop(cond, lambda state: (step(state, stops),), (state,))[0]

                return loop

            state = self._generation_program("loop", key, build)(input_ids, prompt_mask, position_ids, rng, stops)
        else:
            if streamer is not None:
                streamer.put(plan.input_ids)
            jitted_prefill = self._generation_program("prefill", key, lambda: prefill)
            state = self._between_steps(plan, jitted_prefill(input_ids, prompt_mask, position_ids, rng), streamer)
            jitted_step = self._generation_program("step", key, lambda: step)
            while bool(cond(state)):
                state = self._between_steps(plan, jitted_step(state), streamer)
            if streamer is not None:
                streamer.end()
        cur_len = int(state.cur_len)
        sequences = state.sequences[:, prompt_length - plan.prompt_length : cur_len]  # drop the bucket padding
        if plan.config.return_dict_in_generate:
            scores = None
            if plan.config.output_scores:
                scores = tuple(state.scores[i] for i in range(cur_len - prompt_length))
            return GenerateDecoderOnlyOutput(sequences=sequences, scores=scores)
        return sequences

    def _between_steps(self, plan: GenerationPlan, state: DecodeState, streamer: BaseStreamer | None
                       ) -> DecodeState:
        """On the host after each compiled step: hand the newest tokens to the streamer, and stop the rows the
        stopping criteria say are done (they see the sequences without the bucket padding)."""
        cur_len = int(state.cur_len)
        if streamer is not None:
            streamer.put(state.sequences[:, cur_len - 1].numpy())
        if plan.stopping_criteria:
            bucket_padding = state.sequences.shape[1] - plan.prompt_length - plan.max_new_tokens
            done = plan.stopping_criteria(state.sequences[:, bucket_padding:cur_len].numpy())
            state = state._replace(unfinished=state.unfinished & tf.constant(~done))
        return state

    def _beam_search(self, plan: GenerationPlan) -> Tensor | GenerateBeamDecoderOnlyOutput:
        """Beam search: XLA-compiled model steps, the hypothesis bookkeeping in `BeamSearchScorer` (NumPy)."""
        config = plan.config
        batch_size, num_beams = plan.batch_size, plan.num_beams
        rows = batch_size * num_beams
        input_ids, prompt_mask = self._bucketed_prompts(plan)
        prompt_length = input_ids.shape[1]
        total = prompt_length + plan.max_new_tokens
        processors = self._logits_processors(plan, prompt_length)
        key = self._settings_key(plan, prompt_length)

        def beam_candidates(sequences: Tensor, logits: Tensor, cur_len: Tensor, attention_mask: Tensor,
                            beam_scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            scores = processors(sequences, tf.nn.log_softmax(logits, axis=-1), cur_len, attention_mask)
            vocab_size = scores.shape[-1]
            top_scores, top_ids = tf.math.top_k(
                tf.reshape(scores + beam_scores[:, None], (batch_size, num_beams * vocab_size)), 2 * num_beams
            )  # (B, 2K), best first
            return scores, top_scores, top_ids

        def reorder_beams(sequences: Tensor, cache: StaticCache, beam_rows: Tensor) -> tuple[Tensor, StaticCache]:
            # Each row continues the beam it was chosen from.
            key_values = tuple((tf.gather(key, beam_rows), tf.gather(value, beam_rows)) for key, value in cache)
            return tf.gather(sequences, beam_rows), StaticCache(key_values=key_values, index=cache.index)

        next_logits = self._generation_program("logits", key, lambda: self._next_logits)
        candidates = self._generation_program("candidates", key, lambda: beam_candidates)
        reorder = self._generation_program("reorder", key, lambda: reorder_beams)
        sequences = np.full((rows, total), plan.pad_token_id, dtype=np.int32)
        sequences[:, :prompt_length] = input_ids
        attention_mask = np.ones((rows, total), dtype=np.int32)
        attention_mask[:, :prompt_length] = prompt_mask
        logits, cache = next_logits(tf.constant(input_ids), attention_mask,
                                    positions_from_mask(prompt_mask).astype(np.int32), self.init_cache(rows, total))
        next_positions = tf.constant(prompt_mask.sum(-1), dtype=tf.int32)
        scorer = BeamSearchScorer(
            batch_size, num_beams, config.length_penalty, config.early_stopping, plan.num_return_sequences,
            plan.attention_mask.sum(-1), plan.max_new_tokens,
        )
        beam_scores = tf.constant(scorer.initial_scores())
        sequences = tf.constant(sequences)
        all_scores = []
        cur_len = prompt_length
        while cur_len < total:
            scores, top_scores, top_ids = candidates(sequences, logits, tf.constant(cur_len), attention_mask,
                                                     beam_scores)
            if config.output_scores:
                all_scores.append(scores)
            vocab_size = scores.shape[-1]
            top_ids = top_ids.numpy()
            beam_scores_np, beam_tokens_np, beam_rows_np = scorer.process(
                sequences[:, prompt_length:cur_len].numpy(), top_scores.numpy(), top_ids % vocab_size,
                top_ids // vocab_size, plan.eos_token_ids, plan.pad_token_id,
            )
            beam_tokens = tf.constant(beam_tokens_np, dtype=tf.int32)
            beam_scores = tf.constant(beam_scores_np)
            sequences, cache = reorder(sequences, cache, tf.constant(beam_rows_np, dtype=tf.int32))
            sequences = tf.concat([sequences[:, :cur_len], beam_tokens[:, None], sequences[:, cur_len + 1 :]], axis=1)
            cur_len += 1
            text = slice(prompt_length - plan.prompt_length, cur_len)  # without the bucket padding
            if cur_len == total or scorer.is_done or plan.beams_stopped(sequences[:, text].numpy()):
                break
            logits, cache = next_logits(beam_tokens[:, None], attention_mask, next_positions[:, None], cache)
            next_positions = next_positions + 1
        generated, sequence_scores = scorer.finalize(
            sequences[:, prompt_length:cur_len].numpy(), beam_scores.numpy(), plan.max_new_tokens,
            plan.eos_token_ids, plan.pad_token_id,
        )
        prompts = np.repeat(plan.input_ids, plan.num_return_sequences, axis=0)
        sequences = tf.constant(np.concatenate([prompts, generated], axis=1), dtype=tf.int32)
        if config.return_dict_in_generate:
            return GenerateBeamDecoderOnlyOutput(
                sequences=sequences, sequences_scores=tf.constant(sequence_scores), scores=tuple(all_scores) or None
            )
        return sequences


def _as_numpy(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)
