"""GPT2Tokenizer: GPT-2's byte-level BPE in pure Python (GPT-J and GPT-Neo use the same tokenizer).

Text → ids in four steps, the same steps `tokenizers` takes (so GPT2TokenizerFast gives identical ids):

1. Added tokens (`<|endoftext|>`, tokens from `add_tokens`) are cut out of the text, leftmost-longest,
   non-normalized tokens first, honouring `lstrip` / `rstrip` / `single_word`.
2. With `add_prefix_space` (or `is_split_into_words`), a space is put before every remaining piece that does
   not already start with one.
3. Each piece is split with GPT-2's regex (contractions, letter runs, digit runs, other runs, whitespace).
4. Each word's UTF-8 bytes become byte-level symbols (`bytes_to_unicode`), which are merged by BPE: always
   the lowest-ranked adjacent pair, leftmost first, one merge at a time.

Letters and digits are Unicode classes: this module uses the `regex` package's tables and `tokenizers`
uses Oniguruma's; they agree on every character except those assigned in the newest Unicode versions that
only one of the two libraries knows yet.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import os
from typing import Any

import regex

from ..checkpoints.files import atomic_write_text
from .base import AddedToken, Encoded, PreTrainedTokenizerBase, read_json

__all__ = ["GPT2Tokenizer", "GPT2_SPLIT_PATTERN", "bytes_to_unicode", "load_bpe_files", "read_merges", "check_bpe"]

logger = logging.getLogger(__name__)

# GPT-2's pre-tokenization regex (OpenAI's encoder.py), as `tokenizers`' ByteLevel pre-tokenizer uses it.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
MERGES_HEADER = "#version: 0.2"
BPE_CACHE_SIZE = 100_000  # words; the cache is cleared when it grows past this

# Helpers `tokenizers` uses to resolve added-token flags (Rust's Unicode \w and \s).
_ENDS_WITH_WORD = regex.compile(r"\w\Z")
_STARTS_WITH_WORD = regex.compile(r"\w")
_TRAILING_SPACE = regex.compile(r"\s*\Z")
_LEADING_SPACE = regex.compile(r"\s*")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte → printable character: printable Latin-1 bytes stand for themselves, the other 68 bytes
    (controls, space, …) for U+0100 onwards, in byte order (so the space byte 0x20 is "Ġ", U+0120)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


def read_merges(merges_file: str | os.PathLike) -> list[tuple[str, str]]:
    """Parse merges.txt: an optional `#version` header, then one "left right" pair per line, in rank order.

    Raises:
        ValueError: a line is not exactly two space-separated symbols, or the file is not UTF-8.
    """
    try:
        with open(merges_file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"merges file not found: {merges_file}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"merges file {merges_file} is not valid UTF-8: {err}") from err
    merges = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"merges file {merges_file} line {number}: expected 'left right', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def check_bpe(vocab: Any, merges: list[tuple[str, str]], vocab_source: str, merges_source: str) -> dict[str, int]:
    """Validate a BPE model as `tokenizers` would: token → unique non-negative int ids, and every merge's
    two symbols and their concatenation in the vocabulary.

    Returns:
        The vocabulary.

    Raises:
        ValueError: naming the file and the offending entry.
    """
    if not isinstance(vocab, dict):
        raise ValueError(f"vocabulary {vocab_source} must be a JSON object mapping tokens to ids")
    bad = [(k, v) for k, v in vocab.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise ValueError(f"vocabulary {vocab_source}: ids must be non-negative ints; found {bad[:5]}")
    if len(set(vocab.values())) != len(vocab):
        seen: dict[int, str] = {}
        dupes = [(seen.setdefault(v, k), k, v) for k, v in vocab.items() if seen.get(v, k) != k]
        raise ValueError(f"vocabulary {vocab_source}: several tokens share an id, e.g. {dupes[:3]}")
    for rank, (left, right) in enumerate(merges):
        for symbol in (left, right, left + right):
            if symbol not in vocab:
                raise ValueError(
                    f"merges {merges_source} rule {rank} ({left!r} {right!r}) needs {symbol!r}, which is not in "
                    f"the vocabulary {vocab_source}"
                )
    missing = [b for b, c in bytes_to_unicode().items() if c not in vocab]
    if missing:
        logger.warning(
            "vocabulary %s lacks %d of the 256 byte symbols (e.g. byte 0x%02x); text containing those bytes loses "
            "them when encoded, as with the `tokenizers` library",
            vocab_source, len(missing), missing[0],
        )
    return vocab


def load_bpe_files(vocab_file: str | os.PathLike, merges_file: str | os.PathLike) -> tuple[dict[str, int], list]:
    """Read and validate vocab.json + merges.txt.

    Returns:
        (vocabulary token → id, merges as (left, right) pairs in rank order).
    """
    merges = read_merges(merges_file)
    vocab = check_bpe(read_json(vocab_file, "vocabulary file"), merges, os.fspath(vocab_file), os.fspath(merges_file))
    return vocab, merges


class GPT2Tokenizer(PreTrainedTokenizerBase):
    """GPT-2 byte-level BPE tokenizer in pure Python.

    A leading space is part of a word's token, so "Hello" at the start of a text and " Hello" after a space
    encode differently; `add_prefix_space=True` treats the first word like any other.

    Args:
        vocab_file: path to vocab.json (token → id).
        merges_file: path to merges.txt (BPE merges in rank order).
        errors: how to decode byte sequences that are not UTF-8 (a `bytes.decode` error handler).
        unk_token: returned by `convert_tokens_to_ids` for unknown tokens.
        bos_token: beginning-of-sequence token (inserted only if `add_bos_token`).
        eos_token: end-of-sequence token.
        pad_token: padding token; GPT-2 has none (set `tokenizer.pad_token = tokenizer.eos_token` to pad).
        add_prefix_space: put a space before the text (before each piece between added tokens).
        add_bos_token: insert `bos_token` at the start of every sequence.
        **kwargs: `model_max_length`, `padding_side`, `truncation_side`, `clean_up_tokenization_spaces`,
            other special tokens (`sep_token`, `cls_token`, `mask_token`, `additional_special_tokens`),
            `added_tokens_decoder`, `name_or_path`.
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE, "merges_file": MERGES_FILE}

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        merges_file: str | os.PathLike,
        errors: str = "replace",
        unk_token: str | AddedToken | None = "<|endoftext|>",
        bos_token: str | AddedToken | None = "<|endoftext|>",
        eos_token: str | AddedToken | None = "<|endoftext|>",
        pad_token: str | AddedToken | None = None,
        add_prefix_space: bool = False,
        add_bos_token: bool = False,
        **kwargs: Any,
    ) -> None:
        try:
            codecs.lookup_error(errors)
        except LookupError:
            raise ValueError(f"errors={errors!r} is not a bytes.decode error handler (e.g. 'replace')") from None
        self.errors = errors
        self.encoder, merges = load_bpe_files(vocab_file, merges_file)
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}  # a repeated merge keeps its last rank
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.pat = regex.compile(GPT2_SPLIT_PATTERN)
        self.cache: dict[str, list[int]] = {}
        self._added: dict[int, AddedToken] = {}
        self._added_ids: dict[str, int] = {}
        self._split_patterns: list[regex.Pattern] = []
        super().__init__(
            unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
            add_prefix_space=add_prefix_space, add_bos_token=add_bos_token, **kwargs,
        )

    @classmethod
    def _check_vocab_files(cls, source: str, init_kwargs: dict[str, Any]) -> None:
        missing = [name for key, name in cls.vocab_files_names.items() if init_kwargs.get(key) is None]
        if missing:
            raise OSError(f"{source} has no {' or '.join(missing)}; GPT2Tokenizer needs vocab.json and merges.txt")

    # ----------------------------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self._added_ids}

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return {i: AddedToken(**vars(t)) for i, t in sorted(self._added.items())}

    def _token_to_id(self, token: str) -> int | None:
        token_id = self._added_ids.get(token)
        return self.encoder.get(token) if token_id is None else token_id

    def _id_to_token(self, index: int) -> str | None:
        added = self._added.get(index)
        return self.decoder.get(index) if added is None else added.content

    def _add_tokens_impl(self, tokens: list[AddedToken]) -> None:
        for token in tokens:
            token_id = self._token_to_id(token.content)
            if token_id is None:  # the next free id, as `tokenizers` assigns it
                top = max(self._added, default=-1)
                token_id = top + 1 if top >= len(self.encoder) else len(self.encoder)
            self._added[token_id] = AddedToken(**vars(token))
            self._added_ids[token.content] = token_id
        # Leftmost-longest matching: at each position the longest alternative wins.
        self._split_patterns = []
        for normalized in (False, True):
            contents = sorted((t.content for t in self._added.values() if t.normalized == normalized),
                              key=len, reverse=True)
            if contents:
                self._split_patterns.append(regex.compile("|".join(regex.escape(c) for c in contents)))
        self._invalidate()

    def _bpe_vocab_and_merges(self) -> tuple[dict[str, int], list[str]]:
        return dict(self.encoder), [f"{a} {b}" for (a, b), _ in sorted(self.bpe_ranks.items(), key=lambda x: x[1])]

    # ----------------------------------------------------------------------------------- encoding
    def _split_on_added_tokens(self, text: str) -> list[tuple[str, int | None]]:
        pieces: list[tuple[str, int | None]] = [(text, None)] if text else []
        for pattern in self._split_patterns:
            split: list[tuple[str, int | None]] = []
            for piece, token_id in pieces:
                split.extend(self._split_piece(piece, pattern) if token_id is None else [(piece, token_id)])
            pieces = split
        return pieces

    def _split_piece(self, text: str, pattern: regex.Pattern) -> list[tuple[str, int | None]]:
        # Mirrors `tokenizers`' AddedVocabulary::find_matches.
        pieces: list[tuple[str, int | None]] = []
        done = 0
        for match in pattern.finditer(text):
            start, stop = match.span()
            token_id = self._added_ids[match.group()]
            token = self._added[token_id]
            if token.single_word and (
                (start > 0 and _ENDS_WITH_WORD.search(text, 0, start))
                or (stop < len(text) and _STARTS_WITH_WORD.match(text, stop))
            ):
                continue
            if token.lstrip:
                start = max(_TRAILING_SPACE.search(text, 0, start).start(), done)
            if token.rstrip:
                stop = _LEADING_SPACE.match(text, stop).end()
            if done < start:
                pieces.append((text[done:start], None))
            pieces.append((text[start:stop], token_id))
            done = stop
        if done < len(text):
            pieces.append((text[done:], None))
        return pieces

    def bpe(self, word: str) -> list[int]:
        """Ids of one pre-tokenized word (its UTF-8 bytes, merged by BPE). Results are cached."""
        ids = self.cache.get(word)
        if ids is not None:
            return ids
        # Byte symbols missing from the vocabulary are dropped before merging, as `tokenizers` does.
        symbols = [c for c in (self.byte_encoder[b] for b in word.encode("utf-8")) if c in self.encoder]
        while len(symbols) > 1:
            # The lowest-ranked adjacent pair, leftmost on ties; one merge at a time (as `tokenizers` does).
            best, best_rank = -1, None
            for i in range(len(symbols) - 1):
                rank = self.bpe_ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best < 0:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        ids = [self.encoder[s] for s in symbols]
        if len(self.cache) >= BPE_CACHE_SIZE:
            self.cache.clear()
        self.cache[word] = ids
        return ids

    def _encode_text(self, text: str, prefix_space: bool) -> list[int]:
        ids: list[int] = []
        for piece, token_id in self._split_on_added_tokens(text):
            if token_id is not None:
                ids.append(token_id)
                continue
            if prefix_space and not piece.startswith(" "):
                piece = " " + piece
            for word in self.pat.findall(piece):
                ids.extend(self.bpe(word))
        return ids

    def _encode_texts(
        self, texts: list[Any], is_split_into_words: bool, with_offsets: bool, add_prefix_space: bool | None = None
    ) -> list[Encoded]:
        prefix_space = self.add_prefix_space if add_prefix_space is None else add_prefix_space
        if not is_split_into_words:
            return [Encoded(self._encode_text(text, prefix_space)) for text in texts]
        # Pre-split words: each is encoded as a word in mid-sentence (a space before it).
        return [Encoded([i for word in words for i in self._encode_text(word, True)]) for words in texts]

    # ----------------------------------------------------------------------------------- decoding
    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join byte-level token strings back into text."""
        return self._tokens_to_bytes(tokens).decode("utf-8", errors=self.errors)

    def _tokens_to_bytes(self, tokens: list[str]) -> bytes:
        out = bytearray()
        for token in tokens:
            try:
                out.extend(self.byte_decoder[c] for c in token)
            except KeyError:  # an added token with characters outside the byte alphabet: its own UTF-8
                out.extend(token.encode("utf-8"))
        return bytes(out)

    def _decode_ids(self, ids: list[int]) -> str:
        return self.convert_tokens_to_string([self._id_to_token(i) for i in ids])

    # ----------------------------------------------------------------------------------- files
    def _extra_config(self) -> dict[str, Any]:
        return {"errors": self.errors}

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str, str]:
        """Write vocab.json and merges.txt (Hugging Face's slow-tokenizer format) into `save_directory`.

        Returns:
            (vocab path, merges path).
        """
        save_directory = os.fspath(save_directory)
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"save_directory {save_directory} is not a directory")
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        vocab_path = os.path.join(save_directory, prefix + VOCAB_FILE)
        merges_path = os.path.join(save_directory, prefix + MERGES_FILE)
        atomic_write_text(vocab_path, json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        _, merges = self._bpe_vocab_and_merges()
        atomic_write_text(merges_path, "".join(f"{line}\n" for line in [MERGES_HEADER, *merges]))
        return vocab_path, merges_path
