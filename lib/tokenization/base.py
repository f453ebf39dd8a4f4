"""Framework-free machinery shared by `GPT2Tokenizer` and `GPT2TokenizerFast`.

The two tokenizers differ only in how one piece of text becomes ids (pure Python vs the `tokenizers`
library). Everything around that is written once here: special and added tokens, `__call__` (truncation,
special tokens, padding, tensors), decoding, and the Hugging Face file layout (`tokenizer_config.json`,
`special_tokens_map.json`, `added_tokens.json`).

Conventions follow Hugging Face transformers 4.47. Where its slow and fast tokenizers disagree (added-token
matching, prefix spaces, decoding of added tokens, truncation of pairs), twinformers follows the `tokenizers`
library for both, so that the two give the same ids and text on every input.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import itertools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..checkpoints.files import atomic_write_text, pop_hub_arguments, resolve_file, staged_directory
from ..configuration import StoredAs

__all__ = [
    "AddedToken",
    "BatchEncoding",
    "Encoded",
    "PreTrainedTokenizerBase",
    "SPECIAL_TOKENS_ATTRIBUTES",
    "VERY_LARGE_INTEGER",
    "clean_up_tokenization",
]

logger = logging.getLogger(__name__)

# Hugging Face's "no limit" value for `model_max_length` (written to tokenizer_config.json as is).
VERY_LARGE_INTEGER = int(1e30)

SPECIAL_TOKENS_ATTRIBUTES = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
SIDES = ("right", "left")

# return_tensors value → (module to import, pip extra, framework name)
TENSOR_BACKENDS = {
    "np": ("numpy", None, "NumPy"),
    "pt": ("torch", "pt", "PyTorch"),
    "tf": ("tensorflow", "tf", "TensorFlow"),
    "jax": ("jax.numpy", "flax", "JAX"),
}


# --------------------------------------------------------------------------------------------- added tokens
@dataclasses.dataclass
class AddedToken:
    """A token added on top of the BPE vocabulary (special tokens included), as `tokenizers` defines it.

    Attributes:
        content: the token's text; it is matched literally in the input before pre-tokenization.
        single_word: match only when not preceded or followed by a word character.
        lstrip: absorb the whitespace on the token's left.
        rstrip: absorb the whitespace on the token's right.
        normalized: match against the normalized text (GPT-2 has no normalizer, but `tokenizers` still
            matches non-normalized tokens first, then normalized ones; both tokenizers do the same).
        special: skipped by `decode(..., skip_special_tokens=True)`.
    """

    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = True
    special: bool = False

    def __str__(self) -> str:
        return self.content

    def to_dict(self) -> dict[str, Any]:
        """The `added_tokens_decoder` entry Hugging Face writes to tokenizer_config.json."""
        return {
            "content": self.content, "lstrip": self.lstrip, "normalized": self.normalized,
            "rstrip": self.rstrip, "single_word": self.single_word, "special": self.special,
        }


def as_added_token(value: Any, *, special: bool, what: str = "token") -> AddedToken:
    """Coerce a str, `AddedToken`, `tokenizers.AddedToken` or JSON dict into an `AddedToken`.

    A plain string gets Hugging Face's defaults: `normalized = not special`.
    """
    if isinstance(value, AddedToken):
        return dataclasses.replace(value)
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{what} must be a non-empty string")
        return AddedToken(value, normalized=not special, special=special)
    if isinstance(value, Mapping):
        if not isinstance(value.get("content"), str) or not value["content"]:
            raise ValueError(f"{what} must have a non-empty string 'content'; got {dict(value)!r}")
        flags = {f.name: bool(value[f.name]) for f in dataclasses.fields(AddedToken)
                 if f.name != "content" and f.name in value}
        flags.setdefault("normalized", not flags.get("special", special))
        flags.setdefault("special", special)
        return AddedToken(value["content"], **flags)
    if hasattr(value, "content"):  # tokenizers.AddedToken
        return AddedToken(
            value.content, single_word=value.single_word, lstrip=value.lstrip, rstrip=value.rstrip,
            normalized=value.normalized, special=getattr(value, "special", special),
        )
    raise TypeError(f"{what} must be a str or an AddedToken; got {type(value).__name__}")


def clean_up_tokenization(text: str) -> str:
    """Hugging Face's `clean_up_tokenization`: remove spaces before punctuation and English contractions."""
    for before, after in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
        (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


# --------------------------------------------------------------------------------------------- encodings
@dataclasses.dataclass
class Encoded:
    """One sequence as a tokenizer backend returns it, before truncation, special tokens and padding.

    Attributes:
        ids: token ids.
        offsets: (start, end) character offsets into the input per token, or None when not requested.
        words: where word ids come from, read only if asked for: an object whose `word_ids` lists the index
            of the pre-tokenized word (or input word, with `is_split_into_words`) of each token (a
            `tokenizers.Encoding`), or None when the backend does not track words.
        start: index of `ids[0]` in `words.word_ids` (a truncated sequence starts later).
    """

    ids: list[int]
    offsets: list[tuple[int, int]] | None = None
    words: Any = None
    start: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> Encoded:
        offsets = None if self.offsets is None else self.offsets[start:stop]
        return Encoded(self.ids[start:stop], offsets, self.words, self.start + start)

    def word_span(self) -> tuple[Any, int, int]:
        """A word-id recipe entry: (source, start, stop), or (None, n, 0) for n tokens without words."""
        return (self.words, self.start, self.start + len(self)) if self.words is not None else (None, len(self), 0)


@dataclasses.dataclass
class _WordIds:
    word_ids: list[int | None]


def _word_ids_from_recipe(recipe: list[tuple[Any, int, int]]) -> list[int | None]:
    word_ids: list[int | None] = []
    for source, start, stop in recipe:
        word_ids.extend([None] * start if source is None else source.word_ids[start:stop])
    return word_ids


class _SingleWordRecipes(Sequence):
    """The word-id recipes of a batch of single sequences (see `PreTrainedTokenizerBase._encode_singles`).

    Each recipe is made when `BatchEncoding.word_ids` first asks for it, so a call that never asks makes no
    Python object per sequence. `words[i]` is sequence i's word source (see `Encoded.words`), `starts[i]`
    where its kept tokens begin (None: all at 0), `kept[i]` how many it kept, `missing[i]` its padding.
    """

    def __init__(
        self, words: Sequence[Any], starts: list[int] | None, kept: list[int], n_bos: int, missing: list[int] | None,
        side: str,
    ) -> None:
        self._words, self._starts, self._kept, self._n_bos = words, starts, kept, n_bos
        self._missing, self._side = missing, side
        self._made: dict[int, list[tuple[Any, int, int]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, index: int) -> list[tuple[Any, int, int]]:
        index = range(len(self._kept))[index]  # negative indices and IndexError, as a list has them
        if index not in self._made:
            source, start, kept = self._words[index], self._starts[index] if self._starts else 0, self._kept[index]
            recipe = [(None, self._n_bos, 0)] if self._n_bos else []
            recipe.append((None, kept, 0) if source is None else (source, start, start + kept))
            missing = self._missing[index] if self._missing else 0
            if missing:
                recipe.insert(0 if self._side == "left" else len(recipe), (None, missing, 0))
            self._made[index] = recipe
        return self._made[index]


def _check_rectangular(lengths: set[int], name: str) -> None:
    if len(lengths) > 1:
        raise ValueError(
            f"cannot make a tensor of {name!r}: the sequences have different lengths {sorted(lengths)}; "
            "pass padding=True (and truncation=True) to batch them"
        )


def to_tensor(values: Any, return_tensors: str, name: str = "input_ids") -> Any:
    """Rectangular nested lists → a tensor of `return_tensors` ('np', 'pt', 'tf', 'jax'), imported lazily.

    Raises:
        ValueError: `return_tensors` is not one of the four, or the rows have different lengths.
        ImportError: the framework is not installed (the message names the pip extra).
    """
    if return_tensors not in TENSOR_BACKENDS:
        raise ValueError(f"return_tensors must be one of {sorted(TENSOR_BACKENDS)} or None; got {return_tensors!r}")
    _check_rectangular({len(row) for row in values} if values and isinstance(values[0], (list, tuple)) else set(), name)
    array = np.asarray(values, dtype=np.int64)
    if name == "offset_mapping" and array.ndim == 2:  # a batch of empty sequences: (B, 0) -> (B, 0, 2)
        array = array.reshape(array.shape[0], 0, 2)
    return array_to_tensor(array, return_tensors)


def array_to_tensor(array: np.ndarray, return_tensors: str) -> Any:
    """An int64 NumPy array → a tensor of `return_tensors` ('np', 'pt', 'tf', 'jax'), importing only that framework.

    Raises:
        ImportError: the framework is not installed (the message names the pip extra).
    """
    module, extra, framework = TENSOR_BACKENDS[return_tensors]
    try:
        lib = importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"return_tensors={return_tensors!r} needs {framework}, which is not installed: "
            f"pip install 'twinformers[{extra}]'"
        ) from err
    if return_tensors == "np":
        return array
    if return_tensors == "pt":
        return lib.from_numpy(array)
    # TensorFlow and JAX models take int32 ids (as Hugging Face returns them).
    return lib.asarray(array.astype(np.int32)) if return_tensors == "jax" else lib.constant(array.astype(np.int32))


class BatchEncoding(dict):
    """What a tokenizer call returns: a dict (`input_ids`, `attention_mask`, …) with attribute access.

    Values are Python lists, or tensors when `return_tensors` was given (then always with a batch axis).
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        tensor_type: str | None = None,
        word_ids: list[list[tuple[Any, int, int]]] | None = None,
    ) -> None:
        super().__init__(data or {})
        self._word_ids = word_ids  # per sequence, a recipe (see Encoded.word_span), materialized on demand
        if tensor_type is not None:
            self.convert_to_tensors(tensor_type)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getstate__(self) -> dict[str, Any]:
        recipes = None
        if self._word_ids is not None:  # materialized: backend encodings do not travel
            recipes = []
            for index in range(len(self._word_ids)):
                word_ids = self.word_ids(index)
                recipes.append([(_WordIds(word_ids), 0, len(word_ids))])
        return {"data": dict(self), "word_ids": recipes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.update(state["data"])
        self._word_ids = state["word_ids"]

    def convert_to_tensors(self, tensor_type: str) -> BatchEncoding:
        """Convert every value in place to a tensor of `tensor_type` ('np', 'pt', 'tf', 'jax')."""
        for key, value in list(self.items()):
            self[key] = to_tensor(value, tensor_type, name=key)
        return self

    def to(self, device: Any) -> BatchEncoding:
        """Move PyTorch tensors to `device` (in place); other values are left alone."""
        for key, value in self.items():
            if hasattr(value, "to") and hasattr(value, "device"):
                self[key] = value.to(device)
        return self

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Word index of every token of sequence `batch_index` (None for special and padding tokens).

        Raises:
            ValueError: the encoding came from the pure-Python tokenizer, which does not track words.
        """
        if self._word_ids is None:
            raise ValueError("word_ids() is only available for encodings made by GPT2TokenizerFast")
        return _word_ids_from_recipe(self._word_ids[batch_index])


# --------------------------------------------------------------------------------------------- helpers
def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file raises an error that names it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not valid UTF-8 JSON: {err}") from err


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON the way Hugging Face writes tokenizer configs (indent 2, sorted keys), atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _as_id_list(token_ids: Any, what: str = "token_ids") -> list[int]:
    if hasattr(token_ids, "tolist"):  # NumPy arrays and every framework's tensors
        token_ids = token_ids.tolist()
    if isinstance(token_ids, (int, np.integer)) and not isinstance(token_ids, bool):
        return [int(token_ids)]
    if isinstance(token_ids, (list, tuple)):
        ids = []
        for i in token_ids:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"{what} must be a sequence of ints; found {type(i).__name__} {i!r}")
            ids.append(int(i))
        return ids
    raise TypeError(f"{what} must be an int or a sequence of ints; got {type(token_ids).__name__}")


def _check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {list(choices)}; got {value!r}")
    return value


def _check_side(value: Any, what: str) -> str:
    return _check_choice(value, SIDES, what)


def _check_int(value: Any, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum} or None; got {value!r}")
    return int(value)


def _special_token_property(attr: str) -> property:
    def getter(self: PreTrainedTokenizerBase) -> str | None:
        return self._special_tokens.get(attr)

    def setter(self: PreTrainedTokenizerBase, value: Any) -> None:
        self._set_special_token(attr, value)

    return property(getter, setter, doc=f"The {attr.replace('_', ' ')} (a string), or None.")


def _special_token_id_property(attr: str) -> property:
    def getter(self: PreTrainedTokenizerBase) -> int | None:
        token = self._special_tokens.get(attr)
        return None if token is None else self._token_to_id(token)

    def setter(self: PreTrainedTokenizerBase, value: int | None) -> None:
        self._set_special_token(attr, None if value is None else self.convert_ids_to_tokens(value))

    return property(getter, setter, doc=f"Id of the {attr.replace('_', ' ')}, or None.")


# --------------------------------------------------------------------------------------------- the base class
class PreTrainedTokenizerBase:
    """The shared half of every twinformers tokenizer.

    Subclasses turn text into ids (`_encode_texts`), ids into text (`_decode_ids`), and own the vocabulary
    (`_token_to_id`, `_id_to_token`, `get_vocab`, `vocab_size`, added tokens, `save_vocabulary`). This
    class does everything else, once.
    """

    model_input_names: list[str] = ["input_ids", "attention_mask"]
    vocab_files_names: dict[str, str] = {}
    is_fast: bool = False

    bos_token = _special_token_property("bos_token")
    eos_token = _special_token_property("eos_token")
    unk_token = _special_token_property("unk_token")
    sep_token = _special_token_property("sep_token")
    pad_token = _special_token_property("pad_token")
    cls_token = _special_token_property("cls_token")
    mask_token = _special_token_property("mask_token")
    bos_token_id = _special_token_id_property("bos_token")
    eos_token_id = _special_token_id_property("eos_token")
    unk_token_id = _special_token_id_property("unk_token")
    sep_token_id = _special_token_id_property("sep_token")
    pad_token_id = _special_token_id_property("pad_token")
    cls_token_id = _special_token_id_property("cls_token")
    mask_token_id = _special_token_id_property("mask_token")

    def __init__(
        self,
        *,
        bos_token: str | AddedToken | None = None,
        eos_token: str | AddedToken | None = None,
        unk_token: str | AddedToken | None = None,
        sep_token: str | AddedToken | None = None,
        pad_token: str | AddedToken | None = None,
        cls_token: str | AddedToken | None = None,
        mask_token: str | AddedToken | None = None,
        additional_special_tokens: Sequence[str | AddedToken] | None = None,
        added_tokens_decoder: Mapping[int | str, AddedToken | Mapping[str, Any]] | None = None,
        model_max_length: int | None = None,
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
        add_prefix_space: bool = False,
        add_bos_token: bool = False,
        name_or_path: str = "",
    ) -> None:
        # Subclasses have loaded their vocabulary before calling this.
        self._special_tokens: dict[str, str] = {}
        self._additional_special_tokens: list[str] = []
        self._valid_ids: frozenset[int] | None = None
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.add_prefix_space = bool(add_prefix_space)
        self.add_bos_token = bool(add_bos_token)
        self.name_or_path = name_or_path

        # Tokens the files list with their ids come first, so that their ids and flags are kept.
        if added_tokens_decoder:
            decoder = {int(i): as_added_token(t, special=False, what=f"added token {i}")
                       for i, t in added_tokens_decoder.items()}
            for token_id in sorted(decoder):
                token = decoder[token_id]
                if self.added_tokens_encoder.get(token.content) != token_id:  # else the backend already has it
                    self._add_tokens_impl([token])
                got = self._token_to_id(token.content)
                if got != token_id:
                    raise ValueError(
                        f"added token {token.content!r} is listed with id {token_id}, but this vocabulary gives it "
                        f"id {got}; the tokenizer files are inconsistent"
                    )
        specials = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token, "sep_token": sep_token,
                    "pad_token": pad_token, "cls_token": cls_token, "mask_token": mask_token}
        to_add = {attr: as_added_token(v, special=True, what=attr) for attr, v in specials.items() if v is not None}
        extra = [as_added_token(v, special=True, what="additional_special_tokens entry")
                 for v in (additional_special_tokens or [])]
        known = self.added_tokens_encoder
        new = [t for t in (*to_add.values(), *extra) if t.content not in known]
        self._add_tokens_impl(new)
        self._mark_special([t.content for t in (*to_add.values(), *extra)])
        self._special_tokens.update({attr: t.content for attr, t in to_add.items()})
        self._additional_special_tokens = list(dict.fromkeys(t.content for t in extra))

    # ----------------------------------------------------------------------------------- subclass interface
    def _encode_texts(
        self, texts: Sequence[Any], is_split_into_words: bool, with_offsets: bool, add_prefix_space: bool | None = None
    ) -> list[Encoded]:
        """Ids (and offsets / word ids) of each text, without special tokens, truncation or padding.

        `add_prefix_space` None means the tokenizer's own setting.
        """
        raise NotImplementedError

    def _encode_ids(
        self, texts: Sequence[Any], is_split_into_words: bool, add_prefix_space: bool | None = None
    ) -> tuple[list[list[int]], Sequence[Any]]:
        """Ids of each text without offsets, and the `Encoded.words` of each: what `__call__` needs most often.

        The id lists are the caller's (never shared with a cache). By default they come from `_encode_texts`;
        a subclass overrides this when it can skip the per-sequence `Encoded`.
        """
        encoded = self._encode_texts(texts, is_split_into_words, False, add_prefix_space)
        return [e.ids for e in encoded], [e.words for e in encoded]

    def _decode_ids(self, ids: list[int]) -> str:
        """Text of valid ids (special tokens already filtered out when asked)."""
        raise NotImplementedError

    def _token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def _id_to_token(self, index: int) -> str | None:
        raise NotImplementedError

    def _add_tokens_impl(self, tokens: list[AddedToken]) -> None:
        """Register tokens (new ones get the next free id; known ones keep theirs and take the new flags)."""
        raise NotImplementedError

    def _mark_special(self, contents: list[str]) -> None:
        """Make already-added tokens special (they are skipped by `skip_special_tokens`)."""
        decoder = self.added_tokens_decoder
        updates = [dataclasses.replace(t, special=True) for t in decoder.values()
                   if t.content in contents and not t.special]
        if updates:
            self._add_tokens_impl(updates)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        """Every added token (special tokens included) by id."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary, without added tokens."""
        raise NotImplementedError

    def get_vocab(self) -> dict[str, int]:
        """Token → id for the whole vocabulary, added tokens included."""
        raise NotImplementedError

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write the vocabulary files (vocab.json, merges.txt) and return their paths."""
        raise NotImplementedError

    def _bpe_vocab_and_merges(self) -> tuple[dict[str, int], list[str]]:
        """The BPE model: base vocabulary (no added tokens) and merges as "left right" strings in rank order."""
        raise NotImplementedError

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def _extra_files(self, save_directory: str, filename_prefix: str | None) -> tuple[str, ...]:
        return ()

    def _check_split_into_words(self, add_prefix_space: bool | None) -> None:
        pass

    # ----------------------------------------------------------------------------------- vocabulary
    def __len__(self) -> int:
        return len(self.get_vocab())

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        """Every added token's content → id."""
        return {t.content: i for i, t in sorted(self.added_tokens_decoder.items())}

    def _invalidate(self) -> None:
        self._valid_ids = None

    def _check_ids(self, ids: list[int]) -> None:
        if self._valid_ids is None:
            self._valid_ids = frozenset(self.get_vocab().values())
        if not self._valid_ids.issuperset(ids):
            bad = sorted(set(ids) - self._valid_ids)
            raise ValueError(f"token ids {bad[:10]} are not in the vocabulary (ids 0..{len(self) - 1})")

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """Id of each token; a token not in the vocabulary maps to `unk_token_id` (None without an unk token)."""
        if isinstance(tokens, str):
            token_id = self._token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Token string of each id (byte-level symbols, e.g. "Ġworld").

        Raises:
            ValueError: an id is not in the vocabulary.
        """
        single = isinstance(ids, (int, np.integer))
        id_list = _as_id_list(ids, "ids")
        self._check_ids(id_list)
        if skip_special_tokens:
            skip = self._skip_ids()
            id_list = [i for i in id_list if i not in skip]
        tokens = [self._id_to_token(i) for i in id_list]
        return tokens[0] if single else tokens

    # ----------------------------------------------------------------------------------- special tokens
    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._additional_special_tokens)

    @additional_special_tokens.setter
    def additional_special_tokens(self, values: Sequence[str]) -> None:
        for value in values:
            self._require_in_vocab(str(value), "additional_special_tokens")
        self._additional_special_tokens = [str(v) for v in values]

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return [self._token_to_id(t) for t in self._additional_special_tokens]

    def _require_in_vocab(self, content: str, attr: str) -> None:
        if self._token_to_id(content) is None:
            raise ValueError(
                f"{attr} {content!r} is not in the vocabulary of this tokenizer; add it with "
                f"tokenizer.add_special_tokens({{{attr!r}: {content!r}}})"
            )

    def _set_special_token(self, attr: str, value: Any) -> None:
        if value is None:
            self._special_tokens.pop(attr, None)
            return
        content = as_added_token(value, special=True, what=attr).content
        self._require_in_vocab(content, attr)
        self._special_tokens[attr] = content

    @property
    def special_tokens_map(self) -> dict[str, str | list[str]]:
        """Special-token attribute → token, as written to special_tokens_map.json."""
        result: dict[str, str | list[str]] = {a: self._special_tokens[a] for a in SPECIAL_TOKENS_ATTRIBUTES
                                              if a in self._special_tokens}
        if self._additional_special_tokens:
            result["additional_special_tokens"] = list(self._additional_special_tokens)
        return result

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [self._special_tokens[a] for a in SPECIAL_TOKENS_ATTRIBUTES if a in self._special_tokens]
        return list(dict.fromkeys(tokens + self._additional_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_to_id(t) for t in self.all_special_tokens]

    def _skip_ids(self) -> set[int]:
        return set(self.all_special_ids) | {i for i, t in self.added_tokens_decoder.items() if t.special}

    def add_tokens(
        self, new_tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False
    ) -> int:
        """Add tokens to the vocabulary; each new one gets the next free id.

        Args:
            new_tokens: strings or `AddedToken`s. A plain string becomes `AddedToken(text,
                normalized=not special_tokens, special=special_tokens)`.
            special_tokens: mark the tokens special (skipped by `decode(..., skip_special_tokens=True)`).

        Returns:
            How many tokens got a new id (`len(tokenizer)` grows by that much).
        """
        if isinstance(new_tokens, (str, AddedToken)) or hasattr(new_tokens, "content"):
            new_tokens = [new_tokens]
        tokens = [as_added_token(t, special=special_tokens, what="new token") for t in new_tokens]
        before = len(self)
        self._add_tokens_impl(tokens)
        self._invalidate()
        return len(self) - before

    def add_special_tokens(
        self, special_tokens_dict: Mapping[str, Any], replace_additional_special_tokens: bool = True
    ) -> int:
        """Add special tokens and bind them to attributes, e.g. `{"cls_token": "[CLS]"}`.

        Args:
            special_tokens_dict: keys among `bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`,
                `cls_token`, `mask_token`, `additional_special_tokens` (a list).
            replace_additional_special_tokens: replace (True) or extend (False) `additional_special_tokens`.

        Returns:
            How many tokens got a new id.
        """
        if not isinstance(special_tokens_dict, Mapping):
            raise TypeError("special_tokens_dict must be a dict such as {'pad_token': '<pad>'}")
        bound: dict[str, AddedToken] = {}
        extra: list[AddedToken] = []
        for key, value in special_tokens_dict.items():
            if key == "additional_special_tokens":
                if isinstance(value, (str, AddedToken)) or not isinstance(value, Sequence):
                    raise TypeError("additional_special_tokens must be a list of tokens")
                extra = [as_added_token(v, special=True, what=key) for v in value]
            elif key in SPECIAL_TOKENS_ATTRIBUTES:
                bound[key] = as_added_token(value, special=True, what=key)
            else:
                raise ValueError(
                    f"{key!r} is not a special-token attribute; use one of "
                    f"{[*SPECIAL_TOKENS_ATTRIBUTES, 'additional_special_tokens']}"
                )
        before = len(self)
        tokens = [*bound.values(), *extra]
        known = self.added_tokens_encoder
        self._add_tokens_impl([t for t in tokens if t.content not in known])
        self._mark_special([t.content for t in tokens])
        self._invalidate()
        for key, token in bound.items():
            self._special_tokens[key] = token.content
        contents = [t.content for t in extra]
        if replace_additional_special_tokens:
            self._additional_special_tokens = list(dict.fromkeys(contents))
        else:
            self._additional_special_tokens = list(dict.fromkeys(self._additional_special_tokens + contents))
        return len(self) - before

    # ----------------------------------------------------------------------------------- settings
    padding_side = StoredAs(_check_side, "'right' (default) or 'left'.")
    truncation_side = StoredAs(_check_side, "'right' (default) or 'left'.")

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens `add_special_tokens=True` inserts (GPT-2: a BOS per sequence if `add_bos_token`)."""
        return (2 if pair else 1) if self.add_bos_token else 0

    # ----------------------------------------------------------------------------------- encoding
    @staticmethod
    def _is_batched(text: Any, what: str, is_split_into_words: bool) -> bool:
        def is_words(x: Any) -> bool:
            return isinstance(x, (list, tuple)) and all(isinstance(w, str) for w in x)

        if not is_split_into_words:
            if isinstance(text, str):
                return False
            if is_words(text):
                return True
            raise TypeError(
                f"{what} must be a str (one example) or a list of str (a batch); got {type(text).__name__}"
                + (" of lists: pass is_split_into_words=True for pre-split words" if isinstance(text, (list, tuple))
                   else "")
            )
        if is_words(text):
            return False
        if isinstance(text, (list, tuple)) and all(is_words(x) for x in text):
            return True
        raise TypeError(
            f"with is_split_into_words=True, {what} must be a list of str (one example) or a list of lists of "
            f"str (a batch); got {type(text).__name__}"
        )

    def _resolve_strategies(
        self, padding: Any, truncation: Any, max_length: int | None, pad_to_multiple_of: int | None
    ) -> tuple[str, str, int | None]:
        if padding is True:
            padding = "longest"
        elif padding is False or padding is None:
            padding = "do_not_pad"
        _check_choice(padding, PADDING_STRATEGIES, "padding")
        max_length = _check_int(max_length, "max_length", 0)
        _check_int(pad_to_multiple_of, "pad_to_multiple_of", 1)
        if truncation is None:
            # Hugging Face: a max_length without padding means "truncate to it".
            truncation = "longest_first" if max_length is not None and padding == "do_not_pad" else False
        if truncation is True:
            truncation = "longest_first"
        elif truncation is False:
            truncation = "do_not_truncate"
        _check_choice(truncation, TRUNCATION_STRATEGIES, "truncation")
        if max_length is None:
            limit = None if self.model_max_length >= VERY_LARGE_INTEGER else self.model_max_length
            if padding == "max_length":
                if limit is None:
                    raise ValueError(
                        "padding='max_length' needs max_length: this tokenizer has no model_max_length"
                    )
                max_length = limit
            if truncation != "do_not_truncate":
                max_length = limit
        if padding != "do_not_pad" and self.pad_token is None:
            raise ValueError(
                "Asking to pad but the tokenizer does not have a padding token. Set one with "
                "`tokenizer.pad_token = tokenizer.eos_token`, or add a new one with "
                "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})`."
            )
        if (padding == "max_length" and truncation != "do_not_truncate" and pad_to_multiple_of
                and max_length is not None and max_length % pad_to_multiple_of):
            raise ValueError(
                f"truncation and padding to max_length={max_length} are both on, but max_length is not a "
                f"multiple of pad_to_multiple_of={pad_to_multiple_of}"
            )
        return padding, truncation, max_length

    def _truncate(
        self, first: Encoded, second: Encoded | None, budget: int, strategy: str
    ) -> tuple[Encoded, Encoded | None]:
        n0, n1 = len(first), (len(second) if second is not None else 0)
        excess = n0 + n1 - budget
        if excess <= 0 or strategy == "do_not_truncate":
            return first, second
        if strategy == "longest_first":
            # One token at a time from the longer sequence (the second one on ties), as Hugging Face does.
            for _ in range(excess):
                if n0 > n1:
                    n0 -= 1
                else:
                    n1 -= 1
        elif strategy == "only_first":
            if n0 < excess:
                raise ValueError(
                    f"truncation='only_first' cannot fit max_length: the first sequence has {n0} tokens but "
                    f"{excess} must go; use truncation='longest_first'"
                )
            n0 -= excess
        else:  # only_second
            if second is None:
                raise ValueError("truncation='only_second' needs a text_pair")
            if n1 < excess:
                raise ValueError(
                    f"truncation='only_second' cannot fit max_length: the second sequence has {n1} tokens but "
                    f"{excess} must go; use truncation='longest_first'"
                )
            n1 -= excess

        def keep(enc: Encoded, n: int) -> Encoded:
            return enc.slice(0, n) if self.truncation_side == "right" else enc.slice(len(enc) - n, len(enc))

        return keep(first, n0), (None if second is None else keep(second, n1))

    def _build_example(
        self, first: Encoded, second: Encoded | None, add_special_tokens: bool, truncation: str, max_length: int | None,
        keys: set[str],
    ) -> dict[str, list]:
        if max_length is not None and truncation != "do_not_truncate":
            n_special = self.num_special_tokens_to_add(pair=second is not None) if add_special_tokens else 0
            if max_length < n_special:
                raise ValueError(f"max_length={max_length} leaves no room beside the {n_special} special tokens")
            first, second = self._truncate(first, second, max_length - n_special, truncation)
        bos = self.bos_token_id if add_special_tokens and self.add_bos_token else None
        if add_special_tokens and self.add_bos_token and bos is None:
            raise ValueError("add_bos_token=True but the tokenizer has no bos_token")
        parts = [first] if second is None else [first, second]
        if bos is None and len(parts) == 1:  # the common case, kept cheap
            ids = first.ids
        else:
            ids = [i for enc in parts for i in ([bos, *enc.ids] if bos is not None else enc.ids)]
        example: dict[str, list] = {"input_ids": ids}
        n_bos = int(bos is not None)
        if "attention_mask" in keys:
            example["attention_mask"] = [1] * len(ids)
        if "token_type_ids" in keys:
            example["token_type_ids"] = [t for t, enc in enumerate(parts) for _ in range(n_bos + len(enc))]
        if "special_tokens_mask" in keys:
            example["special_tokens_mask"] = [m for enc in parts for m in [1] * n_bos + [0] * len(enc)]
        if "offset_mapping" in keys:
            example["offset_mapping"] = [o for enc in parts for o in [(0, 0)] * n_bos + (enc.offsets or [])]
        if "word_ids" in keys:
            recipe = [first.word_span()] if len(parts) == 1 and not n_bos else []
            for enc in parts if not recipe else ():
                recipe.extend([(None, n_bos, 0), enc.word_span()] if n_bos else [enc.word_span()])
            example["word_ids"] = recipe
        return example

    def _encode_singles(
        self, rows: list[list[int]], words: Sequence[Any], keys: list[str], add_special_tokens: bool, truncation: str,
        max_length: int | None, padding: str, pad_to_multiple_of: int | None, side: str, return_tensors: str | None,
    ) -> tuple[dict[str, Any], _SingleWordRecipes]:
        """`_build_example` and `_pad_batch` for a batch without pairs or offsets, one column at a time.

        The same lists as those two make, with no dict, `Encoded` or recipe per sequence: on a batch of short
        lines that bookkeeping (and the garbage collections its objects trigger) cost more than the BPE itself.

        Returns:
            The columns named by `keys` (lists, or tensors of `return_tensors`), and the batch's word-id recipes
            (made on demand).
        """
        n_bos = int(add_special_tokens and self.add_bos_token)
        starts = None
        if rows and max_length is not None and truncation != "do_not_truncate":
            n_special = self.num_special_tokens_to_add() if add_special_tokens else 0
            if max_length < n_special:
                raise ValueError(f"max_length={max_length} leaves no room beside the {n_special} special tokens")
            # One sequence: longest_first and only_first both keep its first (or last) `budget` tokens.
            budget = max_length - n_special
            if max(map(len, rows)) > budget:
                if self.truncation_side == "right":
                    rows = [row[:budget] if len(row) > budget else row for row in rows]
                else:
                    starts = [max(len(row) - budget, 0) for row in rows]
                    rows = [row[start:] if start else row for row, start in zip(rows, starts)]
        kept = list(map(len, rows))
        lengths = kept
        if rows and n_bos:
            bos = self.bos_token_id
            if bos is None:
                raise ValueError("add_bos_token=True but the tokenizer has no bos_token")
            rows = [[bos, *row] for row in rows]
            lengths = [n + 1 for n in kept]
        missing = None
        if padding != "do_not_pad":
            target = max_length if padding == "max_length" else max(lengths, default=0)
            if pad_to_multiple_of and target % pad_to_multiple_of:
                target += pad_to_multiple_of - target % pad_to_multiple_of
            missing = [max(target - n, 0) for n in lengths]
        recipes = _SingleWordRecipes(words, starts, kept, n_bos, missing, side)
        if return_tensors is not None and rows:
            return self._single_arrays(rows, lengths, missing, n_bos, keys, side, return_tensors), recipes
        columns = {"input_ids": rows}
        if "attention_mask" in keys:
            columns["attention_mask"] = [[1] * n for n in lengths]
        if "token_type_ids" in keys:
            columns["token_type_ids"] = [[0] * n for n in lengths]
        if "special_tokens_mask" in keys:
            columns["special_tokens_mask"] = [[1] * n_bos + [0] * n for n in kept]
        if missing is not None and any(missing):
            fill = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0, "special_tokens_mask": 1}
            for key in list(columns):
                pad = [fill[key]]
                columns[key] = ([row + pad * n if n else row for row, n in zip(columns[key], missing)]
                                if side == "right" else
                                [pad * n + row if n else row for row, n in zip(columns[key], missing)])
        if return_tensors is not None:  # an empty batch
            return {key: to_tensor(columns[key], return_tensors, name=key) for key in keys}, recipes
        return {key: columns[key] for key in keys}, recipes

    def _single_arrays(
        self, rows: list[list[int]], lengths: list[int], missing: list[int] | None, n_bos: int, keys: list[str],
        side: str, return_tensors: str,
    ) -> dict[str, Any]:
        """The columns of `_encode_singles` as (B, T) tensors, padded in NumPy rather than as Python lists."""
        padded = lengths if missing is None else [n + m for n, m in zip(lengths, missing)]
        _check_rectangular(set(padded), "input_ids")
        width = padded[0]
        sizes = np.asarray(lengths, dtype=np.int64)
        positions = np.arange(width)
        # (B, T): True on tokens, False on padding. Each row's tokens are contiguous, so assigning the
        # concatenated rows through this mask (row-major order) puts every token in its place.
        valid = positions < sizes[:, None] if side == "right" else positions >= (width - sizes)[:, None]
        input_ids = np.full(valid.shape, 0 if missing is None else self.pad_token_id, dtype=np.int64)
        input_ids[valid] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(sizes.sum()))
        columns = {"input_ids": input_ids}
        if "attention_mask" in keys:
            columns["attention_mask"] = valid.astype(np.int64)
        if "token_type_ids" in keys:
            columns["token_type_ids"] = np.zeros(valid.shape, dtype=np.int64)
        if "special_tokens_mask" in keys:
            special = (~valid).astype(np.int64)
            if n_bos:  # the first token of every row
                special[np.arange(len(rows)), 0 if side == "right" else width - sizes] = 1
            columns["special_tokens_mask"] = special
        return {key: array_to_tensor(columns[key], return_tensors) for key in keys}

    def _pad_example(self, example: dict[str, list], length: int, side: str) -> None:
        missing = length - len(example["input_ids"])
        if missing <= 0:
            return
        fill = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0, "special_tokens_mask": 1,
                "offset_mapping": (0, 0)}
        for key, values in example.items():
            if key == "word_ids":  # a recipe: one entry for all the padding
                pad = [(None, missing, 0)]
            elif key in fill:  # other keys (labels, …) are the caller's business
                pad = [fill[key]] * missing
            else:
                continue
            example[key] = values + pad if side == "right" else pad + values

    def _pad_batch(
        self, examples: list[dict[str, list]], padding: str, max_length: int | None, pad_to_multiple_of: int | None,
        side: str,
    ) -> None:
        if padding == "do_not_pad":
            return
        if padding == "max_length":
            target = max_length
        else:
            target = max((len(e["input_ids"]) for e in examples), default=0)
        if pad_to_multiple_of and target % pad_to_multiple_of:
            target += pad_to_multiple_of - target % pad_to_multiple_of
        for example in examples:
            self._pad_example(example, target, side)

    @staticmethod
    def _wrap(
        examples: list[dict[str, list]], batched: bool, return_tensors: str | None, keys: list[str], with_words: bool
    ) -> BatchEncoding:
        data = {k: [e[k] for e in examples] for k in keys}
        word_ids = [e["word_ids"] for e in examples] if with_words else None
        if not batched and return_tensors is None:
            data = {k: v[0] for k, v in data.items()}
        return BatchEncoding(data, tensor_type=return_tensors, word_ids=word_ids)

    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        add_prefix_space: bool | None = None,
    ) -> BatchEncoding:
        """Tokenize one text (or text pair) or a batch.

        Args:
            text: a string, a list of strings (a batch), or with `is_split_into_words=True` a list of words
                (one example) or a list of lists of words (a batch).
            text_pair: second sequences, shaped like `text` (e.g. question / context).
            add_special_tokens: insert the tokenizer's special tokens (GPT-2: BOS only if `add_bos_token`).
            padding: True or 'longest' (to the longest in the batch), 'max_length' (to `max_length`), or
                False / 'do_not_pad'. Needs a pad token.
            truncation: True or 'longest_first', 'only_first', 'only_second', False / 'do_not_truncate'.
                None truncates only when `max_length` is given without padding (Hugging Face's rule).
            max_length: length limit for truncation / padding, special tokens included; defaults to
                `model_max_length` when truncation or max_length padding is on.
            is_split_into_words: the input is pre-split into words; a space is put before each word (so every
                word is encoded as if in the middle of a sentence). GPT2TokenizerFast needs `add_prefix_space=True`.
            pad_to_multiple_of: round the padded length up to a multiple of this.
            padding_side: 'right' or 'left' for this call (default: the tokenizer's `padding_side`).
            return_tensors: 'np', 'pt', 'tf' or 'jax' for tensors with a batch axis (importing only that
                framework); None for Python lists.
            return_token_type_ids: add `token_type_ids` (0 for the first sequence, 1 for the pair).
            return_attention_mask: add `attention_mask` (default True).
            return_special_tokens_mask: add `special_tokens_mask` (1 for inserted special tokens and padding).
            return_offsets_mapping: add `offset_mapping`, (start, end) character spans (GPT2TokenizerFast only).
            add_prefix_space: override the tokenizer's `add_prefix_space` for this call.

        Returns:
            A `BatchEncoding` with `input_ids` and the requested extras; (T,) lists for a single example,
            (B, T) for a batch.

        Raises:
            TypeError: `text` / `text_pair` have the wrong type or shape.
            ValueError: invalid `padding`, `truncation`, `padding_side` or lengths; padding without a pad token.
            ImportError: the framework named by `return_tensors` is not installed.
        """
        batched = self._is_batched(text, "text", is_split_into_words)
        if text_pair is not None:
            pair_batched = self._is_batched(text_pair, "text_pair", is_split_into_words)
            if pair_batched != batched or (batched and len(text_pair) != len(text)):
                raise ValueError("text_pair must be shaped like text (both single examples or batches of equal size)")
        if return_tensors is not None and return_tensors not in TENSOR_BACKENDS:
            raise ValueError(f"return_tensors must be one of {sorted(TENSOR_BACKENDS)} or None; got {return_tensors!r}")
        side = _check_choice(self.padding_side if padding_side is None else padding_side, SIDES, "padding_side")
        padding, truncation, max_length = self._resolve_strategies(padding, truncation, max_length, pad_to_multiple_of)
        if return_offsets_mapping and not self.is_fast:
            raise NotImplementedError(
                "return_offsets_mapping is only available with GPT2TokenizerFast "
                "(use AutoTokenizer.from_pretrained(path) or GPT2TokenizerFast)"
            )
        if is_split_into_words:
            self._check_split_into_words(add_prefix_space)
        texts = list(text) if batched else [text]
        keys = ["input_ids"]
        if return_token_type_ids or (return_token_type_ids is None and "token_type_ids" in self.model_input_names):
            keys.append("token_type_ids")
        if return_attention_mask or (return_attention_mask is None and "attention_mask" in self.model_input_names):
            keys.append("attention_mask")
        if return_special_tokens_mask:
            keys.append("special_tokens_mask")
        if text_pair is None and not return_offsets_mapping and truncation != "only_second":
            # The common call: no per-sequence objects (only_second needs a pair, and `_truncate` says so).
            rows, words = self._encode_ids(texts, is_split_into_words, add_prefix_space)
            data, recipes = self._encode_singles(rows, words, keys, add_special_tokens, truncation, max_length,
                                                 padding, pad_to_multiple_of, side, return_tensors)
            if not batched and return_tensors is None:
                data = {k: v[0] for k, v in data.items()}
            return BatchEncoding(data, word_ids=recipes if self.is_fast else None)
        pairs = (list(text_pair) if batched else [text_pair]) if text_pair is not None else None
        firsts = self._encode_texts(texts, is_split_into_words, return_offsets_mapping, add_prefix_space)
        seconds = [None] * len(texts)
        if pairs is not None:
            seconds = self._encode_texts(pairs, is_split_into_words, return_offsets_mapping, add_prefix_space)
        if return_offsets_mapping:
            keys.append("offset_mapping")
        wanted = set(keys) | ({"word_ids"} if self.is_fast else set())
        examples = [
            self._build_example(a, b, add_special_tokens, truncation, max_length, wanted)
            for a, b in zip(firsts, seconds)
        ]
        self._pad_batch(examples, padding, max_length, pad_to_multiple_of, side)
        return self._wrap(examples, batched, return_tensors, keys, with_words=self.is_fast)

    def encode(
        self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, **kwargs: Any
    ) -> Any:
        """Ids of one text (or text pair): `tokenizer(text, ...)["input_ids"]` for a single example.

        Takes the keyword arguments of `__call__` (`add_special_tokens`, `padding`, `truncation`, `max_length`,
        `is_split_into_words`, `return_tensors`, ...).

        Raises:
            ValueError: `text` is a batch (use `tokenizer(batch)`).
        """
        if self._is_batched(text, "text", kwargs.get("is_split_into_words", False)):
            raise ValueError("encode() takes one example; call the tokenizer itself for a batch")
        return self(text, text_pair, **{**kwargs, "return_attention_mask": False})["input_ids"]

    def tokenize(
        self, text: str | Sequence[str], pair: str | Sequence[str] | None = None, add_special_tokens: bool = False,
        is_split_into_words: bool = False, add_prefix_space: bool | None = None,
    ) -> list[str]:
        """Token strings of one text, e.g. `["Hello", "Ġworld"]`."""
        ids = self.encode(
            text, pair, add_special_tokens=add_special_tokens, is_split_into_words=is_split_into_words,
            add_prefix_space=add_prefix_space,
        )
        return self.convert_ids_to_tokens(ids)

    def pad(
        self,
        encoded_inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Pad already-encoded examples (a dict of lists, or a list of dicts, e.g. from a data collator).

        Pads `input_ids`, `attention_mask` (created when missing unless `return_attention_mask=False`),
        `token_type_ids`, `special_tokens_mask` and `offset_mapping`; other keys must already be rectangular.
        """
        if isinstance(encoded_inputs, Mapping):
            data = dict(encoded_inputs)
        elif isinstance(encoded_inputs, Sequence) and encoded_inputs and isinstance(encoded_inputs[0], Mapping):
            data = {k: [e[k] for e in encoded_inputs] for k in encoded_inputs[0]}
        else:
            raise TypeError("encoded_inputs must be a dict of lists or a list of dicts with 'input_ids'")
        if "input_ids" not in data:
            raise ValueError(f"encoded_inputs has no 'input_ids' (keys: {sorted(data)})")
        data = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in data.items()}
        ids = data["input_ids"]
        batched = bool(ids) and isinstance(ids[0], (list, tuple))
        if not batched:
            data = {k: [v] for k, v in data.items()}
        if return_attention_mask is not False and "attention_mask" not in data:
            data["attention_mask"] = [[1] * len(row) for row in data["input_ids"]]
        if return_attention_mask is False:
            data.pop("attention_mask", None)
        side = _check_choice(self.padding_side if padding_side is None else padding_side, SIDES, "padding_side")
        padding, _, max_length = self._resolve_strategies(padding, False, max_length, pad_to_multiple_of)
        examples = [{k: list(v[i]) if isinstance(v[i], (list, tuple)) else v[i] for k, v in data.items()}
                    for i in range(len(data["input_ids"]))]
        self._pad_batch(examples, padding, max_length, pad_to_multiple_of, side)
        return self._wrap(examples, batched, return_tensors, list(data), with_words=False)

    # ----------------------------------------------------------------------------------- decoding
    def decode(
        self, token_ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of a sequence of ids (a list, NumPy array or tensor).

        Args:
            skip_special_tokens: drop special tokens (bos/eos/pad/…, and added tokens marked special).
            clean_up_tokenization_spaces: apply `clean_up_tokenization`; default: the tokenizer's setting.

        Raises:
            ValueError: an id is not in the vocabulary.
        """
        ids = _as_id_list(token_ids)
        self._check_ids(ids)
        if skip_special_tokens:
            skip = self._skip_ids()
            ids = [i for i in ids if i not in skip]
        text = self._decode_ids(ids)
        clean = clean_up_tokenization_spaces
        if clean is None:
            clean = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean else text

    def batch_decode(
        self, sequences: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        """`decode` each sequence of a batch ((B, T) list, array or tensor)."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences]

    # ----------------------------------------------------------------------------------- files
    def _tokenizer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "add_bos_token": self.add_bos_token,
            "add_prefix_space": self.add_prefix_space,
            "added_tokens_decoder": {str(i): t.to_dict() for i, t in sorted(self.added_tokens_decoder.items())},
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "extra_special_tokens": {},
            "model_max_length": self.model_max_length,
            # Hugging Face writes the slow class name for both tokenizers; AutoTokenizer picks fast by default.
            "tokenizer_class": "GPT2Tokenizer",
        }
        config.update(self.special_tokens_map)
        if self.padding_side != "right":
            config["padding_side"] = self.padding_side
        if self.truncation_side != "right":
            config["truncation_side"] = self.truncation_side
        config.update(self._extra_config())
        return config

    def save_pretrained(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write the Hugging Face tokenizer layout into `save_directory` (created if needed), atomically as a whole.

        Files: tokenizer_config.json, special_tokens_map.json, vocab.json, merges.txt, added_tokens.json (only
        when some added token is not in vocab.json), and tokenizer.json for GPT2TokenizerFast.

        Returns:
            The paths written.
        """
        save_directory = os.fspath(save_directory)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        # Staged beside `save_directory` and swapped in whole (other files there are kept): a kill leaves the old
        # tokenizer files or the new ones, never a mix.
        with staged_directory(save_directory, keep=True) as staging:
            config_path = os.path.join(staging, prefix + TOKENIZER_CONFIG_FILE)
            map_path = os.path.join(staging, prefix + SPECIAL_TOKENS_MAP_FILE)
            write_json(config_path, self._tokenizer_config())
            write_json(map_path, self.special_tokens_map)
            written = [config_path, map_path, *self.save_vocabulary(staging, filename_prefix)]
            added = {t.content: i for i, t in sorted(self.added_tokens_decoder.items()) if i >= self.vocab_size}
            if added:
                added_path = os.path.join(staging, prefix + ADDED_TOKENS_FILE)
                atomic_write_text(added_path, json.dumps(added, ensure_ascii=False) + "\n")
                written.append(added_path)
            written.extend(self._extra_files(staging, filename_prefix))
        return tuple(os.path.join(save_directory, os.path.basename(path)) for path in written)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> PreTrainedTokenizerBase:
        """Load a tokenizer from a directory (or a Hugging Face Hub id, via `huggingface_hub`).

        Reads tokenizer_config.json, special_tokens_map.json and added_tokens.json when present, then the
        vocabulary files. `revision`, `cache_dir`, `local_files_only` and `token` go to the Hub download
        (`resolve_file`); other `kwargs` override what the files say (e.g. `pad_token="<|endoftext|>"`).

        Raises:
            OSError: the directory does not exist or lacks the vocabulary files.
            ValueError: a file is malformed or the files contradict each other.
        """
        source = os.fspath(pretrained_model_name_or_path)
        names = {**cls.vocab_files_names, "tokenizer_config": TOKENIZER_CONFIG_FILE,
                 "special_tokens_map": SPECIAL_TOKENS_MAP_FILE, "added_tokens": ADDED_TOKENS_FILE}
        hub = pop_hub_arguments(kwargs)
        files = {key: resolve_file(source, name, required=False, **hub) for key, name in names.items()}
        init_kwargs = cls._kwargs_from_files(files)
        init_kwargs.update({k: files[k] for k in cls.vocab_files_names if files[k] is not None})
        init_kwargs.update(kwargs)
        init_kwargs.setdefault("name_or_path", source)
        cls._check_vocab_files(source, init_kwargs)
        return cls(**init_kwargs)

    @classmethod
    def _check_vocab_files(cls, source: str, init_kwargs: dict[str, Any]) -> None:
        raise NotImplementedError

    @classmethod
    def _kwargs_from_files(cls, files: Mapping[str, str | None]) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if files["tokenizer_config"]:
            config = read_json(files["tokenizer_config"], "tokenizer config")
            if not isinstance(config, dict):
                raise ValueError(f"tokenizer config {files['tokenizer_config']} must hold a JSON object")
        if files["special_tokens_map"]:
            special_map = read_json(files["special_tokens_map"], "special tokens map")
            if not isinstance(special_map, dict):
                raise ValueError(f"special tokens map {files['special_tokens_map']} must hold a JSON object")
            config.update(special_map)
        decoder = config.get("added_tokens_decoder") or {}
        if not isinstance(decoder, dict):
            raise ValueError(f"added_tokens_decoder in {files['tokenizer_config']} must be an object")
        try:
            decoder = {int(i): as_added_token(t, special=False, what=f"added token {i}") for i, t in decoder.items()}
        except (TypeError, ValueError) as err:
            raise ValueError(f"bad added_tokens_decoder in {files['tokenizer_config']}: {err}") from err
        if files["added_tokens"]:
            legacy = read_json(files["added_tokens"], "added tokens file")
            if not isinstance(legacy, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in legacy.items()
            ):
                raise ValueError(f"added tokens file {files['added_tokens']} must map token strings to int ids")
            known = {t.content for t in decoder.values()}
            for content, token_id in legacy.items():
                if content not in known:
                    decoder[token_id] = AddedToken(content)
        config["added_tokens_decoder"] = decoder
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        accepted |= set(inspect.signature(PreTrainedTokenizerBase.__init__).parameters) - {"self"}
        # name_or_path (written by old transformers releases) names where the files came from, not these files.
        skip = {*cls.vocab_files_names, "name_or_path"}
        return {k: v for k, v in config.items() if k in accepted and k not in skip}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"len={len(self)}, model_max_length={self.model_max_length}, add_prefix_space={self.add_prefix_space}, "
            f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})"
        )
