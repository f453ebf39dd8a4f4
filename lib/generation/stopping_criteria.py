"""Stopping criteria: `generate(..., stopping_criteria=..., stop_strings=[...], tokenizer=...)` (framework-free).

A criterion is called after every generated token as `criterion(input_ids, scores)` with the sequences so far
as a NumPy (B, cur_len) array (prompt, left padding included, then the generated tokens) and returns a (B,) bool
array: True for the rows that are done. Done rows get `pad_token_id` from then on, as after an EOS; generation
ends when every row is done. `scores` is None (twinformers evaluates criteria between compiled steps, where the
scores stay on the device); a criterion that needs them should be a logits processor instead.

Criteria run on the host, so in TensorFlow and Flax a call with `stopping_criteria=` (or `max_time=`) runs the
compiled step-by-step path instead of the single compiled loop (as a streamer does). Stop strings are the
exception: when every criterion is a StopStringCriteria, `stop_string_tables` turns them into per-token tables
and TensorFlow and Flax match them inside the compiled loop (`stop_string_hits` in their `generation.py`), with
the same result as the host-side check.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "StoppingCriteria",
    "MaxLengthCriteria",
    "MaxTimeCriteria",
    "EosTokenCriteria",
    "StopStringCriteria",
    "StoppingCriteriaList",
    "StopStringTables",
    "stop_string_tables",
    "token_bytes",
]


class StoppingCriteria:
    """Base class: `__call__(input_ids (B, T) np.ndarray, scores) -> (B,) bool np.ndarray`, True = stop the row."""

    def __call__(self, input_ids: np.ndarray, scores: Any = None, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError


class MaxLengthCriteria(StoppingCriteria):
    """Stop every row once the sequences (prompt included) are `max_length` tokens long."""

    def __init__(self, max_length: int) -> None:
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"MaxLengthCriteria: max_length must be a positive int, got {max_length!r}")
        self.max_length = max_length

    def __call__(self, input_ids: np.ndarray, scores: Any = None, **kwargs: Any) -> np.ndarray:
        return np.full(input_ids.shape[0], input_ids.shape[-1] >= self.max_length)


class MaxTimeCriteria(StoppingCriteria):
    """Stop every row once `max_time` seconds have passed since `initial_timestamp` (default: construction)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None) -> None:
        if not (isinstance(max_time, (int, float)) and max_time > 0):
            raise ValueError(f"MaxTimeCriteria: max_time must be a number of seconds > 0, got {max_time!r}")
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids: np.ndarray, scores: Any = None, **kwargs: Any) -> np.ndarray:
        return np.full(input_ids.shape[0], time.time() - self.initial_timestamp > self.max_time)


class EosTokenCriteria(StoppingCriteria):
    """Stop the rows whose last token is one of `eos_token_id` (an int or a list)."""

    def __init__(self, eos_token_id: int | list[int]) -> None:
        ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
            raise ValueError(f"EosTokenCriteria: eos_token_id must be an id or a list of ids, got {eos_token_id!r}")
        self.eos_token_id = ids

    def __call__(self, input_ids: np.ndarray, scores: Any = None, **kwargs: Any) -> np.ndarray:
        return np.isin(np.asarray(input_ids)[:, -1], self.eos_token_id)


def token_bytes(tokenizer: Any) -> list[bytes]:
    """The bytes each token id stands for (index = id): byte-level BPE tokens mapped back through GPT-2's
    byte↔unicode table, added tokens as their UTF-8 text."""
    from ..tokenization.gpt2 import bytes_to_unicode

    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    vocab = tokenizer.get_vocab()
    added = {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    table = [b""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        if index not in added and all(c in byte_decoder for c in token):
            table[index] = bytes(byte_decoder[c] for c in token)
        else:
            table[index] = token.encode("utf-8")
    return table


class StopStringCriteria(StoppingCriteria):
    """Stop a row as soon as its text contains one of `stop_strings`, the match ending in the newest token.

    The text is the bytes of the tokens (a stop string may start in the prompt or span several tokens, and the
    newest token may run past its end, e.g. "." stops at the token ".\\n"). Matching works on the tokens'
    bytes, not on decoded text, so it costs no decoding per step.

    Args:
        tokenizer: the model's tokenizer (a GPT-2 byte-level BPE tokenizer, `get_vocab()`).
        stop_strings: a string or a list of non-empty strings, each of which the tokenizer can encode.
    """

    def __init__(self, tokenizer: Any, stop_strings: str | list[str]) -> None:
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        if not isinstance(stop_strings, (list, tuple)) or not stop_strings:
            raise ValueError(f"stop_strings must be a string or a non-empty list of strings, got {stop_strings!r}")
        for stop in stop_strings:
            if not isinstance(stop, str) or not stop:
                raise ValueError(f"stop_strings must hold non-empty strings, got {stop!r}")
            ids = tokenizer.encode(stop)
            if not ids or tokenizer.decode(ids) != stop:
                raise ValueError(
                    f"stop string {stop!r} cannot be encoded by the tokenizer (it encodes to {ids}, which decodes "
                    f"to {tokenizer.decode(ids) if ids else ''!r}); the model could never generate it"
                )
        self.stop_strings = list(stop_strings)
        self.targets = [stop.encode("utf-8") for stop in self.stop_strings]
        self.vocabulary = ByteVocabulary.of(tokenizer)
        self.token_bytes = self.vocabulary.token_bytes

    def __call__(self, input_ids: np.ndarray, scores: Any = None, **kwargs: Any) -> np.ndarray:
        input_ids = np.asarray(input_ids)
        longest = max(len(target) for target in self.targets)
        done = np.zeros(input_ids.shape[0], dtype=bool)
        for row, tokens in enumerate(input_ids):
            last = self.token_bytes[int(tokens[-1])] if int(tokens[-1]) < len(self.token_bytes) else b""
            tail, start = last, len(tokens) - 1
            while len(tail) < longest + len(last) - 1 and start > 0:  # enough bytes before the newest token
                start -= 1
                tail = self.token_bytes[int(tokens[start])] + tail
            # A match must end inside the newest token (an earlier match would have stopped an earlier step).
            first_end = len(tail) - len(last)
            done[row] = any(tail.find(target, max(first_end - len(target) + 1, 0)) >= 0 for target in self.targets)
        return done


    def tables(self, vocab_size: int, width: int) -> StopStringTables:
        """This criterion's stop strings as `StopStringTables` for ids [0, vocab_size), strings padded to
        `width` bytes (each string's columns are built once per tokenizer and kept)."""
        columns = [self.vocabulary.stop_string_columns(target, vocab_size, width) for target in self.targets]
        return StopStringTables(*(np.stack([c[i] for c in columns], axis=1) for i in range(3)),
                                token_length=self.vocabulary.lengths(vocab_size))


class ByteVocabulary:
    """A tokenizer's tokens as bytes (`token_bytes`), with the per-stop-string table columns built from them;
    one per tokenizer object (kept while the tokenizer lives), so a generate() call with the same stop strings
    builds nothing."""

    _cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, tokenizer: Any) -> ByteVocabulary:
        try:
            if tokenizer not in cls._cache:
                cls._cache[tokenizer] = cls(token_bytes(tokenizer))
            return cls._cache[tokenizer]
        except TypeError:  # a tokenizer that cannot be weakly referenced or hashed: no cache
            return cls(token_bytes(tokenizer))

    def __init__(self, tokens: list[bytes]) -> None:
        self.token_bytes = tokens
        self._columns: dict[tuple[bytes, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._ids_of: dict[bytes, list[int]] | None = None

    def lengths(self, vocab_size: int) -> np.ndarray:
        """(vocab_size,) int32 bytes per id (0 for ids the tokenizer lacks)."""
        known = np.fromiter((len(b) for b in self.token_bytes[:vocab_size]), dtype=np.int32)
        return np.pad(known, (0, vocab_size - len(known)))

    def stop_string_columns(self, target: bytes, vocab_size: int, width: int
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`newest`, `inside` and `starts` of StopStringTables for one stop string, each (vocab_size, width + 1)."""
        key = (target, vocab_size, width)
        if key in self._columns:
            return self._columns[key]
        lengths = self.lengths(vocab_size)
        known = self.token_bytes[:vocab_size]
        # Each token's first and last `width` bytes (the last right-aligned), 256 past its end (never a byte).
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        buffer = np.frombuffer(b"".join(known) + bytes(width), dtype=np.uint8).astype(np.int16)
        columns = np.arange(width)
        first = np.where(columns < lengths[:, None], buffer[offsets[:, None] + columns], 256)
        last_index = np.maximum(offsets[:, None] + lengths[:, None] - width + columns, 0)
        last = np.where(columns >= width - lengths[:, None], buffer[last_index], 256)
        size, stop = len(target), np.frombuffer(target, dtype=np.uint8)
        newest, inside, starts = (np.zeros((vocab_size, width + 1), bool) for _ in range(3))
        newest[: len(known), 0] = [target in data for data in known]
        for e in range(1, size):  # e bytes of the stop string lie before the token
            newest[:, e] = (lengths >= size - e) & (first[:, : size - e] == stop[e:]).all(-1)
            starts[:, e] = (lengths >= e) & (last[:, width - e :] == stop[:e]).all(-1)
        if self._ids_of is None:
            self._ids_of = {}
            for index, data in enumerate(self.token_bytes):
                self._ids_of.setdefault(data, []).append(index)
        for e in range(1, size + 1):
            inside[:, e] = lengths == 0  # a token without bytes (an id the tokenizer lacks) is skipped
            for begin in range(e):
                ids = [i for i in self._ids_of.get(target[begin:e], []) if i < vocab_size]
                inside[np.asarray(ids, dtype=np.intp), e] = True
        self._columns[key] = (newest, inside, starts)
        return self._columns[key]


class StopStringTables(NamedTuple):
    """Stop strings as per-token tables, for matching inside a compiled loop (`stop_string_hits` in the TF and
    Flax `generation.py`). For token id t, stop string n (bytes s, length L) and e in [0, W] (W >= L):

    newest[t, n, e]: as the newest token, t completes s when the e bytes s[:e] come right before it: e = 0 if
        s lies inside t's bytes, 0 < e < L if t begins with s[e:].
    inside[t, n, e]: t's bytes are exactly s[e - len(t):e] (1 <= e <= L); walking back, s[:e - len(t)] is
        still needed before t. A token without bytes is inside everywhere (skipped).
    starts[t, n, e]: t ends with s[:e] (1 <= e < L): the stop string starts in t.
    token_length[t]: len(t's bytes).

    A row stops when, walking back from the newest token through `inside` tokens, it reaches one that `starts`
    the rest (or needs nothing more): the host check's rule (a match ending inside the newest token) on bytes.
    Stop strings are padded to a bucket (W a multiple of 8, N a power of two) with rows that never match, so one
    compiled program serves different stop strings.
    """

    newest: np.ndarray  # (V, N, W + 1) bool
    inside: np.ndarray  # (V, N, W + 1) bool
    starts: np.ndarray  # (V, N, W + 1) bool
    token_length: np.ndarray  # (V,) int32


def stop_string_tables(criteria: list, vocab_size: int) -> StopStringTables | None:
    """The tables of every stop string in `criteria` (see StopStringTables), or None when `criteria` is empty
    or holds anything but StopStringCriteria (those must run on the host between steps)."""
    if not criteria or not all(isinstance(c, StopStringCriteria) for c in criteria):
        return None
    longest = max(len(target) for c in criteria for target in c.targets)
    width = -(-longest // 8) * 8
    parts = [c.tables(vocab_size, width) for c in criteria]
    count = sum(p.newest.shape[1] for p in parts)
    padding = np.zeros((vocab_size, 2 ** (count - 1).bit_length() - count, width + 1), bool)
    return StopStringTables(
        newest=np.concatenate([p.newest for p in parts] + [padding], axis=1),
        inside=np.concatenate([p.inside for p in parts] + [padding], axis=1),
        starts=np.concatenate([p.starts for p in parts] + [padding], axis=1),
        token_length=parts[0].token_length if len(parts) == 1 else _common_lengths(parts),
    )


def _common_lengths(parts: list[StopStringTables]) -> np.ndarray:
    """One token-length column for criteria built from different tokenizers would be wrong: refuse it."""
    if any(not np.array_equal(p.token_length, parts[0].token_length) for p in parts[1:]):
        raise ValueError("StopStringCriteria built from different tokenizers cannot be combined in one generate()")
    return parts[0].token_length


class StoppingCriteriaList(list):
    """Criteria combined with OR: a row stops when any of them says so."""

    def __call__(self, input_ids: np.ndarray, scores: Any = None, **kwargs: Any) -> np.ndarray:
        input_ids = np.asarray(input_ids)
        done = np.zeros(input_ids.shape[0], dtype=bool)
        for criterion in self:
            verdict = np.asarray(criterion(input_ids, scores, **kwargs), dtype=bool)
            if verdict.shape not in ((), (input_ids.shape[0],)):
                raise ValueError(
                    f"stopping criterion {type(criterion).__name__} returned shape {verdict.shape}, expected "
                    f"({input_ids.shape[0]},) (one bool per row) or a single bool"
                )
            done |= verdict
        return done

    @property
    def max_length(self) -> int | None:
        """The smallest `max_length` among the MaxLengthCriteria in the list (None without one)."""
        lengths = [c.max_length for c in self if isinstance(c, MaxLengthCriteria)]
        return min(lengths) if lengths else None
