"""TFGPT2Tokenizer: the in-graph Keras layer gives the ids of the Python tokenizers, in and out of graphs.

References: ids recorded by Hugging Face transformers 4.47.1 for its fixture vocabulary, the `tokenizers`
library (GPT2TokenizerFast's backend) and the pure-Python GPT2Tokenizer, on a BPE trained here with the
`tokenizers` trainer (`_tokenizer_data.py`).
"""

from __future__ import annotations

import json
import os

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from _tokenizer_data import CORPUS_FILES, EOS, multilingual_text, regex_onig_divergence, stdlib_text, train_gpt2_bpe  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers import HF_FIXTURES  # noqa: E402
from twinformers.tf.tokenizer import TFGPT2Tokenizer  # noqa: E402
from twinformers.tokenization.base import AddedToken  # noqa: E402
from twinformers.tokenization.gpt2 import GPT2Tokenizer  # noqa: E402
from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast  # noqa: E402

HF_FAST = os.path.join(HF_FIXTURES, "tokenizer-gpt2-fast")
# Recorded by transformers 4.47.1 for the fixture vocabulary (shared/formats/tokenizer-gpt2.json).
HF_TEXT = "Hello world! This is a tiny corpus for a tiny byte-level BPE tokenizer."
HF_IDS = [39, 269, 75, 78, 289, 261, 75, 67, 0, 220, 51, 71, 283, 220, 283, 263, 293, 88, 220, 66, 261, 79, 84, 82,
          297, 263, 293, 88, 298, 12, 285, 269, 291, 36, 295, 13]
PIECES = [EOS, " ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u3000", "'s", "'re", "'ll", " 've", "n't", "''",
          "<|endoftext", "|>", "\u200d", "👍🏽", "e\u0301", "٣", "½", "\x00", "\x85", "' s", "\t's", "5's", "x'd"]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return train_gpt2_bpe(tmp_path_factory.mktemp("trained-bpe"))


def compiled(layer: TFGPT2Tokenizer):
    """The layer as one graph over (B,) strings (traced once)."""
    return tf.function(lambda texts: layer(texts), input_signature=[tf.TensorSpec([None], tf.string)])


@pytest.fixture(scope="module")
def twins(trained_dir: str):
    """add_prefix_space → (slow, fast, graph function of the layer built from the fast tokenizer, the layer).

    Shared by the tests: every layer traces its graph once (seconds), so the tests reuse these.
    """
    result = {}
    for prefix in (False, True):
        slow = GPT2Tokenizer.from_pretrained(trained_dir, add_prefix_space=prefix)
        fast = GPT2TokenizerFast.from_pretrained(trained_dir, add_prefix_space=prefix)
        layer = TFGPT2Tokenizer.from_tokenizer(fast)
        result[prefix] = (slow, fast, compiled(layer), layer)
    return result


def ragged_ids(outputs) -> list[list[int]]:
    return outputs["input_ids"].to_list()


def test_hf_fixture_ids() -> None:
    layer = TFGPT2Tokenizer.from_pretrained(HF_FAST)
    outputs = layer(tf.constant([HF_TEXT, "Hello world!"]))
    assert ragged_ids(outputs)[0] == HF_IDS
    assert outputs["input_ids"].dtype == tf.int32 and outputs["attention_mask"].to_list()[1] == [1] * 9


def test_top_level_export() -> None:
    import twinformers

    assert twinformers.TFGPT2Tokenizer is TFGPT2Tokenizer


def test_corpus_matches_python_tokenizers(twins) -> None:
    lines = (stdlib_text(CORPUS_FILES[:2]) + "\n" + multilingual_text(seed=2)).split("\n")
    for prefix in (False, True):
        slow, fast, graph, _ = twins[prefix]
        expected = fast(lines)["input_ids"]
        assert sum(map(len, expected)) > 10_000
        assert ragged_ids(graph(tf.constant(lines))) == expected == slow(lines)["input_ids"]


def test_fuzz_matches_python_tokenizers(twins) -> None:
    divergent = regex_onig_divergence()
    piece = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=10), st.sampled_from(PIECES),
                      st.text(st.sampled_from("ab 's\n.1é"), max_size=6))
    texts = st.lists(st.lists(piece, max_size=8).map("".join), min_size=1, max_size=6)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(texts=texts, prefix=st.booleans())
    def check(texts: list[str], prefix: bool) -> None:
        slow, fast, graph, _ = twins[prefix]
        ids = ragged_ids(graph(tf.constant(texts)))
        # The layer uses the `regex` package's Unicode classes, like GPT2Tokenizer: equal on every input.
        assert ids == slow(texts)["input_ids"]
        # `tokenizers` (Oniguruma) differs only on characters of the newest Unicode versions.
        comparable = [i for i, text in enumerate(texts) if not divergent.intersection(text)]
        assert [ids[i] for i in comparable] == [fast(texts)["input_ids"][i] for i in comparable]

    check()


def test_padding_truncation_and_scalar_input(trained_dir: str, twins) -> None:
    fast = GPT2TokenizerFast.from_pretrained(trained_dir, pad_token=EOS)
    texts = ["a", "one two three four five"]
    short, long = (fast(t)["input_ids"] for t in texts)
    pad = fast.pad_token_id
    padding_layer = TFGPT2Tokenizer.from_tokenizer(fast, pad_token_id=pad)
    padded = padding_layer(tf.constant(texts))
    assert padded["input_ids"].numpy().tolist() == fast(texts, padding=True)["input_ids"]
    assert padded["attention_mask"].numpy().tolist() == fast(texts, padding=True)["attention_mask"]
    fixed = padding_layer(tf.constant(texts), max_length=3)
    assert fixed["input_ids"].numpy().tolist() == [short + [pad] * (3 - len(short)), long[:3]]
    assert fixed["attention_mask"].numpy().tolist() == [[1] * len(short) + [0] * (3 - len(short)), [1, 1, 1]]
    layer = twins[False][3]
    assert ragged_ids(layer(tf.constant(texts), max_length=2)) == [short[:2], long[:2]]
    single = layer(tf.constant(texts[1]))
    assert single["input_ids"].numpy().tolist() == long and single["input_ids"].shape.rank == 1


def test_from_tokenizer_carries_settings(trained_dir: str) -> None:
    fast = GPT2TokenizerFast.from_pretrained(trained_dir, add_bos_token=True, add_prefix_space=True)
    slow = GPT2Tokenizer.from_pretrained(trained_dir, add_bos_token=True, add_prefix_space=True)
    for tok in (fast, slow):
        tok.add_tokens(["<sep>", AddedToken("<unnormalized>", normalized=False)])
    layer = TFGPT2Tokenizer.from_tokenizer(fast, name="tok")
    assert layer.get_config() == TFGPT2Tokenizer.from_tokenizer(slow, name="tok").get_config()  # the same layer
    texts = ["Hello<sep>world", "x<|endoftext|>y<unnormalized>z", "", "<sep>"]
    assert ragged_ids(layer(tf.constant(texts))) == fast(texts)["input_ids"] == slow(texts)["input_ids"]


def test_config_round_trip(trained_dir: str) -> None:
    fast = GPT2TokenizerFast.from_pretrained(trained_dir, pad_token=EOS)
    layer = TFGPT2Tokenizer.from_tokenizer(fast, max_length=16, pad_token_id=fast.pad_token_id, name="tok")
    config = json.loads(json.dumps(layer.get_config()))  # JSON-serializable, as Keras needs
    rebuilt = TFGPT2Tokenizer.from_config(config)
    texts = ["it's a test<|endoftext|>", "tabs\tand  spaces"]
    assert rebuilt.name == "tok" and rebuilt.get_config() == config
    expected = fast(texts, padding="max_length", max_length=16)["input_ids"]
    assert rebuilt(tf.constant(texts))["input_ids"].numpy().tolist() == expected


def test_saved_keras_model_and_savedmodel(trained_dir: str, tmp_path) -> None:
    fast = GPT2TokenizerFast.from_pretrained(trained_dir, pad_token=EOS)
    texts = ["Hello world, it's me.", "x<|endoftext|>y", "Ünïcödé → bytes"]
    expected = fast(texts, padding="max_length", max_length=12, truncation=True)
    inputs = keras.Input(shape=(), dtype="string")
    outputs = TFGPT2Tokenizer.from_tokenizer(fast, max_length=12, pad_token_id=fast.eos_token_id)(inputs)
    model = keras.Model(inputs, outputs)
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    got = loaded(tf.constant(texts))
    assert got["input_ids"].numpy().tolist() == expected["input_ids"]
    assert got["attention_mask"].numpy().tolist() == expected["attention_mask"]

    export_dir = os.fspath(tmp_path / "savedmodel")
    model.export(export_dir, verbose=False)
    served = tf.saved_model.load(export_dir).serve(tf.constant(texts))
    assert served["input_ids"].numpy().tolist() == expected["input_ids"]


def test_bad_input(trained_dir: str, twins) -> None:
    _, _, graph, layer = twins[False]
    for bad in (b"\xffnot utf-8", b"\xfe", b"caf\xc3"):  # invalid UTF-8 (0xFF and 0xFE are the marker bytes)
        with pytest.raises(tf.errors.InvalidArgumentError):
            layer(tf.constant([b"ok", bad]))
        with pytest.raises(tf.errors.InvalidArgumentError):
            graph(tf.constant([b"ok", bad]))
    with pytest.raises(ValueError, match="scalar or a \\(batch,\\)"):
        layer(tf.constant([["a", "b"]]))
    fast = GPT2TokenizerFast.from_pretrained(trained_dir)
    fast.add_tokens([AddedToken("<m>", lstrip=True)])
    with pytest.raises(NotImplementedError, match="lstrip"):
        TFGPT2Tokenizer.from_tokenizer(fast)
    vocab, merges = fast._bpe_vocab_and_merges()
    with pytest.raises(ValueError, match="not in the vocabulary"):
        TFGPT2Tokenizer(vocab, [*merges, "Ġ q☃"])
    with pytest.raises(ValueError, match="left right"):
        TFGPT2Tokenizer(vocab, ["a b c"])
