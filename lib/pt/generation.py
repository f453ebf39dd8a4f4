"""`generate()` for the PyTorch twins: logits processors and warpers, then `GenerationMixin`.

`lib/tf/generation.py` and `lib/flax/generation.py` have the same classes in the same order. Argument
resolution, the processor plan and beam bookkeeping are framework-free (`twinformers.generation.utils`).

Every processor is called as `processor(input_ids, scores, cur_len, attention_mask)` on the fixed token
buffer: input_ids (B, L) with slots [0, cur_len) filled, attention_mask (B, L) 1 where a slot holds a real
token (not padding), scores (B, V) float32. They are written with whole-buffer tensor ops (no data-dependent
Python), so the compiled TF / Flax loops run the very same code.

Decoding writes into a pre-allocated `StaticCache` (no per-step allocation) and runs attention through SDPA.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..generation.config import GenerationConfig
from ..generation.streamers import BaseStreamer
from ..generation.utils import (
    BeamSearchScorer,
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    GenerationPlan,
    default_generation_config,
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

Tensor = torch.Tensor
FILTER_VALUE = -float("inf")


# --------------------------------------------------------------------------------------------- helpers
def filled_tokens(attention_mask: Tensor, cur_len: int) -> Tensor:
    """(B, L) bool: the slot holds a real token among the first `cur_len`."""
    return attention_mask.bool() & (torch.arange(attention_mask.shape[-1], device=attention_mask.device) < cur_len)


def token_presence(tokens: Tensor, keep: Tensor, vocab_size: int) -> Tensor:
    """(B, N) token ids where `keep` (B, N) is True → (B, V) bool, True for every such id."""
    ids = torch.where(keep, tokens, vocab_size)  # dropped entries land in an extra column
    present = torch.zeros(tokens.shape[0], vocab_size + 1, dtype=torch.bool, device=tokens.device)
    return present.scatter_(1, ids, True)[:, :vocab_size]


def last_tokens(input_ids: Tensor, valid: Tensor, cur_len: int, length: int) -> tuple[Tensor, Tensor]:
    """The `length` slots before `cur_len`: tokens (B, length) and whether all of them are real (B,)."""
    start = max(cur_len - length, 0)
    enough = cur_len >= length
    tokens = input_ids[:, start : start + length]
    return tokens, valid[:, start : start + length].all(-1) & enough


# --------------------------------------------------------------------------------------------- processors
class LogitsProcessor:
    """Base class: `__call__(input_ids, scores, cur_len, attention_mask) -> scores`."""

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        raise NotImplementedError


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Divide positive (multiply negative) scores of tokens already in the sequence by `penalty`."""

    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise ValueError(f"repetition_penalty must be a float > 0, got {penalty!r}")
        self.penalty = penalty

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        present = token_presence(input_ids, filled_tokens(attention_mask, cur_len), scores.shape[-1])
        penalized = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(present, penalized, scores)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban every token that would complete an n-gram already in the sequence."""

    def __init__(self, ngram_size: int) -> None:
        if not isinstance(ngram_size, int) or ngram_size < 1:
            raise ValueError(f"no_repeat_ngram_size must be a positive int, got {ngram_size!r}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        n, length = self.ngram_size, input_ids.shape[-1]
        if n > length:
            return scores
        valid = filled_tokens(attention_mask, cur_len)
        starts = length - n + 1
        # Every n-gram of the buffer, (B, W, n), and whether it lies wholly among the real tokens.
        ngrams = torch.stack([input_ids[:, k : k + starts] for k in range(n)], dim=-1)
        ngram_valid = torch.stack([valid[:, k : k + starts] for k in range(n)], dim=-1).all(-1)
        prefix, prefix_valid = last_tokens(input_ids, valid, cur_len, n - 1)  # (B, n-1), (B,)
        matches = (ngrams[..., :-1] == prefix[:, None, :]).all(-1) & ngram_valid & prefix_valid[:, None]  # (B, W)
        banned = token_presence(ngrams[..., -1], matches, scores.shape[-1])
        return scores.masked_fill(banned, FILTER_VALUE)


class NoBadWordsLogitsProcessor(LogitsProcessor):
    """Ban the last token of each `bad_words_ids` sequence when the tokens before it were just generated
    (single-token entries are always banned). A bad word equal to `[eos]` is ignored, as in Hugging Face."""

    def __init__(self, bad_words_ids: list[list[int]], eos_token_id: int | list[int] | None = None) -> None:
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        self.bad_words_ids = [list(seq) for seq in bad_words_ids if not (len(seq) == 1 and seq[0] in eos)]
        if not all(seq and all(isinstance(t, int) and t >= 0 for t in seq) for seq in self.bad_words_ids):
            raise ValueError(f"bad_words_ids must be a list of non-empty lists of ids, got {bad_words_ids!r}")

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        vocab_size = scores.shape[-1]
        valid = filled_tokens(attention_mask, cur_len)
        vocab = torch.arange(vocab_size, device=scores.device)
        banned = torch.zeros_like(scores, dtype=torch.bool)
        for seq in self.bad_words_ids:
            if seq[-1] >= vocab_size:
                continue
            if len(seq) == 1:
                hit = torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)
            else:
                tail, tail_valid = last_tokens(input_ids, valid, cur_len, len(seq) - 1)
                prefix = torch.tensor(seq[:-1], dtype=input_ids.dtype, device=input_ids.device)
                hit = (tail == prefix).all(-1) & tail_valid  # (B,)
            banned |= hit[:, None] & (vocab == seq[-1])
        return scores.masked_fill(banned, FILTER_VALUE)


class MinLengthLogitsProcessor(LogitsProcessor):
    """Ban the EOS tokens while fewer than `min_length` slots are filled."""

    def __init__(self, min_length: int, eos_token_id: int | list[int]) -> None:
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"min_length must be a non-negative int, got {min_length!r}")
        self.min_length = min_length
        self.eos_token_id = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        vocab = torch.arange(scores.shape[-1], device=scores.device)
        is_eos = torch.isin(vocab, torch.tensor(self.eos_token_id, device=scores.device))
        return scores.masked_fill(is_eos & (cur_len < self.min_length), FILTER_VALUE)


class TemperatureLogitsWarper(LogitsProcessor):
    """Divide the scores by `temperature` (< 1 sharpens, > 1 flattens the distribution)."""

    def __init__(self, temperature: float) -> None:
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a float > 0, got {temperature!r}")
        self.temperature = temperature

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keep the `top_k` highest scores (ties with the k-th included), filter the rest."""

    def __init__(self, top_k: int, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        top_k = min(self.top_k, scores.shape[-1])
        kth_best = torch.topk(scores, top_k, dim=-1).values[:, -1:]  # (B, 1)
        return scores.masked_fill(scores < kth_best, self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p`."""

    def __init__(self, top_p: float, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        sorted_scores, order = torch.sort(scores, dim=-1)  # ascending
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        # Drop the low tail holding at most 1 - top_p of the mass; the best `min_tokens_to_keep` always stay.
        sorted_remove = cumulative <= 1 - self.top_p
        sorted_remove[:, -self.min_tokens_to_keep :] = False
        remove = sorted_remove.scatter(1, order, sorted_remove)
        return scores.masked_fill(remove, self.filter_value)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy, up to `mass`."""

    def __init__(self, mass: float = 0.9, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(mass, (int, float)) and 0 < mass < 1):
            raise ValueError(f"typical_p must be in (0, 1), got {mass!r}")
        self.mass = mass
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
        log_probs = scores.log_softmax(-1)
        probs = log_probs.exp()
        entropy = -torch.where(probs > 0, log_probs * probs, 0.0).sum(-1, keepdim=True)  # (B, 1)
        distance = (-log_probs - entropy).abs()
        sorted_distance, order = torch.sort(distance, dim=-1)
        cumulative = scores.gather(-1, order).softmax(-1).cumsum(-1)
        last = (cumulative < self.mass).sum(-1, keepdim=True).clamp(max=scores.shape[-1] - 1)  # (B, 1)
        sorted_remove = sorted_distance > sorted_distance.gather(-1, last)
        sorted_remove[:, : self.min_tokens_to_keep] = False
        remove = sorted_remove.scatter(1, order, sorted_remove)
        return scores.masked_fill(remove, self.filter_value)


class LogitsProcessorList(list):
    """Processors applied in order; `from_generation_config` builds the list a GenerationConfig asks for."""

    def __call__(self, input_ids: Tensor, scores: Tensor, cur_len: int, attention_mask: Tensor) -> Tensor:
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
class GenerationMixin:
    """`generate()` for causal LM heads (classes whose `can_generate()` is True)."""

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
        `past_key_values`, then the `past_key_values` each call returns; its buffers are written in place.

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
        factory = dict(dtype=self.dtype, device=self.device)
        key_values = tuple(
            (torch.zeros(shape, **factory), torch.zeros(shape, **factory)) for _ in range(config.num_hidden_layers)
        )
        return StaticCache(key_values=key_values, index=0)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        streamer: BaseStreamer | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> Tensor | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
        """Generate continuations of `input_ids` (greedy, sampling or beam search, as the settings say).

        Args:
            input_ids: (B, P) int prompts; left-pad a batch (a padded row generates what its prompt alone
                would). None starts from `bos_token_id`.
            attention_mask: (B, P) 1 = token, 0 = padding; default: 0 where `input_ids == pad_token_id`.
            generation_config: settings instead of `self.generation_config`.
            streamer: gets the prompt, then each new token (greedy and sampling).
            stopping_criteria, logits_processor, tokenizer (in kwargs): the call's own stopping criteria and
                processors, and the tokenizer `stop_strings=` need (see `generation.stopping_criteria`).
            generator: the torch.Generator sampling draws from; `seed` makes one (`torch.manual_seed` else).
            **kwargs: GenerationConfig fields, e.g. `max_new_tokens=20, do_sample=True, top_p=0.9`.
        Returns:
            (B * num_return_sequences, P + N) token ids, or with `return_dict_in_generate=True` a
            GenerateDecoderOnlyOutput / GenerateBeamDecoderOnlyOutput (with `scores` if `output_scores`).
        """
        if not self.can_generate():
            raise TypeError(f"{type(self).__name__} has no language-modeling head, so it cannot generate()")
        plan = prepare_generation(
            self.config, self.generation_config, _as_numpy(input_ids), _as_numpy(attention_mask), generation_config,
            **kwargs,
        )
        if streamer is not None and plan.mode == "beam":
            raise ValueError("streamer cannot be used with beam search; set num_beams=1")
        if generator is None and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        if plan.mode == "beam":
            return self._beam_search(plan)
        return self._sample(plan, streamer, generator)

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
            input_ids, past_key_values=cache, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=True, return_dict=True,
        )
        logits = self.get_output_embeddings()(outputs.last_hidden_state[:, -1])
        return logits.float(), outputs.past_key_values

    def _prefill(self, plan: GenerationPlan, rows: int) -> tuple[Tensor, Tensor, Tensor, StaticCache, Tensor]:
        """The token buffer (B', L), its attention mask, the next positions (B',), the cache after the
        prompt, and the logits of the prompt's last token (B', V), for B' = B * rows_per_prompt."""
        device = self.device
        prompt_length, total = plan.prompt_length, plan.prompt_length + plan.max_new_tokens
        input_ids = torch.from_numpy(plan.expand(plan.input_ids)).to(device)
        prompt_mask = plan.expand(plan.attention_mask)
        sequences = torch.full((rows, total), plan.pad_token_id, dtype=torch.long, device=device)
        sequences[:, :prompt_length] = input_ids
        attention_mask = torch.ones((rows, total), dtype=torch.long, device=device)
        attention_mask[:, :prompt_length] = torch.from_numpy(prompt_mask)
        position_ids = torch.from_numpy(positions_from_mask(prompt_mask)).to(device)
        cache = self.init_cache(rows, total)
        logits, cache = self._next_logits(input_ids, attention_mask, position_ids, cache)
        next_positions = torch.from_numpy(prompt_mask.sum(-1)).to(device)
        return sequences, attention_mask, next_positions, cache, logits

    def _sample(self, plan: GenerationPlan, streamer: BaseStreamer | None, generator: torch.Generator | None
                ) -> Tensor | GenerateDecoderOnlyOutput:
        """Greedy search or sampling, one token per step, into the static cache."""
        config = plan.config
        rows = plan.batch_size * plan.rows_per_prompt
        prompt_length, total = plan.prompt_length, plan.prompt_length + plan.max_new_tokens
        sequences, attention_mask, next_positions, cache, logits = self._prefill(plan, rows)
        processors = self._logits_processors(plan, prompt_length)
        eos = torch.tensor(plan.eos_token_ids, dtype=torch.long, device=sequences.device)
        unfinished = torch.ones(rows, dtype=torch.bool, device=sequences.device)
        if streamer is not None:
            streamer.put(plan.input_ids)
        all_scores = []
        cur_len = prompt_length
        while cur_len < total:
            scores = processors(sequences, logits, cur_len, attention_mask)
            if plan.mode == "sample":
                next_tokens = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
            else:
                next_tokens = scores.argmax(-1)
            next_tokens = torch.where(unfinished, next_tokens, plan.pad_token_id)  # finished rows get padding
            sequences[:, cur_len] = next_tokens
            cur_len += 1
            if config.output_scores:
                all_scores.append(scores)
            if streamer is not None:
                streamer.put(next_tokens.cpu().numpy())
            unfinished &= ~torch.isin(next_tokens, eos)
            if plan.stopping_criteria:
                done = plan.stopping_criteria(sequences[:, :cur_len].cpu().numpy())
                unfinished &= ~torch.from_numpy(done).to(unfinished.device)
            if cur_len == total or not unfinished.any():
                break
            logits, cache = self._next_logits(next_tokens[:, None], attention_mask, next_positions[:, None], cache)
            next_positions += 1
        if streamer is not None:
            streamer.end()
        sequences = sequences[:, :cur_len]
        if config.return_dict_in_generate:
            return GenerateDecoderOnlyOutput(sequences=sequences, scores=tuple(all_scores) or None)
        return sequences

    def _beam_search(self, plan: GenerationPlan) -> Tensor | GenerateBeamDecoderOnlyOutput:
        """Beam search: the model runs in PyTorch, the hypothesis bookkeeping in `BeamSearchScorer` (NumPy)."""
        config = plan.config
        batch_size, num_beams = plan.batch_size, plan.num_beams
        rows = batch_size * num_beams
        prompt_length, total = plan.prompt_length, plan.prompt_length + plan.max_new_tokens
        sequences, attention_mask, next_positions, cache, logits = self._prefill(plan, rows)
        processors = self._logits_processors(plan, prompt_length)
        scorer = BeamSearchScorer(
            batch_size, num_beams, config.length_penalty, config.early_stopping, plan.num_return_sequences,
            plan.attention_mask.sum(-1), plan.max_new_tokens,
        )
        beam_scores = torch.from_numpy(scorer.initial_scores()).to(logits.device)
        all_scores = []
        cur_len = prompt_length
        while cur_len < total:
            scores = processors(sequences, logits.log_softmax(-1), cur_len, attention_mask)
            if config.output_scores:
                all_scores.append(scores)
            vocab_size = scores.shape[-1]
            candidates = (scores + beam_scores[:, None]).view(batch_size, num_beams * vocab_size)
            top_scores, top_ids = torch.topk(candidates, 2 * num_beams, dim=1)  # (B, 2K), best first
            beam_scores_np, beam_tokens_np, beam_rows_np = scorer.process(
                sequences[:, prompt_length:cur_len].cpu().numpy(), top_scores.cpu().numpy(),
                (top_ids % vocab_size).cpu().numpy(), (top_ids // vocab_size).cpu().numpy(),
                plan.eos_token_ids, plan.pad_token_id,
            )
            beam_rows = torch.from_numpy(beam_rows_np).to(sequences.device)
            beam_tokens = torch.from_numpy(beam_tokens_np).to(sequences.device)
            beam_scores = torch.from_numpy(beam_scores_np).to(logits.device)
            sequences = sequences.index_select(0, beam_rows)
            sequences[:, cur_len] = beam_tokens
            cur_len += 1
            if cur_len == total or scorer.is_done or plan.beams_stopped(sequences[:, :cur_len].cpu().numpy()):
                break
            for key, value in cache:  # each row continues the beam it was chosen from
                key.copy_(key.index_select(0, beam_rows))
                value.copy_(value.index_select(0, beam_rows))
            logits, cache = self._next_logits(beam_tokens[:, None], attention_mask, next_positions[:, None], cache)
            next_positions += 1
        generated, sequence_scores = scorer.finalize(
            sequences[:, prompt_length:cur_len].cpu().numpy(), beam_scores.cpu().numpy(), plan.max_new_tokens,
            plan.eos_token_ids, plan.pad_token_id,
        )
        prompts = np.repeat(plan.input_ids, plan.num_return_sequences, axis=0)
        sequences = torch.from_numpy(np.concatenate([prompts, generated], axis=1)).to(self.device)
        if config.return_dict_in_generate:
            return GenerateBeamDecoderOnlyOutput(
                sequences=sequences, sequences_scores=torch.from_numpy(sequence_scores),
                scores=tuple(all_scores) or None,
            )
        return sequences


def _as_numpy(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
