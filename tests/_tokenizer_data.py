"""Real data for the tokenizer tests, made without network and without twinformers' own code.

- `train_gpt2_bpe` trains a small byte-level BPE with the `tokenizers` trainer on text that ships with
  Python (stdlib sources) and writes it in Hugging Face's layout, the way the shared fixtures were made:
  `<|endoftext|>` appended as the last id, GPT-2's pipeline, the config files written as plain JSON.
- `stdlib_text` / `multilingual_text` give corpora (English-heavy code and prose, and many scripts).
- `regex_onig_divergence` lists the code points on which the `regex` package (pure-Python tokenizer) and
  Oniguruma (`tokenizers`) disagree about \\p{L} / \\p{N} / \\s: characters of the newest Unicode versions.
"""

from __future__ import annotations

import functools
import json
import os
import random

EOS = "<|endoftext|>"
STDLIB_DIR = os.path.dirname(os.__file__)
TRAIN_FILES = ("textwrap.py", "argparse.py", "shlex.py", "string.py", "difflib.py")
CORPUS_FILES = ("calendar.py", "fractions.py", "heapq.py", "gettext.py")


def stdlib_text(names: tuple[str, ...] = TRAIN_FILES) -> str:
    """The concatenated sources of some standard-library modules."""
    parts = []
    for name in names:
        with open(os.path.join(STDLIB_DIR, name), encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


def multilingual_text(seed: int = 0, n_lines: int = 200) -> str:
    """Deterministic lines mixing scripts, digits, emoji, contractions and odd whitespace."""
    rng = random.Random(seed)
    alphabets = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔ",
        "абвгдеёжзийклмнопрстуфхцчшщыэюя",
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
        "あいうえおかきくけこさしすせそアイウエオカキクケコ",
        "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
        "अआइईउऊएऐओऔकखगघचछजझटठडढ",
        "0123456789٠١٢٣٤٥٦٧٨٩",
        "😀😃🎉🚀👍🏽🇫🇷❤️",
        "éèêëàâäôöûüçñß",
        ".,;:!?()[]{}<>-_=+*/\\\"'@#$%^&|~`",
    ]
    glue = [" ", " ", " ", "  ", "\t", "\n", " \n ", "\u00a0", "\u3000", "'s ", "'re ", "n't ", "'ll "]
    lines = []
    for _ in range(n_lines):
        words = []
        for _ in range(rng.randint(1, 12)):
            alphabet = rng.choice(alphabets)
            words.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))))
            words.append(rng.choice(glue))
        lines.append("".join(words))
    return "\n".join(lines)


def train_gpt2_bpe(directory: str | os.PathLike, vocab_size: int = 700, text: str | None = None) -> str:
    """Train a byte-level BPE on `text` (default: stdlib sources + multilingual lines) and save it in
    Hugging Face's GPT-2 layout in `directory` (vocab.json, merges.txt, tokenizer.json, configs).

    Returns:
        The directory.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    text = stdlib_text() + "\n" + multilingual_text() if text is None else text
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    scratch = Tokenizer(models.BPE())
    scratch.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    scratch.train_from_iterator(text.split("\n"), trainer)
    model = json.loads(scratch.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab[EOS] = len(vocab)  # GPT-2 convention: <|endoftext|> is the last id
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]

    tokenizer = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="",
                                     fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(EOS, special=True, normalized=False)])

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tokenizer.model.save(directory)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    eos_entry = {"content": EOS, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                 "special": True}
    config = {
        "add_prefix_space": False, "added_tokens_decoder": {str(vocab[EOS]): eos_entry}, "bos_token": EOS,
        "clean_up_tokenization_spaces": False, "eos_token": EOS, "model_max_length": 1024,
        "tokenizer_class": "GPT2Tokenizer", "unk_token": EOS,
    }
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": EOS, "eos_token": EOS, "unk_token": EOS}, f, indent=2)
    return directory


@functools.lru_cache(maxsize=1)
def regex_onig_divergence() -> frozenset[str]:
    """Code points whose \\p{L} / \\p{N} / \\s membership differs between `regex` and `tokenizers`' Oniguruma."""
    import regex
    from tokenizers import Regex, pre_tokenizers

    chars = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    divergent: set[str] = set()
    for pattern in (r"\p{L}", r"\p{N}", r"\s"):
        splitter = pre_tokenizers.Split(Regex(pattern), behavior="removed")
        onig: set[str] = set()
        for start in range(0, len(chars), 65536):
            chunk = chars[start:start + 65536]
            kept = {c for piece, _ in splitter.pre_tokenize_str(chunk) for c in piece}
            onig.update(set(chunk) - kept)
        divergent |= onig.symmetric_difference(regex.findall(pattern, chars))
    return frozenset(divergent)
