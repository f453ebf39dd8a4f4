"""The embedded default model and `twinformers demo`: the whole library on one tiny GPT-2, offline.

The package ships a tiny GPT-2 and its byte-level BPE tokenizer (`data/tiny-gpt2/`, about 1 MB), trained on
Python's own standard-library sources by `scripts/train_embedded_model.py`, which calls `train_embedded_model`
below — the same function `twinformers demo --retrain` runs with smaller settings. `twinformers generate` uses
this model when it is given none (`embedded_model_path()`).

The demo fine-tunes the model with Keras `model.fit`, converts the TensorFlow checkpoint to PyTorch and Flax with
the streaming converter, checks that the three twins give the same logits, and generates from one prompt in
each backend with timings. A backend that is not installed is skipped with the pip extra that installs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ._backends import BACKENDS
from .configuration import GPT2Config
from .tokenization_gpt2_fast import GPT2TokenizerFast, build_backend

__all__ = [
    "EMBEDDED_MODEL_NAME",
    "embedded_model_path",
    "TrainSettings",
    "EMBEDDED_SETTINGS",
    "RETRAIN_SETTINGS",
    "stdlib_texts",
    "train_tokenizer",
    "token_blocks",
    "split_blocks",
    "keras_fit",
    "train_embedded_model",
    "replaced_directory",
    "DemoSettings",
    "DemoResult",
    "Generation",
    "missing_backends",
    "run_demo",
    "format_table",
    "format_summary",
]

EMBEDDED_MODEL_NAME = "tiny-gpt2"
EOS_TOKEN = "<|endoftext|>"
BACKEND_NAMES = {"tf": "TensorFlow", "pt": "PyTorch", "flax": "Flax"}
# The fine-tuning text is a standard-library package the embedded model never saw (it is trained on top-level
# modules only), so the validation loss before / after fine-tuning shows the adaptation.
FINE_TUNE_PACKAGE = "json"
DEFAULT_PROMPT = "def read_config(path):\n"
# The project's fp32 equivalence bound, for unit-scale logits. fp32 rounding grows with the values: on the
# fine-tuned embedded model (|logits| up to ~16) each twin's lm_head alone is 7-9e-6 away from a float64 product
# of the same hidden states, so the demo scales the bound by the largest |logit| (never below 1e-5).
LOGITS_TOLERANCE = 1e-5
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
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
    with replaced_directory(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return {"validation_loss_before": before, "validation_loss_after": after, "seconds": time.perf_counter() - start}


@contextlib.contextmanager
def replaced_directory(path: str | os.PathLike) -> Iterator[str]:
    """A staging directory beside `path` that replaces `path` (if any) only when the block succeeds, so a
    failed or interrupted run never leaves a half-written model behind."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=parent)
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp and atomic writes create private files; these are shared
        for name in os.listdir(staging):
            os.chmod(os.path.join(staging, name), 0o666 & ~umask)
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.replace(path, os.path.join(old, "previous"))
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------- the demo
@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """What `twinformers demo` does; `DemoSettings.short()` is the CI setting (well under a minute of work)."""

    retrain: bool = False
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 40
    fine_tune_steps: int = 60
    fine_tune_bytes: int = 150_000
    batch_size: int = 8
    learning_rate: float = 1e-3
    output_dir: str | None = None  # keep the checkpoints here (default: a temporary directory)
    progress: bool = True
    retrain_settings: TrainSettings = RETRAIN_SETTINGS

    @classmethod
    def short(cls, **overrides: Any) -> DemoSettings:
        values = dict(max_new_tokens=16, fine_tune_steps=10, fine_tune_bytes=40_000,
                      retrain_settings=dataclasses.replace(RETRAIN_SETTINGS, corpus_bytes=300_000, steps=60))
        values.update(overrides)
        return cls(**values)


@dataclasses.dataclass
class Generation:
    """One backend's greedy continuation of the prompt and its timings."""

    backend: str
    text: str = ""
    token_ids: list[int] = dataclasses.field(default_factory=list)
    first_seconds: float = float("nan")  # the first call: tracing / compilation included
    warm_seconds: float = float("nan")  # a second call with the same shapes
    note: str = ""


@dataclasses.dataclass
class DemoResult:
    """Everything the demo measured; `format_summary` renders it."""

    model_source: str = ""
    tokenizer_size: int = 0
    parameters: int = 0
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # backend → why, with the pip extra
    train: dict[str, float] = dataclasses.field(default_factory=dict)  # --retrain numbers
    fine_tune: tuple[float, float] | None = None  # validation loss before / after
    checkpoints: dict[str, str] = dataclasses.field(default_factory=dict)  # backend → directory
    logits_diff: dict[str, float] = dataclasses.field(default_factory=dict)  # backend → max |Δ| vs reference
    logits_tolerance: float = LOGITS_TOLERANCE  # LOGITS_TOLERANCE × max(1, max |reference logits|)
    reference: str = ""
    generations: list[Generation] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The twins agree within the fp32 bound (1e-5 on unit-scale logits, see LOGITS_TOLERANCE)."""
        return all(diff <= self.logits_tolerance for diff in self.logits_diff.values())


def missing_backends() -> dict[str, str]:
    """Backends whose framework is not installed → a message naming the pip extra that installs it."""
    missing = {}
    for backend in BACKEND_NAMES:
        modules, extra = BACKENDS[backend]
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            missing[backend] = f"{', '.join(absent)} not installed: pip install 'twinformers[{extra}]'"
    return missing


def run_demo(settings: DemoSettings = DemoSettings(), log: Callable[[str], None] = print) -> DemoResult:
    """Fine-tune the embedded model with Keras, convert it to PyTorch and Flax, compare logits, generate.

    Backends that are not installed are skipped (recorded in `result.skipped` with the pip extra); without
    TensorFlow there is no fine-tuning and the embedded weights are converted as they are.

    Raises:
        ImportError: `retrain` without TensorFlow (the model is trained with Keras).
    """
    start = time.perf_counter()
    result = DemoResult(skipped=missing_backends())
    installed = [backend for backend in BACKEND_NAMES if backend not in result.skipped]
    for backend, why in result.skipped.items():
        log(f"note: {BACKEND_NAMES[backend]} twin skipped ({why})")
    with contextlib.ExitStack() as stack:
        work = settings.output_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="twinformers-demo-"))
        os.makedirs(work, exist_ok=True)

        log("\n[1/5] tokenizer and model")
        source = _model_source(settings, work, result, log)
        tokenizer = GPT2TokenizerFast.from_pretrained(source)
        result.model_source, result.tokenizer_size = source, len(tokenizer)
        blocks = token_blocks(tokenizer, stdlib_texts(settings.fine_tune_bytes, package=FINE_TUNE_PACKAGE),
                              min(64, GPT2Config.from_pretrained(source).n_positions))
        train, validation = split_blocks(blocks, validation_blocks=max(2, len(blocks) // 10))

        log(f"\n[2/5] fine-tune with Keras model.fit on the stdlib `{FINE_TUNE_PACKAGE}` package")
        source = _fine_tune(settings, source, tokenizer, train, validation, work, result, log)

        log("\n[3/5] convert the weights with the streaming converter (NumPy only)")
        from .convert import convert

        result.checkpoints["tf"] = source
        for backend in ("pt", "flax"):
            destination = os.path.join(work, backend)
            convert(source, destination, to=backend, force=True, progress=settings.progress, log=log)
            result.checkpoints[backend] = destination
            log(f"  {BACKEND_NAMES[backend]:<10} {destination} ({', '.join(sorted(os.listdir(destination)))})")

        log("\n[4/5] load each twin from its own checkpoint and compare logits")
        models = {backend: _load(backend, result.checkpoints[backend]) for backend in installed}
        if models:
            result.parameters = _num_parameters(next(iter(models.values())))
        batch = validation[:2]
        logits = {backend: _logits(backend, model, batch) for backend, model in models.items()}
        if logits:
            result.reference = next(iter(logits))
            scale = max(1.0, float(np.abs(logits[result.reference]).max()))
            result.logits_tolerance = LOGITS_TOLERANCE * scale
            for backend, values in logits.items():
                result.logits_diff[backend] = float(np.abs(values - logits[result.reference]).max())
                log(f"  {BACKEND_NAMES[backend]:<10} logits {tuple(values.shape)}  max |Δ| vs "
                    f"{BACKEND_NAMES[result.reference]} = {result.logits_diff[backend]:.2e}  "
                    f"(bound {result.logits_tolerance:.1e} = 1e-5 × max |logit|)")

        log(f"\n[5/5] generate {settings.max_new_tokens} tokens greedily from {settings.prompt!r}")
        prompt_ids = np.asarray([tokenizer(settings.prompt)["input_ids"]], dtype=np.int32)
        for backend, model in models.items():
            generation = _timed_generation(backend, model, prompt_ids, settings.max_new_tokens, tokenizer)
            result.generations.append(generation)
            log(f"  {BACKEND_NAMES[backend]:<10} {generation.note or f'{generation.first_seconds:.2f} s'}")
    result.seconds = time.perf_counter() - start
    return result


def _model_source(settings: DemoSettings, work: str, result: DemoResult, log: Callable[[str], None]) -> str:
    if not settings.retrain:
        path = embedded_model_path()
        log(f"  the embedded model: {path}")
        return path
    if "tf" in result.skipped:
        raise ImportError(f"--retrain trains with Keras, but TensorFlow is missing ({result.skipped['tf']})")
    path = os.path.join(work, "retrained")
    log(f"  training a tokenizer and a tiny GPT-2 from scratch into {path}")
    result.train = train_embedded_model(path, settings.retrain_settings, progress=settings.progress, log=log)
    return path


def _fine_tune(
    settings: DemoSettings, source: str, tokenizer: GPT2TokenizerFast, train: np.ndarray, validation: np.ndarray,
    work: str, result: DemoResult, log: Callable[[str], None],
) -> str:
    """The TF checkpoint (tf_model.h5) after fine-tuning; without TensorFlow, `source` unchanged."""
    if "tf" in result.skipped:
        log("  skipped: TensorFlow is not installed; converting the embedded weights as they are")
        return source
    import twinformers.tf as tft

    model = tft.GPT2LMHeadModel.from_pretrained(source)
    result.fine_tune = keras_fit(
        model, train, validation, steps=settings.fine_tune_steps, batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, progress=settings.progress, description="fine-tuning",
    )
    before, after = result.fine_tune
    log(f"  {len(train)} training blocks, {settings.fine_tune_steps} steps; "
        f"validation loss {before:.3f} -> {after:.3f}")
    destination = os.path.join(work, "tf")
    with replaced_directory(destination) as staging:
        model.save_pretrained(staging, safe_serialization=False)  # Hugging Face's tf_model.h5 layout
        tokenizer.save_pretrained(staging)
    return destination


# Per-backend adapters: the only place the demo touches a framework directly.
def _load(backend: str, path: str) -> Any:
    module = importlib.import_module(f"twinformers.{backend}")
    model = module.GPT2LMHeadModel.from_pretrained(path)
    if backend == "pt":
        model.eval()
    return model


def _num_parameters(model: Any) -> int:
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    if hasattr(model, "count_params"):
        return int(model.count_params())
    import jax

    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(model.params)))


def _to_backend(backend: str, ids: np.ndarray) -> Any:
    if backend == "pt":
        import torch

        return torch.from_numpy(ids.astype(np.int64))
    return ids


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach()
    return np.asarray(value)


def _logits(backend: str, model: Any, ids: np.ndarray) -> np.ndarray:
    """(B, T, V) float32 logits of (B, T) ids."""
    if backend == "pt":
        import torch

        with torch.no_grad():
            return _to_numpy(model(_to_backend(backend, ids)).logits)
    return _to_numpy(model(ids).logits)


def _timed_generation(
    backend: str, model: Any, prompt_ids: np.ndarray, max_new_tokens: int, tokenizer: GPT2TokenizerFast
) -> Generation:
    generation = Generation(backend)
    if not hasattr(model, "generate"):
        generation.note = f"twinformers.{backend} has no generate() in this version"
        return generation
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    inputs = _to_backend(backend, prompt_ids)
    for attempt in ("first_seconds", "warm_seconds"):
        started = time.perf_counter()
        output = _to_numpy(model.generate(inputs, **kwargs))
        setattr(generation, attempt, time.perf_counter() - started)
    generation.token_ids = [int(i) for i in output[0, prompt_ids.shape[1]:]]
    generation.text = tokenizer.decode(generation.token_ids)
    return generation


# --------------------------------------------------------------------------------------------- reporting
def format_table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: aligned columns, numbers right-aligned, a rule under the header (if any)."""
    columns = len(headers) if headers is not None else max(len(row) for row in rows)
    body = [[_cell(value) for value in row] for row in rows]
    head = [str(h) for h in headers] if headers is not None else None
    widths = [max(len(row[i]) for row in ([head] if head else []) + body) for i in range(columns)]
    numeric = [bool(rows) and all(isinstance(row[i], int | float) for row in rows) for i in range(columns)]

    def line(row: list[str]) -> str:
        return "  ".join(cell.rjust(width) if numeric[i] else cell.ljust(width)
                         for i, (cell, width) in enumerate(zip(row, widths))).rstrip()

    lines = [line(head), "  ".join("-" * width for width in widths)] if head else []
    return "\n".join(lines + [line(row) for row in body])


def _cell(value: Any) -> str:
    """Floats with two decimals, small ones (max |Δ| around 1e-7) in scientific notation, zero as 0."""
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.2e}" if abs(value) < 1e-2 else f"{value:.2f}"
    return str(value)


def _shown(text: str, width: int = 48) -> str:
    """One line of generated text: newlines and tabs made visible, cut to `width`."""
    shown = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def format_summary(result: DemoResult, settings: DemoSettings) -> str:
    """The closing report: what ran where, logits agreement, and the three continuations side by side."""
    parts = ["", "Summary"]
    rows = [("model", f"tiny GPT-2, {result.parameters:,} parameters, vocabulary {result.tokenizer_size}")]
    if result.train:
        rows.append(("trained (--retrain)", f"validation loss {result.train['validation_loss_before']:.3f} -> "
                                            f"{result.train['validation_loss_after']:.3f}"))
    if result.fine_tune:
        rows.append(("Keras fine-tuning", f"validation loss {result.fine_tune[0]:.3f} -> {result.fine_tune[1]:.3f}"))
    for backend, why in result.skipped.items():
        rows.append((f"{BACKEND_NAMES[backend]} twin", f"skipped — {why}"))
    rows.append(("total time", f"{result.seconds:.1f} s"))
    parts += [format_table(None, rows), ""]
    if result.logits_diff:
        parts.append(format_table(
            ("twin", "checkpoint", f"max |Δ| logits vs {BACKEND_NAMES[result.reference]}",
             f"agrees (≤ {result.logits_tolerance:.1e})"),
            [(BACKEND_NAMES[b], result.checkpoints[b], diff, "yes" if diff <= result.logits_tolerance else "NO")
             for b, diff in result.logits_diff.items()],
        ))
        parts.append("")
    generated = [g for g in result.generations if not g.note]
    if result.generations:
        rows = []
        for g in result.generations:
            if g.note:
                rows.append((BACKEND_NAMES[g.backend], "-", "-", "-", g.note))
            else:
                rows.append((BACKEND_NAMES[g.backend], g.first_seconds, g.warm_seconds,
                             len(g.token_ids) / g.warm_seconds, _shown(g.text)))
        parts.append(f"prompt: {settings.prompt!r}")
        parts.append(format_table(("twin", "first call s", "warm s", "tokens/s", "greedy continuation"), rows))
        if len(generated) > 1:
            same = all(g.token_ids == generated[0].token_ids for g in generated)
            parts.append("the continuations are " + ("identical token for token" if same else "NOT identical"))
    if generated:
        parts += ["", f"{BACKEND_NAMES[generated[0].backend]} continuation in full:",
                  settings.prompt + generated[0].text]
    return "\n".join(parts)
