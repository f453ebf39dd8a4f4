"""The framework-free half of `generate()`: argument resolution and validation, the processor plan, prompt
bucketing, beam-hypothesis bookkeeping and the output classes. Written once in NumPy; each backend's
`generation.py` holds only the tensor work (processors, the decoding loop).

Conventions shared by every backend's loop:

- The tokens live in a fixed (B, L) buffer: the (left-padded) prompt in slots [0, P), generated tokens after
  it; `cur_len` is the number of filled slots. A (B, L) 0/1 `attention_mask` marks real tokens: the prompt's
  mask, then ones for every generated slot.
- Position ids follow `model_math.positions_from_mask`: a token's position is the number of real tokens
  before it, so a left-padded row generates exactly what its prompt generates alone.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import warnings
from typing import Any

import numpy as np

from ..checkpoints.files import GENERATION_CONFIG_NAME
from ..errors import InputError
from ..outputs import ModelOutput
from .config import GenerationConfig
from .stopping_criteria import MaxTimeCriteria, StoppingCriteriaList, StopStringCriteria

__all__ = [
    "GenerateDecoderOnlyOutput",
    "GenerateBeamDecoderOnlyOutput",
    "GreedySearchDecoderOnlyOutput",
    "SampleDecoderOnlyOutput",
    "BeamSearchDecoderOnlyOutput",
    "GenerationPlan",
    "default_generation_config",
    "prepare_generation",
    "logits_processor_specs",
    "UserLogitsProcessor",
    "bucket_length",
    "left_pad",
    "BeamHypotheses",
    "BeamSearchScorer",
]


# --------------------------------------------------------------------------------------------- outputs
@dataclasses.dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """What greedy search and sampling return with `return_dict_in_generate=True`.

    Attributes:
        sequences: (B * num_return_sequences, P + N) the prompts followed by the generated tokens (rows that
            finished early are filled with `pad_token_id`).
        scores: with `output_scores`, one (B * num_return_sequences, V) array per generated token: the logits
            after every processor and warper (the scores the token was picked from).
    """

    sequences: Any = None
    scores: Any = None


@dataclasses.dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """What beam search returns with `return_dict_in_generate=True`.

    Attributes:
        sequences: (B * num_return_sequences, P + N) the best hypotheses, best first within each prompt.
        sequences_scores: (B * num_return_sequences,) their length-penalized log-probabilities.
        scores: with `output_scores`, one (B * num_beams, V) array of processed log-probabilities per step.
    """

    sequences: Any = None
    sequences_scores: Any = None
    scores: Any = None


# Hugging Face's older names for the same classes.
GreedySearchDecoderOnlyOutput = GenerateDecoderOnlyOutput
SampleDecoderOnlyOutput = GenerateDecoderOnlyOutput
BeamSearchDecoderOnlyOutput = GenerateBeamDecoderOnlyOutput


# --------------------------------------------------------------------------------------------- arguments
@dataclasses.dataclass
class GenerationPlan:
    """Everything a backend's loop needs, resolved and validated from `generate()`'s arguments.

    Attributes:
        config: the GenerationConfig in effect (the model's defaults updated with the call's kwargs).
        input_ids: (B, P) int64 prompts. attention_mask: (B, P) int64, 1 = real token.
        mode: "greedy", "sample" or "beam". num_beams, num_return_sequences: from the config.
        rows_per_prompt: how many rows each prompt becomes (beams, or sampled sequences).
        max_new_tokens, min_new_tokens: in generated tokens. eos_token_ids: possibly empty.
        pad_token_id: fills finished rows (the eos token when the config has no pad token).
        max_positions: the model's position table size (n_positions / max_position_embeddings).
        stopping_criteria: the criteria (the call's, then max_time and stop_strings); empty when none. Greedy
            search and sampling stop each row they mark done; beam search ends when they mark every beam done.
        logits_processor: the call's own processors (UserLogitsProcessor), applied after the configured ones.
    """

    config: GenerationConfig
    input_ids: np.ndarray
    attention_mask: np.ndarray
    mode: str
    num_beams: int
    num_return_sequences: int
    rows_per_prompt: int
    max_new_tokens: int
    min_new_tokens: int
    eos_token_ids: list[int]
    pad_token_id: int
    max_positions: int
    stopping_criteria: StoppingCriteriaList = dataclasses.field(default_factory=StoppingCriteriaList)
    logits_processor: list = dataclasses.field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1]

    def beams_stopped(self, sequences: np.ndarray) -> bool:
        """Beam search ends when the stopping criteria mark every beam of (B * K, T) `sequences` done (Hugging
        Face's rule: a criterion ends the search, it does not finish one beam as an EOS does)."""
        return bool(self.stopping_criteria) and bool(np.all(self.stopping_criteria(sequences)))

    def expand(self, array: np.ndarray) -> np.ndarray:
        """(B, ...) → (B * rows_per_prompt, ...), each prompt's rows adjacent (Hugging Face's order)."""
        return np.repeat(array, self.rows_per_prompt, axis=0)


def default_generation_config(model_config: Any) -> GenerationConfig:
    """The model's generation defaults: `generation_config.json` beside the checkpoint it was loaded from,
    else the defaults its config implies (`GenerationConfig.from_model_config`)."""
    source = getattr(model_config, "name_or_path", "") or ""
    if source and os.path.isfile(os.path.join(source, GENERATION_CONFIG_NAME)):
        return GenerationConfig.from_pretrained(source)
    return GenerationConfig.from_model_config(model_config)


def prepare_generation(
    model_config: Any,
    default_config: GenerationConfig,
    input_ids: Any,
    attention_mask: Any = None,
    generation_config: GenerationConfig | None = None,
    stopping_criteria: Any = None,
    logits_processor: Any = None,
    tokenizer: Any = None,
    traced: bool = False,
    **kwargs: Any,
) -> GenerationPlan:
    """Resolve and validate `generate()`'s arguments (Hugging Face's rules, with clear errors).

    Args:
        model_config: the model's config (vocabulary and position-table sizes, special tokens).
        default_config: the model's own GenerationConfig, used when `generation_config` is None.
        input_ids: (B, P) int prompts as NumPy (or nested lists); None starts from `bos_token_id`.
        attention_mask: (B, P) 0/1; default: 0 where `input_ids == pad_token_id`, else 1.
        generation_config: settings to use instead of the model's; `kwargs` override either.
        stopping_criteria: a list of criteria (`twinformers.generation.stopping_criteria`), any callables
            `(input_ids, scores) -> (B,) bool`. logits_processor: a list of callables with the processor
            signature `(input_ids, scores[, cur_len[, attention_mask]]) -> scores`. tokenizer: needed for
            `stop_strings`. traced: the backend compiles the processors (TF, Flax): errors say so.
        **kwargs: GenerationConfig fields (`max_new_tokens=`, `do_sample=`, ...). Anything else is a ValueError.
    Returns:
        The resolved GenerationPlan.
    """
    config = (default_config if generation_config is None else generation_config).copy()
    if "max_new_tokens" in kwargs and kwargs["max_new_tokens"] is not None and "max_length" in kwargs:
        warnings.warn(
            f"Both `max_new_tokens` (={kwargs['max_new_tokens']}) and `max_length`(={kwargs['max_length']}) seem to "
            "have been set. `max_new_tokens` will take precedence.",
            UserWarning,
            stacklevel=3,
        )
    unused = config.update(**kwargs)
    if unused:
        raise ValueError(
            f"generate() got arguments that are neither generation settings nor inputs: {sorted(unused)}"
        )

    if input_ids is None:
        if config.bos_token_id is None:
            raise ValueError("input_ids is None and the generation config has no bos_token_id to start from")
        input_ids = np.full((1, 1), config.bos_token_id, dtype=np.int64)
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty (batch, seq_len) array, got shape {input_ids.shape}")
    if not np.issubdtype(input_ids.dtype, np.integer):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    input_ids = input_ids.astype(np.int64)
    vocab_size = model_config.vocab_size
    if input_ids.min() < 0 or input_ids.max() >= vocab_size:
        bad = int(input_ids.min()) if input_ids.min() < 0 else int(input_ids.max())
        raise ValueError(f"input_ids contains {bad}, outside [0, vocab_size={vocab_size})")
    batch_size, prompt_length = input_ids.shape

    eos_token_ids = config.eos_token_ids
    pad_token_id = config.pad_token_id
    if attention_mask is None:
        if pad_token_id is not None and batch_size > 1 and np.any(input_ids == pad_token_id):
            attention_mask = (input_ids != pad_token_id).astype(np.int64)
        else:
            attention_mask = np.ones_like(input_ids)
    attention_mask = np.asarray(attention_mask).astype(np.int64)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {attention_mask.shape}, expected the shape of input_ids {input_ids.shape}"
        )
    if np.any(attention_mask.sum(-1) == 0):
        raise ValueError("attention_mask has a row with no real token (all zeros)")
    padded = bool(np.any(attention_mask == 0))
    if padded and np.any(attention_mask[:, -1] == 0):
        warnings.warn(
            "A decoder-only architecture is being used, but right-padding was detected! For correct generation "
            "results, please set `padding_side='left'` when initializing the tokenizer.",
            UserWarning,
            stacklevel=3,
        )
    if pad_token_id is None:
        if eos_token_ids:
            warnings.warn(
                f"Setting `pad_token_id` to `eos_token_id`:{eos_token_ids[0]} for open-end generation.",
                UserWarning,
                stacklevel=3,
            )
            pad_token_id = eos_token_ids[0]
        elif batch_size > 1 and padded:
            raise ValueError(
                "batched input with padding needs a pad_token_id (or an eos_token_id to pad with); pass "
                "pad_token_id= to generate() or set it in the generation config"
            )
        else:
            pad_token_id = 0  # never written: without an eos token no row finishes early

    if config.num_beams > 1:
        if config.do_sample:
            raise ValueError("do_sample=True with num_beams > 1 (beam sampling) is not supported; use one of them")
        mode = "beam"
        rows_per_prompt = config.num_beams
    else:
        mode = "sample" if config.do_sample else "greedy"
        rows_per_prompt = config.num_return_sequences

    if config.max_new_tokens == 0:  # as Hugging Face: generating nothing is a mistake, not a no-op
        raise InputError(f"`max_new_tokens` must be greater than 0, but is {config.max_new_tokens}.")
    max_new_tokens = config.max_new_tokens_for(prompt_length)
    if config.max_new_tokens is None and max_new_tokens == 0:
        warnings.warn(
            f"Input length of input_ids is {prompt_length}, but `max_length` is set to {config.max_length}. This "
            "can lead to unexpected behavior. You should consider increasing `max_length` or, better yet, setting "
            "`max_new_tokens`.",
            UserWarning,
            stacklevel=3,
        )
    max_positions = model_config.max_position_embeddings
    if prompt_length + max_new_tokens > max_positions:
        raise ValueError(
            f"the prompt ({prompt_length} tokens) plus max_new_tokens={max_new_tokens} is "
            f"{prompt_length + max_new_tokens} positions, more than the model's maximum of {max_positions} "
            "(n_positions / max_position_embeddings); shorten the prompt or lower max_new_tokens / max_length"
        )
    min_new_tokens = min(config.min_new_tokens_for(prompt_length), max_new_tokens)
    criteria = StoppingCriteriaList(_as_list(stopping_criteria, "stopping_criteria"))
    for criterion in criteria:
        if not callable(criterion):
            raise ValueError(f"stopping_criteria must hold callables, got {type(criterion).__name__}")
    if config.max_time is not None:
        criteria.append(MaxTimeCriteria(config.max_time))
    if config.stop_strings is not None:
        if tokenizer is None:
            raise ValueError(
                "stop_strings need the model's tokenizer: pass tokenizer= to generate() (stop strings are matched "
                "on the tokens' bytes)"
            )
        criteria.append(StopStringCriteria(tokenizer, config.stop_strings))
    processors = [UserLogitsProcessor(p, traced) for p in _as_list(logits_processor, "logits_processor")]
    return GenerationPlan(
        config=config,
        input_ids=input_ids,
        attention_mask=attention_mask,
        mode=mode,
        num_beams=config.num_beams,
        num_return_sequences=config.num_return_sequences,
        rows_per_prompt=rows_per_prompt,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        eos_token_ids=eos_token_ids,
        pad_token_id=int(pad_token_id),
        max_positions=max_positions,
        stopping_criteria=criteria,
        logits_processor=processors,
    )


def _as_list(value: Any, name: str) -> list:
    if value is None:
        return []
    if callable(value) and not isinstance(value, (list, tuple)):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of callables, got {type(value).__name__}")
    return list(value)


class UserLogitsProcessor:
    """A processor passed as `generate(logits_processor=[...])`, called the way the backends call theirs.

    It may take `(input_ids, scores)`, `(input_ids, scores, cur_len)` or the full
    `(input_ids, scores, cur_len, attention_mask)`; it must return scores of the same (B, V) shape. In TF and
    Flax it runs inside the compiled loop, so it must be traceable (tensor ops of that framework only: no
    `.numpy()`, no Python `if` on tensor values); a failure while tracing raises a TypeError that says so.
    """

    def __init__(self, processor: Any, traced: bool) -> None:
        if not callable(processor):
            raise ValueError(f"logits_processor must hold callables, got {type(processor).__name__}")
        self.processor = processor
        self.traced = traced
        self.name = getattr(processor, "__name__", type(processor).__name__)
        self.num_args = _positional_count(processor)

    def __call__(self, input_ids: Any, scores: Any, cur_len: Any, attention_mask: Any) -> Any:
        args = (input_ids, scores, cur_len, attention_mask)[: self.num_args]
        try:
            out = self.processor(*args)
        except Exception as err:
            if not self.traced:
                raise
            raise TypeError(
                f"logits_processor {self.name} failed while being compiled into the generation loop: {err} -- "
                "in TensorFlow and Flax a processor must be traceable (that framework's tensor ops only, no "
                ".numpy(), no Python branching on tensor values)"
            ) from err
        if tuple(getattr(out, "shape", ())) != tuple(scores.shape):
            raise ValueError(
                f"logits_processor {self.name} returned scores of shape {tuple(getattr(out, 'shape', ()))}, "
                f"expected {tuple(scores.shape)} (batch, vocab)"
            )
        return out


def _positional_count(fn: Any) -> int:
    """How many of (input_ids, scores, cur_len, attention_mask) `fn` takes (4 when it takes *args)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 4
    count = 0
    for param in params:
        if param.kind == param.VAR_POSITIONAL:
            return 4
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            count += 1
    if count < 2:
        raise ValueError(f"logits_processor {fn!r} must take at least (input_ids, scores)")
    return min(count, 4)


def logits_processor_specs(config: GenerationConfig, min_length: int, eos_token_ids: list[int]
                           ) -> list[tuple[str, dict[str, Any]]]:
    """Which processors and warpers a GenerationConfig asks for, in Hugging Face's order, as
    (class name, constructor kwargs) pairs; every backend builds its `LogitsProcessorList` from this list.

    Args:
        config: the settings. min_length: slots (prompt slots included) before which EOS is banned.
        eos_token_ids: the end-of-sequence ids (MinLength and NoBadWords need them).
    """
    specs: list[tuple[str, dict[str, Any]]] = []
    if config.repetition_penalty != 1.0:
        specs.append(("RepetitionPenaltyLogitsProcessor", {"penalty": float(config.repetition_penalty)}))
    if config.no_repeat_ngram_size > 0:
        specs.append(("NoRepeatNGramLogitsProcessor", {"ngram_size": config.no_repeat_ngram_size}))
    if config.bad_words_ids:
        specs.append(("NoBadWordsLogitsProcessor", {"bad_words_ids": config.bad_words_ids,
                                                    "eos_token_id": eos_token_ids}))
    if eos_token_ids and min_length > 0:
        specs.append(("MinLengthLogitsProcessor", {"min_length": min_length, "eos_token_id": eos_token_ids}))
    if config.do_sample:
        # Beam search keeps at least 2 candidates per beam in Hugging Face; sampling here is single-beam.
        if config.temperature != 1.0:
            specs.append(("TemperatureLogitsWarper", {"temperature": float(config.temperature)}))
        if config.top_k:
            specs.append(("TopKLogitsWarper", {"top_k": config.top_k}))
        if config.top_p < 1.0:
            specs.append(("TopPLogitsWarper", {"top_p": float(config.top_p)}))
        if config.typical_p < 1.0:
            specs.append(("TypicalLogitsWarper", {"mass": float(config.typical_p)}))
    return specs


# --------------------------------------------------------------------------------------------- buckets
def bucket_length(length: int, multiple: int, cap: int | None = None) -> int:
    """`length` rounded up to a multiple of `multiple` (at most `cap`, never below `length`): compiled loops
    are traced once per bucket, not once per prompt length."""
    if multiple < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {multiple}")
    rounded = math.ceil(length / multiple) * multiple
    if cap is not None:
        rounded = min(rounded, cap)
    return max(rounded, length)


def left_pad(input_ids: np.ndarray, attention_mask: np.ndarray, width: int, pad_token_id: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad (B, P) prompts and their mask to (B, width); the new slots are padding (mask 0)."""
    extra = width - input_ids.shape[1]
    if extra < 0:
        raise ValueError(f"cannot left-pad {input_ids.shape[1]} tokens to width {width}")
    ids = np.pad(input_ids, ((0, 0), (extra, 0)), constant_values=pad_token_id)
    mask = np.pad(attention_mask, ((0, 0), (extra, 0)), constant_values=0)
    return ids, mask


# --------------------------------------------------------------------------------------------- beam search
class BeamHypotheses:
    """The n best finished hypotheses of one prompt (Hugging Face's rules for adding and stopping).

    A hypothesis's score is its summed log-probability divided by `length ** length_penalty`, where length
    counts its real tokens (prompt without padding, plus generated tokens, the final EOS excluded).
    """

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool | str, max_length: int) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_length = max_length
        self.beams: list[tuple[float, np.ndarray]] = []
        self.worst_score = 1e9

    def __len__(self) -> int:
        return len(self.beams)

    def add(self, tokens: np.ndarray, sum_logprobs: float, length: int) -> None:
        """Offer a finished hypothesis: its generated `tokens`, summed log-probability and real length."""
        score = sum_logprobs / (length**self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        """Whether no open beam can still beat the worst kept hypothesis (`early_stopping` decides how)."""
        if len(self) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping is False or self.length_penalty <= 0.0:
            highest_attainable = best_sum_logprobs / cur_len**self.length_penalty
        else:  # "never" with a positive penalty: the longest possible hypothesis scores best
            highest_attainable = best_sum_logprobs / self.max_length**self.length_penalty
        return self.worst_score >= highest_attainable


class BeamSearchScorer:
    """Beam-search bookkeeping for B prompts × K beams, in NumPy; the backend computes the candidates.

    Each step the backend passes the 2K best (score, token, beam) candidates per prompt; `process` moves
    candidates that end in EOS into the hypotheses and returns the K that continue; `finalize` ranks.

    Args:
        batch_size: B prompts. num_beams: K. length_penalty, early_stopping: GenerationConfig semantics.
        num_beam_hyps_to_keep: sequences returned per prompt. prompt_lengths: (B,) real prompt tokens.
        max_new_tokens: the generation budget (for early_stopping="never").
    """

    def __init__(self, batch_size: int, num_beams: int, length_penalty: float, early_stopping: bool | str,
                 num_beam_hyps_to_keep: int, prompt_lengths: np.ndarray, max_new_tokens: int) -> None:
        self.num_beams = num_beams
        self.num_beam_hyps_to_keep = num_beam_hyps_to_keep
        self.prompt_lengths = np.asarray(prompt_lengths)
        self.hypotheses = [
            BeamHypotheses(num_beams, length_penalty, early_stopping, int(p) + max_new_tokens)
            for p in self.prompt_lengths
        ]
        self.done = np.zeros(batch_size, dtype=bool)

    @property
    def is_done(self) -> bool:
        return bool(self.done.all())

    def initial_scores(self) -> np.ndarray:
        """(B * K,) starting beam scores: only the first beam of each prompt is live, so the first step's
        candidates are not K copies of the same token."""
        scores = np.full((len(self.hypotheses), self.num_beams), -1e9, dtype=np.float32)
        scores[:, 0] = 0.0
        return scores.reshape(-1)

    def process(
        self,
        generated: np.ndarray,
        next_scores: np.ndarray,
        next_tokens: np.ndarray,
        next_indices: np.ndarray,
        eos_token_ids: list[int],
        pad_token_id: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step.

        Args:
            generated: (B * K, N) the tokens generated so far by each beam.
            next_scores, next_tokens: (B, 2K) the best candidates' cumulative scores and tokens, best first.
            next_indices: (B, 2K) which of the prompt's K beams each candidate extends.
        Returns:
            beam_scores, beam_tokens, beam_rows: each (B * K,); row i continues from row `beam_rows[i]` with
            `beam_tokens[i]`. Prompts that are done get pad tokens and score 0.
        """
        batch_size, num_beams = len(self.hypotheses), self.num_beams
        cur_len = self.prompt_lengths + generated.shape[1]  # (B,) real tokens so far
        beam_scores = np.zeros((batch_size, num_beams), dtype=np.float32)
        beam_tokens = np.zeros((batch_size, num_beams), dtype=np.int64)
        beam_rows = np.zeros((batch_size, num_beams), dtype=np.int64)
        eos = set(eos_token_ids)
        for b, hypotheses in enumerate(self.hypotheses):
            if self.done[b]:
                beam_tokens[b] = pad_token_id
                beam_rows[b] = b * num_beams
                continue
            kept = 0
            for rank, (score, token, index) in enumerate(zip(next_scores[b], next_tokens[b], next_indices[b])):
                row = b * num_beams + int(index)
                if int(token) in eos:
                    # An EOS ranked below the top K candidates is not a better hypothesis than the live ones.
                    if rank < num_beams:
                        hypotheses.add(generated[row].copy(), float(score), int(cur_len[b]))
                else:
                    beam_scores[b, kept], beam_tokens[b, kept], beam_rows[b, kept] = score, token, row
                    kept += 1
                if kept == num_beams:
                    break
            if kept < num_beams:
                raise ValueError(f"more than {num_beams} of the {2 * num_beams} candidates were EOS tokens")
            self.done[b] = hypotheses.is_done(float(next_scores[b].max()), int(cur_len[b]))
        return beam_scores.reshape(-1), beam_tokens.reshape(-1), beam_rows.reshape(-1)

    def finalize(
        self, generated: np.ndarray, beam_scores: np.ndarray, max_new_tokens: int, eos_token_ids: list[int],
        pad_token_id: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add the open beams of unfinished prompts and pick the best hypotheses.

        Args:
            generated: (B * K, N) the open beams' generated tokens. beam_scores: (B * K,) their scores.
        Returns:
            tokens: (B * keep, N') the generated part of each kept hypothesis, best first per prompt: an EOS
            appended where it fits, then `pad_token_id`. scores: (B * keep,) float32.
        """
        num_beams = self.num_beams
        for b, hypotheses in enumerate(self.hypotheses):
            if self.done[b]:
                continue
            for k in range(num_beams):
                row = b * num_beams + k
                hypotheses.add(generated[row].copy(), float(beam_scores[row]),
                               int(self.prompt_lengths[b]) + generated.shape[1])
        best: list[np.ndarray] = []
        scores = []
        for hypotheses in self.hypotheses:
            ranked = sorted(hypotheses.beams, key=lambda item: item[0], reverse=True)
            for score, tokens in ranked[: self.num_beam_hyps_to_keep]:
                best.append(tokens)
                scores.append(score)
        width = min(max(len(t) for t in best) + 1, max_new_tokens)
        out = np.full((len(best), width), pad_token_id, dtype=np.int64)
        for i, tokens in enumerate(best):
            out[i, : len(tokens)] = tokens
            if len(tokens) < width and eos_token_ids:
                out[i, len(tokens)] = eos_token_ids[0]  # the EOS that ended it (Hugging Face adds the first id)
        return out, np.asarray(scores, dtype=np.float32)
