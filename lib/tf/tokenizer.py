"""TFGPT2Tokenizer: GPT-2's byte-level BPE as an in-graph Keras 3 layer, in TensorFlow ops only.

A model can go end to end from raw `tf.string` inputs; the layer works eagerly, inside `tf.function`, in a
saved `.keras` model and in an exported SavedModel. It gives the same ids as `GPT2Tokenizer` /
`GPT2TokenizerFast` and takes the same four steps (see `twinformers.tokenization.gpt2`):

1. added tokens are cut out of the text with `tf.strings.regex_replace`, which wraps each match in marker
   bytes that valid UTF-8 never contains (0xFF, 0xFE), then `tf.strings.split` on them;
2. the optional prefix space;
3. GPT-2's pre-tokenization regex, evaluated without regex: RE2 has no look-ahead and only ASCII `\\s`, so
   word boundaries are computed from per-character classes (letter / digit / whitespace / space / other,
   the `regex` package's Unicode tables, as the pure-Python tokenizer uses), vectorised over all characters;
4. BPE on the byte symbols of each distinct word: every step merges, in every unfinished word, the
   lowest-ranked adjacent pair (leftmost on ties), found by binary search in the sorted pair keys.

`tensorflow-text` is not used: its wheels require the `tensorflow` package itself, which would replace a
`tensorflow-cpu` install.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import regex
import tensorflow as tf

from ..tokenization.base import PreTrainedTokenizerBase
from ..tokenization.gpt2 import bytes_to_unicode

__all__ = ["TFGPT2Tokenizer"]

# Character classes of GPT-2's pre-tokenization regex.
OTHER, LETTER, DIGIT, SPACE, BLANK = 0, 1, 2, 3, 4  # SPACE: whitespace other than " " (BLANK, U+0020)
NO_RANK = np.iinfo(np.int64).max
MARK, ADDED = b"\xff", b"\xfe"  # bytes that never occur in UTF-8: piece separator, "added token" prefix
ONE_LETTER_CONTRACTIONS = "stmd"  # 's 't 'm 'd
TWO_LETTER_CONTRACTIONS = ("re", "ve", "ll")


@functools.lru_cache(maxsize=1)
def character_classes() -> tuple[np.ndarray, np.ndarray]:
    """Run-length table of the character class of every code point: (run starts, class of each run)."""
    chars = "".join(map(chr, range(0x110000)))
    classes = np.full(0x110000, OTHER, np.int8)
    for pattern, value in ((r"\p{L}+", LETTER), (r"\p{N}+", DIGIT), (r"\s+", SPACE)):
        for match in regex.finditer(pattern, chars):
            classes[match.start():match.end()] = value
    classes[ord(" ")] = BLANK
    starts = np.flatnonzero(np.diff(classes, prepend=-1)).astype(np.int32)
    return starts, classes[starts]


def _re2_literal(text: str) -> str:
    return "".join(f"\\x{{{ord(c):x}}}" for c in text)


@keras.saving.register_keras_serializable(package="twinformers")
class TFGPT2Tokenizer(keras.layers.Layer):
    """In-graph GPT-2 tokenizer: a Keras layer mapping `tf.string` texts to token ids.

    Args:
        vocab: token → id of the BPE vocabulary (vocab.json).
        merges: BPE merges in rank order, each "left right" (merges.txt lines).
        max_length: truncate to this many tokens (and pad to it when `pad_token_id` is set).
        pad_token_id: when set, outputs are dense and padded (to `max_length`, or to the longest text);
            when None they are `tf.RaggedTensor`s.
        add_prefix_space: put a space before each text (before each piece between added tokens).
        added_tokens: added tokens to cut out of the text first, as in tokenizer.json's `added_tokens`:
            dicts with `id`, `content` and optionally `normalized` (non-normalized ones match first).
            `lstrip`, `rstrip` and `single_word` are not supported in-graph.
        bos_token_id: prepended to every sequence when set (a tokenizer's `add_bos_token`).
        **kwargs: Keras layer arguments (`name`, …).
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[str],
        max_length: int | None = None,
        pad_token_id: int | None = None,
        add_prefix_space: bool = False,
        added_tokens: Sequence[Mapping[str, Any]] | None = None,
        bos_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.add_prefix_space = bool(add_prefix_space)
        self.bos_token_id = bos_token_id
        # Plain tuples: Keras would wrap (and deep-copy) dicts and lists assigned to a layer.
        self._vocab_items = tuple(dict(vocab).items())
        self._merges = tuple(merges)
        self._added_tokens = tuple(dict(t) for t in (added_tokens or ()))
        self._build_tables()
        # One graph for the whole pipeline, so that eager calls do not run the BPE loop op by op.
        self._tokenize_graph = tf.function(
            self.tokenize, input_signature=[tf.TensorSpec([None], tf.string)], autograph=False
        )
        self.built = True

    # ----------------------------------------------------------------------------------- construction
    def _build_tables(self) -> None:
        vocab = dict(self._vocab_items)
        pairs: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, line in enumerate(self._merges):
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"merge rule {rank} ({line!r}) is not 'left right'")
            left, right = parts
            missing = [s for s in (left, right, left + right) if s not in vocab]
            if missing:
                raise ValueError(f"merge rule {rank} ({line!r}) needs {missing}, which are not in the vocabulary")
            pairs[(vocab[left], vocab[right])] = (rank, vocab[left + right])  # a repeated merge keeps its last rank
        self._key_base = max(vocab.values(), default=0) + 1
        keys = np.array([a * self._key_base + b for a, b in pairs], np.int64)
        order = np.argsort(keys)
        self._merge_keys = tf.constant(keys[order], tf.int64)
        self._merge_ranks = tf.constant(np.array([r for r, _ in pairs.values()], np.int64)[order], tf.int64)
        self._merge_ids = tf.constant(np.array([i for _, i in pairs.values()], np.int64)[order], tf.int64)
        self._byte_ids = tf.constant([vocab.get(c, -1) for c in bytes_to_unicode().values()], tf.int64)
        starts, classes = character_classes()
        self._class_starts = tf.constant(starts, tf.int32)
        self._class_values = tf.constant(classes.astype(np.int32), tf.int32)

        passes: list[list[str]] = [[], []]  # non-normalized tokens first, then normalized ones (as `tokenizers`)
        contents, ids = [], []
        for token in self._added_tokens:
            content, token_id = token.get("content"), token.get("id")
            if not isinstance(content, str) or not content or not isinstance(token_id, int):
                raise ValueError(f"added token {token!r} needs a non-empty 'content' and an int 'id'")
            flags = [f for f in ("lstrip", "rstrip", "single_word") if token.get(f)]
            if flags:
                raise NotImplementedError(
                    f"added token {content!r} uses {flags}, which TFGPT2Tokenizer does not support"
                )
            passes[bool(token.get("normalized", True))].append(content)
            contents.append(content)
            ids.append(token_id)
        self._added_patterns = [
            "|".join(_re2_literal(c) for c in sorted(group, key=len, reverse=True)) for group in passes if group
        ]
        self._added_contents = tf.constant(contents or [""], tf.string)
        self._added_ids = tf.constant(ids or [-1], tf.int64)

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, *args: Any, **kwargs: Any) -> TFGPT2Tokenizer:
        """Build the layer from a `GPT2Tokenizer` or `GPT2TokenizerFast` (vocabulary, merges, added tokens,
        `add_prefix_space`, `add_bos_token`). `kwargs` (e.g. `max_length`, `pad_token_id`) go to the layer."""
        vocab, merges = tokenizer._bpe_vocab_and_merges()
        added = [{"id": i, **t.to_dict()} for i, t in tokenizer.added_tokens_decoder.items()]
        kwargs.setdefault("add_prefix_space", tokenizer.add_prefix_space)
        if tokenizer.add_bos_token:
            kwargs.setdefault("bos_token_id", tokenizer.bos_token_id)
        return cls(vocab, merges, *args, added_tokens=added, **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *init_inputs: Any, **kwargs: Any
    ) -> TFGPT2Tokenizer:
        """Load a checkpoint's tokenizer files (as `GPT2TokenizerFast.from_pretrained` does) into the layer.

        `max_length`, `pad_token_id`, `bos_token_id`, `name`, `dtype` and `trainable` go to the layer, other
        kwargs to the tokenizer (e.g. `add_prefix_space=True`).
        """
        import importlib.util

        from ..tokenization.gpt2 import GPT2Tokenizer
        from ..tokenization.gpt2_fast import GPT2TokenizerFast

        if init_inputs:
            raise TypeError("TFGPT2Tokenizer.from_pretrained takes the path and keyword arguments only")
        layer_keys = ("max_length", "pad_token_id", "bos_token_id", "name", "dtype", "trainable")
        layer_kwargs = {k: kwargs.pop(k) for k in layer_keys if k in kwargs}
        tokenizer_class = GPT2TokenizerFast if importlib.util.find_spec("tokenizers") else GPT2Tokenizer
        tokenizer = tokenizer_class.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return cls.from_tokenizer(tokenizer, **layer_kwargs)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TFGPT2Tokenizer:
        """Rebuild the layer from `get_config()`."""
        return cls(**config)

    def get_config(self) -> dict[str, Any]:
        """Everything needed to rebuild the layer (vocabulary and merges included)."""
        config = super().get_config()
        config.update({
            "vocab": dict(self._vocab_items),
            "merges": list(self._merges),
            "max_length": self.max_length,
            "pad_token_id": self.pad_token_id,
            "add_prefix_space": self.add_prefix_space,
            "added_tokens": [dict(t) for t in self._added_tokens],
            "bos_token_id": self.bos_token_id,
        })
        return config

    # ----------------------------------------------------------------------------------- the graph
    def _split_added_tokens(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(B,) texts → pieces (P,), the text each piece comes from (P,), each piece's added-token id or -1 (P,)."""
        if self._added_patterns:
            # The marker bytes never occur in UTF-8: reject invalid input before it could be confused with them
            # (decoding and re-encoding keeps a data dependency, which graph optimizations cannot drop).
            texts = tf.strings.unicode_encode(tf.strings.unicode_decode(texts, "UTF-8", errors="strict"), "UTF-8")
        pieces = tf.RaggedTensor.from_tensor(texts[:, None])
        for pattern in self._added_patterns:
            flat = pieces.flat_values
            is_added = tf.strings.substr(flat, 0, 1) == ADDED
            marked = tf.strings.regex_replace(tf.where(is_added, "", flat), pattern, MARK + ADDED + b"\\0" + MARK)
            split = tf.strings.split(tf.where(is_added, flat, marked), sep=MARK)
            pieces = pieces.with_flat_values(split).merge_dims(1, 2)
            pieces = tf.ragged.boolean_mask(pieces, tf.strings.length(pieces) > 0)
        flat = pieces.flat_values
        is_added = tf.strings.substr(flat, 0, 1) == ADDED
        content = tf.strings.substr(flat, tf.ones_like(flat, tf.int32), tf.maximum(tf.strings.length(flat) - 1, 0))
        matches = tf.equal(content[:, None], self._added_contents[None, :])
        token_ids = tf.where(is_added, tf.gather(self._added_ids, tf.argmax(tf.cast(matches, tf.int32), 1)), -1)
        return tf.where(is_added, "", flat), pieces.value_rowids(), token_ids

    def _split_words(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """GPT-2's pre-tokenization of (P,) texts → words (W,) and the text each comes from (W,)."""
        chars, char_starts = tf.strings.unicode_decode_with_offsets(texts, "UTF-8", errors="strict")
        cp = chars.flat_values  # (N,) code points of all texts, concatenated
        row = chars.value_rowids()
        n = tf.size(cp, out_type=tf.int64)
        pos = tf.range(n) - tf.gather(chars.row_starts(), row)  # index within its text
        length = tf.gather(chars.row_lengths(), row)
        cls = tf.gather(self._class_values, tf.searchsorted(self._class_starts, cp, side="right") - 1)

        def at(values: tf.Tensor, offset: int, fill: int) -> tf.Tensor:  # values[i + offset] within the same text
            inside = (pos + offset >= 0) & (pos + offset < length)
            shifted = tf.gather(values, tf.clip_by_value(tf.range(n) + offset, 0, tf.maximum(n - 1, 0)))
            return tf.where(inside, shifted, tf.cast(fill, values.dtype))

        prev_cls, next_cls = at(cls, -1, -1), at(cls, 1, -1)
        is_ws = (cls == SPACE) | (cls == BLANK)
        prev_ws = (prev_cls == SPACE) | (prev_cls == BLANK)
        next_is_word = (next_cls >= 0) & (next_cls != SPACE) & (next_cls != BLANK)

        # Contractions ('s 't 'm 'd 're 've 'll) start a token where a token can start at the apostrophe:
        # at the start, or after a letter, digit or non-" " whitespace (after punctuation or " " the
        # apostrophe continues a punctuation run).
        next1, next2 = at(cp, 1, -1), at(cp, 2, -1)
        one = tf.reduce_any(next1[:, None] == [ord(c) for c in ONE_LETTER_CONTRACTIONS], axis=1)
        two = tf.reduce_any((next1[:, None] == [ord(a) for a, _ in TWO_LETTER_CONTRACTIONS])
                            & (next2[:, None] == [ord(b) for _, b in TWO_LETTER_CONTRACTIONS]), axis=1)
        can_start = (pos == 0) | (prev_cls == LETTER) | (prev_cls == DIGIT) | (prev_cls == SPACE)
        apostrophe = (cp == ord("'")) & can_start
        span = tf.where(apostrophe & two, 3, tf.where(apostrophe & one, 2, 0))
        inside = (at(span, -1, 0) >= 2) | (at(span, -2, 0) == 3)
        after = (at(span, -2, 0) == 2) | (at(span, -3, 0) == 3)

        # Otherwise: a whitespace run is one token, except that when a non-space character follows it, its
        # last character leaves the run (the regex's `\s+(?!\S)`) and, if it is " ", prefixes the next word.
        ws_start = is_ws & (~prev_ws | next_is_word)
        word_start = ~is_ws & tf.where(prev_ws, at(cp, -1, 0) != ord(" "), cls != prev_cls)
        start = (pos == 0) | (span > 0) | after | (~inside & (ws_start | word_start))

        first_char = tf.where(start)[:, 0]  # (W,) flat index of each word's first character
        word_text = tf.gather(row, first_char)
        byte_start = tf.gather(char_starts.flat_values, first_char)
        next_start = tf.concat([byte_start[1:], [0]], 0)
        same_text = tf.concat([word_text[1:] == word_text[:-1], [False]], 0)
        text_bytes = tf.cast(tf.strings.length(texts), tf.int64)
        byte_end = tf.where(same_text, next_start, tf.gather(text_bytes, word_text))
        words = tf.strings.substr(tf.gather(texts, word_text), byte_start, byte_end - byte_start)
        return words, word_text

    def _bpe(self, words: tf.Tensor) -> tf.RaggedTensor:
        """BPE of (U,) distinct words → (U, None) int64 ids."""
        raw = tf.strings.bytes_split(words)
        symbols = tf.gather(self._byte_ids, tf.cast(tf.reshape(tf.io.decode_raw(raw.flat_values, tf.uint8), [-1]),
                                                    tf.int64))
        # Byte symbols missing from the vocabulary are dropped before merging, as `tokenizers` does.
        symbols = tf.ragged.boolean_mask(raw.with_flat_values(symbols), raw.with_flat_values(symbols >= 0))
        if not self._merges:
            return symbols
        base, n_keys = tf.constant(self._key_base, tf.int64), tf.size(self._merge_keys, out_type=tf.int64)

        def step(values, lengths, index, out_values, out_lengths, out_index, i):
            n_words = tf.size(lengths, out_type=tf.int64)
            row = tf.repeat(tf.range(n_words), lengths)
            pos = tf.range(tf.size(values, out_type=tf.int64))
            has_right = tf.concat([row[1:] == row[:-1], [False]], 0)
            key = values * base + tf.concat([values[1:], [0]], 0)
            slot = tf.minimum(tf.searchsorted(self._merge_keys, key, out_type=tf.int64), n_keys - 1)
            found = has_right & (tf.gather(self._merge_keys, slot) == key)
            rank = tf.where(found, tf.gather(self._merge_ranks, slot), NO_RANK)
            best = found & (rank == tf.gather(tf.math.unsorted_segment_min(rank, row, n_words), row))
            first = tf.math.unsorted_segment_min(tf.where(best, pos, NO_RANK), row, n_words)  # leftmost best pair
            merged = best & (pos == tf.gather(first, row))
            values = tf.where(merged, tf.gather(self._merge_ids, slot), values)
            values = tf.boolean_mask(values, ~tf.concat([[False], merged[:-1]], 0))  # drop each merge's right half
            active = first < NO_RANK
            lengths = lengths - tf.cast(active, tf.int64)
            keep = tf.repeat(active, lengths)
            out_values = out_values.write(i, tf.boolean_mask(values, ~keep))  # words with nothing left to merge
            out_lengths = out_lengths.write(i, tf.boolean_mask(lengths, ~active))
            out_index = out_index.write(i, tf.boolean_mask(index, ~active))
            return (tf.boolean_mask(values, keep), tf.boolean_mask(lengths, active), tf.boolean_mask(index, active),
                    out_values, out_lengths, out_index, i + 1)

        arrays = [tf.TensorArray(tf.int64, size=0, dynamic_size=True, infer_shape=False, element_shape=[None])
                  for _ in range(3)]
        loop = tf.while_loop(
            lambda values, lengths, *_: tf.size(lengths) > 0,
            step,
            (symbols.flat_values, symbols.row_lengths(), tf.range(symbols.nrows()), *arrays, tf.constant(0)),
            shape_invariants=(tf.TensorShape([None]),) * 3 + (None,) * 3 + (tf.TensorShape([]),),
        )
        values, lengths, index = (a.concat() for a in loop[3:6])
        done = tf.RaggedTensor.from_row_lengths(values, lengths)
        return tf.gather(done, tf.math.invert_permutation(index))

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """(B,) strings → (B, None) int64 ids (ragged), without truncation or padding."""
        pieces, piece_text, added_ids = self._split_added_tokens(texts)
        if self.add_prefix_space:
            needs_space = (tf.strings.length(pieces) > 0) & (tf.strings.substr(pieces, 0, 1) != " ")
            pieces = tf.where(needs_space, tf.strings.join([" ", pieces]), pieces)
        words, word_piece = self._split_words(pieces)
        distinct, which = tf.unique(words, out_idx=tf.int64)
        word_ids = tf.gather(self._bpe(distinct), which)  # (W, None)
        n_pieces = tf.size(pieces, out_type=tf.int64)
        text_ids = tf.RaggedTensor.from_value_rowids(word_ids, word_piece, nrows=n_pieces).merge_dims(1, 2)
        is_added = added_ids >= 0
        token_ids = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(added_ids, is_added), tf.cast(is_added, tf.int64))
        piece_ids = tf.concat([token_ids, text_ids], axis=1)  # each piece is one or the other
        ids = tf.RaggedTensor.from_value_rowids(piece_ids, piece_text, nrows=tf.size(texts, out_type=tf.int64))
        ids = ids.merge_dims(1, 2)
        if self.bos_token_id is not None:
            bos = tf.fill([tf.size(texts), 1], tf.constant(self.bos_token_id, tf.int64))
            ids = tf.concat([tf.RaggedTensor.from_tensor(bos), ids], axis=1)
        return ids

    def call(self, x: Any, max_length: int | None = None) -> dict[str, Any]:
        """Tokenize texts.

        Args:
            x: (B,) or scalar `tf.string` (UTF-8; invalid UTF-8 raises InvalidArgumentError).
            max_length: overrides the layer's `max_length` for this call.

        Returns:
            {"input_ids", "attention_mask"}, int32: (B, T) dense when `pad_token_id` is set (right padding),
            else (B, None) ragged; (T,) for a scalar input.
        """
        x = tf.convert_to_tensor(x, tf.string)
        if x.shape.rank not in (0, 1):
            raise ValueError(f"TFGPT2Tokenizer takes a scalar or a (batch,) string tensor; got shape {x.shape}")
        texts = tf.reshape(x, [-1])
        ids = tf.cast(self._tokenize_graph(texts), tf.int32)
        max_length = self.max_length if max_length is None else max_length
        if max_length is not None:
            ids = ids[:, :max_length]
        mask = tf.ones_like(ids)
        if self.pad_token_id is not None:
            shape = None if max_length is None else [None, max_length]
            ids = ids.to_tensor(default_value=self.pad_token_id, shape=shape)
            mask = mask.to_tensor(default_value=0, shape=shape)
        if x.shape.rank == 0:
            ids, mask = ids[0], mask[0]
        return {"input_ids": ids, "attention_mask": mask}
