"""The embedded default model: a tiny GPT-2 and its byte-level BPE tokenizer shipped in the package
(`data/tiny-gpt2/`, about 1 MB), and the code that trains it on Python's own standard-library sources
(`scripts/train_embedded_model.py`, and `twinformers demo --retrain` with smaller settings).
`twinformers generate` uses this model when it is given none (`embedded_model_path()`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..checkpoints.files import staged_directory
from ..configuration import GPT2Config
from ..tokenization.gpt2_fast import GPT2TokenizerFast, build_backend

EMBEDDED_MODEL_NAME = "tiny-gpt2"
EOS_TOKEN = "<|endoftext|>"
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
STDLIB_DIR = os.path.dirname(os.__file__)


def embedded_model_path() -> str:
    """The directory of the embedded tiny GPT-2 (config, safetensors weights, tokenizer files).

    Raises:
        OSError: the package was installed without its data files.
    """
    path = os.path.join(DATA_DIR, EMBEDDED_MODEL_NAME)
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise OSError(
            f"the embedded model is missing from {path}; reinstall twinformers (its package data was not "
            "installed) or recreate it with scripts/train_embedded_model.py"
        )
    return path


# --------------------------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How the embedded tokenizer and model are trained (sizes chosen to keep the files near 1 MB)."""

    vocab_size: int = 1024  # byte-level BPE: 256 bytes + merges + <|endoftext|>
    n_positions: int = 128
    n_embd: int = 64
    n_layer: int = 4
    n_head: int = 4
    corpus_bytes: int = 3_000_000  # of top-level standard-library modules
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 3e-3
    seed: int = 0


EMBEDDED_SETTINGS = TrainSettings()
# `twinformers demo --retrain`: the same recipe, short enough for a couple of minutes on two CPU cores.
RETRAIN_SETTINGS = dataclasses.replace(EMBEDDED_SETTINGS, corpus_bytes=1_000_000, steps=400)


# --------------------------------------------------------------------------------------------- text
def stdlib_texts(max_bytes: int, package: str | None = None) -> list[str]:
    """Python standard-library sources, one string per file, about `max_bytes` in all (sorted file names, so
    every machine with the same Python gets the same text).

    Args:
        max_bytes: stop after this many characters.
        package: read the modules of this stdlib package (e.g. "json") instead of the top-level modules.
    Raises:
        OSError: the standard library's sources are not on this machine (some stripped-down installs).
    """
    directory = STDLIB_DIR if package is None else os.path.join(STDLIB_DIR, package)
    names = sorted(name for name in os.listdir(directory) if name.endswith(".py"))
    if not names:
        raise OSError(f"no Python sources in {directory}: this Python was installed without its stdlib sources")
    texts, size = [], 0
    for name in names:
        with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
            text = f.read(max_bytes - size)
        texts.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    return texts


def train_tokenizer(texts: Sequence[str], vocab_size: int, progress: bool = False) -> GPT2TokenizerFast:
    """A GPT-2-style byte-level BPE trained on `texts`: the 256 byte symbols, merges, then `<|endoftext|>` as
    the last id (where GPT-2 keeps it), `vocab_size` tokens in all."""
    import tokenizers

    trainer_model = tokenizers.Tokenizer(tokenizers.models.BPE())
    trainer_model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(  # one id is left for <|endoftext|>
        vocab_size=vocab_size - 1, show_progress=progress,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    trainer_model.train_from_iterator(texts, trainer)
    vocab, merges = _vocab_and_merges(trainer_model)
    vocab[EOS_TOKEN] = len(vocab)
    backend = build_backend(vocab, merges)  # GPT-2's exact pipeline, so the slow and TF tokenizers agree
    return GPT2TokenizerFast(tokenizer_object=backend, model_max_length=EMBEDDED_SETTINGS.n_positions)


def _vocab_and_merges(trained: Any) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = json.loads(trained.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    # tokenizers >= 0.20 writes pairs, older versions "left right" strings
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return vocab, merges


def token_blocks(tokenizer: GPT2TokenizerFast, texts: Sequence[str], block_size: int) -> np.ndarray:
    """All texts tokenized, joined with `<|endoftext|>` and cut into (N, block_size) int32 blocks (the tail is
    dropped)."""
    ids: list[int] = []
    for encoded in tokenizer(list(texts))["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    count = len(ids) // block_size
    if count < 2:
        raise ValueError(f"the text gives {len(ids)} tokens: too few for two blocks of {block_size}")
    return np.asarray(ids[: count * block_size], dtype=np.int32).reshape(count, block_size)


def split_blocks(blocks: np.ndarray, validation_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): the first `validation_blocks` rows are held out (at least one row stays to train)."""
    held_out = max(1, min(validation_blocks, len(blocks) - 1))
    return blocks[held_out:], blocks[:held_out]


# --------------------------------------------------------------------------------------------- Keras training
def keras_fit(
    model: Any,
    train: np.ndarray,
    validation: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    progress: bool = True,
    description: str = "keras fit",
) -> tuple[float, float]:
    """Train a TF causal-LM twin on (N, T) token blocks with `model.fit` (the model's own shifted LM loss, AdamW
    with warmup and cosine decay, clipped gradients).

    Returns:
        (validation loss before, validation loss after).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)  # shuffling and dropout
    batch_size = min(batch_size, len(train))
    as_inputs = lambda ids: {"input_ids": ids, "labels": ids}  # the model shifts the labels itself
    train_data = (
        tf.data.Dataset.from_tensor_slices(train)
        .shuffle(len(train), seed=seed)
        .repeat()
        .batch(batch_size, drop_remainder=True)  # one shape, one compiled train step
        .map(as_inputs)
    )
    validation_data = tf.data.Dataset.from_tensor_slices(validation).batch(batch_size).map(as_inputs).cache()
    warmup = max(1, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, warmup_target=learning_rate, warmup_steps=warmup,
        decay_steps=max(1, steps - warmup),
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.01, beta_2=0.95, global_clipnorm=1.0)
    model.compile(optimizer=optimizer)  # no loss: fit trains on the model's own loss
    before = float(model.evaluate(validation_data, verbose=0))
    model.fit(train_data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,  # tf.data shuffles
              callbacks=[_tqdm_callback(steps, description)] if progress else [])
    after = float(model.evaluate(validation_data, verbose=0))
    return before, after


def _tqdm_callback(steps: int, description: str) -> Any:
    """A Keras callback showing a tqdm bar over the training steps with the running loss (Keras' own bar
    floods logs that are not terminals)."""
    import keras
    from tqdm.auto import tqdm

    class TqdmCallback(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.bar = tqdm(total=steps, desc=description, unit="step", file=sys.stderr)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.bar.update(1)
            if logs and batch % 10 == 0:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

        def on_train_end(self, logs: dict | None = None) -> None:
            self.bar.close()

    return TqdmCallback()


def train_embedded_model(
    output_dir: str | os.PathLike, settings: TrainSettings = EMBEDDED_SETTINGS, progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Train the tokenizer and a fresh tiny GPT-2 (TensorFlow twin, Keras `fit`) on the standard library and
    save both into `output_dir` in the Hugging Face layout (model.safetensors, config.json, tokenizer files).

    Returns:
        {"validation_loss_before": ..., "validation_loss_after": ..., "seconds": ...}.
    """
    import twinformers.tf as tft

    start = time.perf_counter()
    texts = stdlib_texts(settings.corpus_bytes)
    tokenizer = train_tokenizer(texts, settings.vocab_size, progress=progress)
    log(f"tokenizer: byte-level BPE, {len(tokenizer)} tokens, trained on {sum(map(len, texts)) / 1e6:.1f} MB "
        f"of {len(texts)} standard-library modules")
    train, validation = split_blocks(token_blocks(tokenizer, texts, settings.n_positions), validation_blocks=32)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=settings.n_positions, n_embd=settings.n_embd,
        n_layer=settings.n_layer, n_head=settings.n_head, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    import keras

    keras.utils.set_random_seed(settings.seed)  # the initial weights
    model = tft.GPT2LMHeadModel(config)
    before, after = keras_fit(
        model, train, validation, steps=settings.steps, batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, seed=settings.seed, progress=progress, description="training",
    )
    with staged_directory(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return {"validation_loss_before": before, "validation_loss_after": after, "seconds": time.perf_counter() - start}
