"""`twinformers demo`: the whole library on the embedded tiny GPT-2, offline.

The demo fine-tunes the model with Keras `model.fit`, converts the TensorFlow checkpoint to PyTorch and Flax with
the streaming converter, checks that the three twins give the same logits, and generates from one prompt in
each backend with timings. A backend that is not installed is skipped with the pip extra that installs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._backends import install_hint, missing_modules
from ..checkpoints.files import staged_directory
from ..configuration import GPT2Config
from ..tokenization.gpt2_fast import GPT2TokenizerFast
from .embedded import (
    RETRAIN_SETTINGS,
    TrainSettings,
    embedded_model_path,
    keras_fit,
    split_blocks,
    stdlib_texts,
    token_blocks,
    train_embedded_model,
)

BACKEND_NAMES = {"tf": "TensorFlow", "pt": "PyTorch", "flax": "Flax"}
# The fine-tuning text is a standard-library package the embedded model never saw (it is trained on top-level
# modules only), so the validation loss before / after fine-tuning shows the adaptation.
FINE_TUNE_PACKAGE = "json"
DEFAULT_PROMPT = "def read_config(path):\n"
# The project's fp32 equivalence bound, for unit-scale logits. fp32 rounding grows with the values: on the
# fine-tuned embedded model (|logits| up to ~16) each twin's lm_head alone is 7-9e-6 away from a float64 product
# of the same hidden states, so the demo scales the bound by the largest |logit| (never below 1e-5).
LOGITS_TOLERANCE = 1e-5


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
    return {backend: install_hint(backend, absent)
            for backend in BACKEND_NAMES if (absent := missing_modules(backend))}


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
        from ..conversion.converter import convert

        result.checkpoints["tf"] = source
        for backend in ("pt", "flax"):
            if backend in result.skipped:
                log(f"  {BACKEND_NAMES[backend]:<10} skipped ({result.skipped[backend]})")
                continue
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
    with staged_directory(destination) as staging:
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
