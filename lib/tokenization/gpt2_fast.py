"""GPT2TokenizerFast: GPT-2's byte-level BPE on the `tokenizers` library (Rust).

The same public surface as `GPT2Tokenizer` (the shared half lives in `tokenization_utils`); only text → ids,
ids → text and the vocabulary go through `tokenizers`. It adds `return_offsets_mapping` and
`BatchEncoding.word_ids()`, and reads / writes tokenizer.json.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ..checkpoints.files import atomic_write_text
from .base import AddedToken, Encoded, PreTrainedTokenizerBase, as_added_token
from .gpt2 import MERGES_FILE, VOCAB_FILE, load_bpe_files

__all__ = ["GPT2TokenizerFast"]

TOKENIZER_FILE = "tokenizer.json"


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as err:  # pragma: no cover - tokenizers is a core dependency
        raise ImportError("GPT2TokenizerFast needs the `tokenizers` library: pip install tokenizers") from err
    return tokenizers


def build_backend(vocab: dict[str, int], merges: list[tuple[str, str]], add_prefix_space: bool = False) -> Any:
    """A `tokenizers.Tokenizer` with GPT-2's pipeline (what Hugging Face's GPT-2 converter builds)."""
    tk = _tokenizers()
    model = tk.models.BPE(
        vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
    )
    backend = tk.Tokenizer(model)
    backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    backend.post_processor = tk.processors.ByteLevel(trim_offsets=False)
    backend.decoder = tk.decoders.ByteLevel()
    return backend


def _check_backend(backend: Any, source: str) -> None:
    """Refuse pipelines GPT-2's tokenizers do not have (the slow and TF tokenizers could not match them)."""
    state = json.loads(backend.to_str())
    model, pre, decoder = state.get("model") or {}, state.get("pre_tokenizer") or {}, state.get("decoder") or {}
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"model type {model.get('type')!r} (expected 'BPE')")
    if pre.get("type") != "ByteLevel" or pre.get("use_regex") is False:
        problems.append(f"pre_tokenizer {pre.get('type')!r} (expected 'ByteLevel' with use_regex)")
    if state.get("normalizer") is not None:
        problems.append(f"normalizer {state['normalizer'].get('type')!r} (expected none)")
    if decoder.get("type") != "ByteLevel":
        problems.append(f"decoder {decoder.get('type')!r} (expected 'ByteLevel')")
    if problems:
        raise ValueError(f"{source} is not a GPT-2 byte-level BPE tokenizer: " + "; ".join(problems))


class _WordsOnDemand:
    """The `words` of the sequences of one fast-path batch: `batch[i].word_ids` encodes input i again, once.

    Nothing is made per sequence until its word ids are read (`BatchEncoding.word_ids`). The backend is the one
    that made the ids; tokens added to it in between would change the word ids, as they would change the ids.
    """

    def __init__(self, backend: Any, inputs: list[Any], is_pretokenized: bool) -> None:
        self._backend, self._inputs, self._is_pretokenized = backend, inputs, is_pretokenized

    def __len__(self) -> int:
        return len(self._inputs)

    def __getitem__(self, index: int) -> _SequenceWords:
        return _SequenceWords(self, index)

    def encode_words(self, index: int) -> list[int | None]:
        return self._backend.encode(
            self._inputs[index], is_pretokenized=self._is_pretokenized, add_special_tokens=False
        ).word_ids


class _SequenceWords:
    """One sequence's `words` (an `Encoded.words`): its word ids, encoded once, when first read."""

    def __init__(self, batch: _WordsOnDemand, index: int) -> None:
        self._batch, self._index = batch, index
        self._word_ids: list[int | None] | None = None

    @property
    def word_ids(self) -> list[int | None]:
        if self._word_ids is None:
            self._word_ids = self._batch.encode_words(self._index)
        return self._word_ids


class GPT2TokenizerFast(PreTrainedTokenizerBase):
    """GPT-2 byte-level BPE tokenizer backed by Hugging Face's `tokenizers` library.

    Gives the same ids and decoded text as `GPT2Tokenizer`, much faster, and adds offsets mapping and word ids.
    `is_split_into_words=True` needs `add_prefix_space=True` (at construction or per call).

    Args:
        vocab_file: path to vocab.json (with `merges_file`, when there is no tokenizer.json).
        merges_file: path to merges.txt.
        tokenizer_file: path to tokenizer.json (preferred over vocab_file / merges_file).
        unk_token: returned by `convert_tokens_to_ids` for unknown tokens.
        bos_token: beginning-of-sequence token (inserted only if `add_bos_token`).
        eos_token: end-of-sequence token.
        add_prefix_space: put a space before the text (before each piece between added tokens).
        tokenizer_object: an existing `tokenizers.Tokenizer` to wrap (copied).
        pad_token: padding token; GPT-2 has none.
        add_bos_token: insert `bos_token` at the start of every sequence.
        **kwargs: as for `GPT2Tokenizer`.
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE, "merges_file": MERGES_FILE, "tokenizer_file": TOKENIZER_FILE}
    is_fast = True

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
        tokenizer_file: str | os.PathLike | None = None,
        unk_token: str | AddedToken | None = "<|endoftext|>",
        bos_token: str | AddedToken | None = "<|endoftext|>",
        eos_token: str | AddedToken | None = "<|endoftext|>",
        add_prefix_space: bool = False,
        *,
        tokenizer_object: Any = None,
        pad_token: str | AddedToken | None = None,
        add_bos_token: bool = False,
        **kwargs: Any,
    ) -> None:
        tk = _tokenizers()
        if tokenizer_object is not None:
            source = "tokenizer_object"
            backend = tk.Tokenizer.from_str(tokenizer_object.to_str())
        elif tokenizer_file is not None:
            source = os.fspath(tokenizer_file)
            if not os.path.isfile(source):
                raise FileNotFoundError(f"tokenizer file not found: {source}")
            try:
                backend = tk.Tokenizer.from_file(source)
            except Exception as err:  # tokenizers raises a bare Exception for malformed files
                raise ValueError(f"cannot read tokenizer file {source}: {err}") from err
        elif vocab_file is not None and merges_file is not None:
            source = f"{os.fspath(vocab_file)} + {os.fspath(merges_file)}"
            backend = build_backend(*load_bpe_files(vocab_file, merges_file))
        else:
            raise ValueError(
                "GPT2TokenizerFast needs tokenizer_file, or vocab_file and merges_file, or tokenizer_object"
            )
        _check_backend(backend, source)
        backend.no_truncation()  # truncation and padding are done once, in tokenization_utils
        backend.no_padding()
        self._tokenizer = backend
        self._variants: dict[bool, Any] = {}
        super().__init__(
            unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
            add_prefix_space=add_prefix_space, add_bos_token=add_bos_token, **kwargs,
        )

    @classmethod
    def _check_vocab_files(cls, source: str, init_kwargs: dict[str, Any]) -> None:
        if init_kwargs.get("tokenizer_file") is None and (
            init_kwargs.get("vocab_file") is None or init_kwargs.get("merges_file") is None
        ):
            raise OSError(f"{source} has neither tokenizer.json nor vocab.json + merges.txt")

    @property
    def backend_tokenizer(self) -> Any:
        """The wrapped `tokenizers.Tokenizer`."""
        return self._tokenizer

    @property
    def add_prefix_space(self) -> bool:
        """Whether a space is put before the text; setting it reconfigures the backend's pre-tokenizer."""
        return self._add_prefix_space

    @add_prefix_space.setter
    def add_prefix_space(self, value: bool) -> None:
        self._add_prefix_space = bool(value)
        self._tokenizer.pre_tokenizer = _tokenizers().pre_tokenizers.ByteLevel(
            add_prefix_space=self._add_prefix_space, use_regex=True
        )
        self._variants = {}

    def _backend(self, add_prefix_space: bool | None) -> Any:
        if add_prefix_space is None or bool(add_prefix_space) == self._add_prefix_space:
            return self._tokenizer
        if add_prefix_space not in self._variants:  # a copy with the other setting, for per-call overrides
            variant = _tokenizers().Tokenizer.from_str(self._tokenizer.to_str())
            variant.pre_tokenizer = _tokenizers().pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space,
                                                                            use_regex=True)
            self._variants[bool(add_prefix_space)] = variant
        return self._variants[bool(add_prefix_space)]

    # ----------------------------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return {i: as_added_token(t, special=t.special) for i, t in
                sorted(self._tokenizer.get_added_tokens_decoder().items())}

    def _token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def _id_to_token(self, index: int) -> str | None:
        return self._tokenizer.id_to_token(index)

    def _add_tokens_impl(self, tokens: list[AddedToken]) -> None:
        tk = _tokenizers()
        self._tokenizer.add_tokens([
            tk.AddedToken(t.content, single_word=t.single_word, lstrip=t.lstrip, rstrip=t.rstrip,
                          normalized=t.normalized, special=t.special)
            for t in tokens
        ])
        self._variants = {}
        self._invalidate()

    def _bpe_vocab_and_merges(self) -> tuple[dict[str, int], list[str]]:
        model = json.loads(self._tokenizer.to_str())["model"]
        merges = []
        for merge in model["merges"]:  # tokenizers >= 0.20 writes pairs, older versions "left right" strings
            pair = merge.split(" ") if isinstance(merge, str) else list(merge)
            if len(pair) != 2 or any(" " in symbol for symbol in pair):
                raise ValueError(f"merge {merge!r} cannot be written as a 'left right' line")
            merges.append(" ".join(pair))
        return dict(model["vocab"]), merges

    # ----------------------------------------------------------------------------------- encoding / decoding
    def _check_split_into_words(self, add_prefix_space: bool | None) -> None:
        if not (self._add_prefix_space if add_prefix_space is None else add_prefix_space):
            raise ValueError(
                "You need to instantiate GPT2TokenizerFast with add_prefix_space=True to use it with pretokenized "
                "inputs (is_split_into_words=True)."
            )

    def _encode_texts(
        self, texts: list[Any], is_split_into_words: bool, with_offsets: bool, add_prefix_space: bool | None = None
    ) -> list[Encoded]:
        if not with_offsets:
            ids, words = self._encode_ids(texts, is_split_into_words, add_prefix_space)
            return [Encoded(row, None, words[i]) for i, row in enumerate(ids)]
        inputs = [list(words) for words in texts] if is_split_into_words else texts
        encodings = self._backend(add_prefix_space).encode_batch(
            inputs, is_pretokenized=is_split_into_words, add_special_tokens=False
        )
        return [Encoded(e.ids, e.offsets, e) for e in encodings]

    def _encode_ids(
        self, texts: list[Any], is_split_into_words: bool, add_prefix_space: bool | None = None
    ) -> tuple[list[list[int]], _WordsOnDemand]:
        # Without offsets, `encode_batch_fast` skips the offset and word bookkeeping (same ids); word ids are
        # made on demand by encoding that one sequence again, only if `BatchEncoding.word_ids()` is called.
        inputs = [list(words) for words in texts] if is_split_into_words else texts
        backend = self._backend(add_prefix_space)
        encodings = backend.encode_batch_fast(inputs, is_pretokenized=is_split_into_words, add_special_tokens=False)
        return [e.ids for e in encodings], _WordsOnDemand(backend, inputs, is_split_into_words)

    def _decode_ids(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    # ----------------------------------------------------------------------------------- files
    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write vocab.json and merges.txt (the `tokenizers` format) into `save_directory`, atomically.

        Returns:
            (vocab path, merges path).
        """
        save_directory = os.fspath(save_directory)
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"save_directory {save_directory} is not a directory")
        with tempfile.TemporaryDirectory(dir=save_directory, prefix=".vocab-") as scratch:
            written = self._tokenizer.model.save(scratch, filename_prefix)
            paths = []
            for path in written:
                target = os.path.join(save_directory, os.path.basename(path))
                os.replace(path, target)
                paths.append(target)
        return tuple(paths)

    def _extra_files(self, save_directory: str, filename_prefix: str | None) -> tuple[str, ...]:
        path = os.path.join(save_directory, (f"{filename_prefix}-" if filename_prefix else "") + TOKENIZER_FILE)
        atomic_write_text(path, self._tokenizer.to_str(pretty=True))
        return (path,)
