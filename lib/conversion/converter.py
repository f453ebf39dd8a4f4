"""Streaming checkpoint conversion: any Hugging Face weight layout → any other, NumPy only.

`convert` reads the source tensor by tensor (plain file reads where the format allows, so the source is
never resident as a whole), renames and re-lays each tensor through the family's table in `conversion`,
optionally casts it, and writes it into the target's shards; peak memory is about the largest tensor (twice,
when it is transposed) plus what a writer buffers. No deep-learning framework is imported, except torch to
read or write `pytorch_model.bin`.

Everything is written into a temporary directory beside the destination, renamed into place only when
complete: a failure (or a kill) never leaves a partial checkpoint at the destination.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# The writers are looked up on their modules at call time (tests replace them to simulate a full disk or a kill).
from ..checkpoints import flax_msgpack, keras_h5, safetensors, torch_bin
from ..checkpoints.canonical import CanonicalCheckpoint, open_checkpoint
from ..checkpoints.files import (
    FLAX_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    CheckpointError,
    atomic_write_text,
    numpy_dtype,
    resolve_file,
    staged_directory,
)
from ..checkpoints.keras_h5 import keras_model_name
from ..checkpoints.sharding import parse_size, read_index, save_sharded, write_index
from .tables import (
    BASE_MODEL_PREFIX,
    IDENTITY,
    TABLES,
    Transform,
    check_shapes,
    expected_shapes,
    family_of,
    infer_head,
    plan_to_backend,
)

__all__ = ["convert", "ConversionResult", "TARGETS", "verify_conversion", "VERIFY_TOLERANCES", "AUX_FILES"]

# Files copied beside the weights when present: configs and every tokenizer file Hugging Face writes.
AUX_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "added_tokens.json",
)
DTYPES = ("float32", "float16", "bfloat16")
# Tensors larger than this whose layout does not change are copied in blocks of about this many bytes.
STREAM_BLOCK_BYTES = 16 * 2**20
# Max |Δ| allowed by --verify per weight dtype, for outputs of unit scale: fp32 is the project's equivalence
# bound. Two frameworks' fp32 arithmetic on bit-identical weights differs by a few ulps of the values being
# summed, so the error grows with the outputs: the bound used is tolerance × max(1, max |reference output|)
# per output (GPT-Neo's logits of ±7 differ by 1.2e-5 between PyTorch and Flax; the bound there is 7e-5).
VERIFY_TOLERANCES = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}
# The module each written file kind needs, and the extra that installs it.
WRITER_MODULES = {"msgpack": ("msgpack", "flax"), "h5": ("h5py", "tf"), "bin": ("torch", "pt")}


@dataclasses.dataclass(frozen=True)
class Target:
    """One output layout: which names (table backend), which file kind, and the file HF expects."""

    backend: str  # "pt", "tf_h5" or "flax" (see BACKENDS)
    kind: str  # "safetensors", "bin", "h5" or "msgpack"
    weights_name: str
    metadata: dict[str, str] | None = None


# (--to, --format) → target. The first format of each --to is its default (Hugging Face's save default).
TARGETS: dict[tuple[str, str], Target] = {
    ("pt", "safetensors"): Target("pt", "safetensors", SAFE_WEIGHTS_NAME, {"format": "pt"}),
    ("pt", "bin"): Target("pt", "bin", PT_WEIGHTS_NAME),
    ("tf", "h5"): Target("tf_h5", "h5", TF_WEIGHTS_NAME),
    ("tf", "safetensors"): Target("tf_h5", "safetensors", SAFE_WEIGHTS_NAME, {"format": "tf"}),
    ("flax", "msgpack"): Target("flax", "msgpack", FLAX_WEIGHTS_NAME),
    ("flax", "safetensors"): Target("flax", "safetensors", SAFE_WEIGHTS_NAME, {"format": "flax"}),
    ("safetensors", "safetensors"): Target("pt", "safetensors", SAFE_WEIGHTS_NAME, {"format": "pt"}),
}


def target_for(to: str, fmt: str | None) -> Target:
    """The target layout of `--to` / `--format` (ValueError naming the valid choices otherwise)."""
    choices = [f for t, f in TARGETS if t == to]
    if not choices:
        raise ValueError(f"to must be one of {', '.join(dict.fromkeys(t for t, _ in TARGETS))}, got {to!r}")
    fmt = fmt or choices[0]
    if (to, fmt) not in TARGETS:
        raise ValueError(f"--to {to} writes format {' or '.join(choices)}, not {fmt!r}")
    return TARGETS[(to, fmt)]


@dataclasses.dataclass
class ConversionResult:
    """What `convert` wrote."""

    destination: str
    family: str
    head: str
    target: Target
    files: list[str]
    tensors: int
    total_bytes: int
    verification: list[tuple[str, str, float, float]] = dataclasses.field(default_factory=list)


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    to: str = "pt",
    fmt: str | None = None,
    dtype: str | None = None,
    max_shard_size: int | str = "5GB",
    force: bool = False,
    verify: bool = False,
    progress: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    log: Callable[[str], None] = print,
) -> ConversionResult:
    """Convert the checkpoint at `src` (a directory or Hub id) into a new directory `dst`.

    Args:
        to: "pt", "tf", "flax" or "safetensors" (= "pt" as safetensors).
        fmt: the file format: pt → "safetensors" (default) | "bin"; tf → "h5" (default) | "safetensors";
            flax → "msgpack" (default) | "safetensors" (Hugging Face reads Flax safetensors unsharded only).
        dtype: cast floating tensors to "float32", "float16" or "bfloat16" (None keeps them); config.json's
            `torch_dtype` follows.
        max_shard_size: "5GB"-style limit per file; bigger checkpoints are sharded with an index, as HF does.
        force: replace an existing `dst`.
        verify: load source and target in the installed twins and compare their outputs (see
            `verify_conversion`); raises ValueError above the dtype's tolerance.
        progress: show a tqdm bar over bytes.
        revision, cache_dir, local_files_only, token: Hub download options for `src`.
        log: where notes (and the verification table) are printed.
    Raises:
        FileExistsError: `dst` exists and not `force`. ValueError: bad arguments, an unknown model type, or
        weights that do not match their config (every offending key named). OSError / CheckpointError:
        unreadable source files, or a failed write (nothing is left at `dst`).
    """
    target = target_for(to, fmt)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    limit = parse_size(max_shard_size)
    _require_writer(target)
    dst = os.path.abspath(os.fspath(dst))
    _refuse_overlap(src, dst)
    if os.path.lexists(dst) and not force:
        raise FileExistsError(f"{dst} already exists; pass force=True to replace it")
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    source = open_checkpoint(src, **hub)
    if source.config is None:
        raise CheckpointError(f"{src} has no config.json; the converter needs it to know the model")
    config = source.config
    if getattr(config, "quantization_config", None):  # int8 tensors + scales: no Hugging Face layout holds them
        raise ValueError(f"{src} is an int8 checkpoint (config.json has quantization_config): its safetensors are "
                         "already in the layout every twin's from_quantized(path) reads; there is nothing to convert")
    family = family_of(config)
    head = infer_head(family, source.keys(), config)
    check_shapes(family, source.shapes(), config)

    plan = _target_plan(source, target, family, head, config)
    cast = np.dtype(numpy_dtype(dtype)) if dtype else None
    specs = {name: (_cast_dtype(source.dtype(key), cast), shape) for name, (key, _, shape) in plan.items()}
    sizes = [(name, int(np.prod(specs[name][1], dtype=np.int64)) * specs[name][0].itemsize) for name in plan]
    if target.kind == "safetensors" and target.backend == "flax" and sum(size for _, size in sizes) > limit:
        raise ValueError(
            "Flax-format safetensors cannot be sharded (Hugging Face reads them unsharded only); "
            "use --format msgpack or a larger --max-shard-size"
        )

    def fetch(name: str) -> np.ndarray | Iterator[np.ndarray]:
        key, transform, shape = plan[name]
        target_dtype = specs[name][0]
        if transform is IDENTITY and source.can_read_rows(key) and source.nbytes(key) > STREAM_BLOCK_BYTES:
            return _row_blocks(source, key, shape, target_dtype, bar)
        array = transform.to_backend(source.read_view(key))  # transposes are views of the one tensor read
        if array.ndim and array.nbytes > STREAM_BLOCK_BYTES:
            return _view_blocks(array, target_dtype, bar)
        if array.dtype != target_dtype:
            array = array.astype(target_dtype)
        bar.update(array.nbytes)
        return array

    aliases = _bin_aliases(target, plan, config, head)
    result = ConversionResult(dst, family, head, target, [], len(plan), sum(s for _, s in sizes))
    with staged_directory(dst, overwrite=force) as staging:
        with _progress(progress, sum(s for _, s in sizes)) as bar:
            result.files = save_sharded(
                staging, [(name, size) for name, size in sizes if name not in aliases],
                _shard_writer(target, specs, fetch, aliases, family, head), target.weights_name, limit,
                index_keys=_index_key(target, family, head),
            )
        _add_aliases_to_index(staging, target, aliases)
        _copy_aux_files(src, staging, dtype, hub)
        if verify:  # before the rename: a conversion that fails verification is not kept
            try:
                result.verification = verify_conversion(
                    src, staging, dtype=dtype or _weights_dtype(source), log=log, **hub)
            except ValueError as err:
                kept = f"the previous {dst} is unchanged" if os.path.lexists(dst) else f"{dst} was not created"
                raise ValueError(f"{err}; the conversion was not kept ({kept})") from None
    return result


def _require_writer(target: Target) -> None:
    """ImportError naming the extra when the module that writes `target`'s files is not installed."""
    if target.kind not in WRITER_MODULES:
        return
    module, extra = WRITER_MODULES[target.kind]
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"writing {target.weights_name} needs {module}, which is not installed: "
                          f"pip install 'twinformers[{extra}]'")


def _refuse_overlap(src: str | os.PathLike, dst: str) -> None:
    """ValueError when DST is the local SRC directory, lies inside it, or contains it (--force would replace
    the source)."""
    if not os.path.isdir(src):
        return  # a Hub id: its files live in the Hub cache
    source = os.path.realpath(src)
    target = os.path.realpath(dst)
    if target == source:
        raise ValueError(f"the destination {dst} is the source checkpoint; choose a new directory")
    if os.path.commonpath([source, target]) == source:
        raise ValueError(f"the destination {dst} lies inside the source checkpoint {src}; choose a directory "
                         "outside it")
    if os.path.commonpath([source, target]) == target:
        raise ValueError(f"the destination {dst} contains the source checkpoint {src}; replacing it would "
                         "delete the source")


def _row_blocks(
    source: CanonicalCheckpoint, key: str, shape: tuple[int, ...], dtype: np.dtype, bar: Any
) -> Iterator[np.ndarray]:
    """A big tensor as blocks of rows of about `STREAM_BLOCK_BYTES`, so it is never wholly in memory."""
    row_bytes = max(1, source.nbytes(key) // max(1, shape[0]))
    step = max(1, STREAM_BLOCK_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        block = source.read_rows(key, start, min(start + step, shape[0]))
        block = block.astype(dtype) if block.dtype != dtype else block
        bar.update(block.nbytes)
        yield block


def _view_blocks(array: np.ndarray, dtype: np.dtype, bar: Any) -> Iterator[np.ndarray]:
    """A big transposed (or otherwise non-contiguous) tensor as contiguous blocks of rows of about
    `STREAM_BLOCK_BYTES`: memory is the tensor read plus one block, not the tensor twice (a laid-out copy)."""
    step = max(1, STREAM_BLOCK_BYTES // max(1, array[:1].nbytes))
    for start in range(0, array.shape[0], step):
        block = np.ascontiguousarray(array[start:start + step], dtype=dtype)
        bar.update(block.nbytes)
        yield block


def _cast_dtype(dtype: np.dtype, cast: np.dtype | None) -> np.dtype:
    """Casting touches floating tensors only (ml_dtypes' bfloat16 is not an np.floating subtype)."""
    floating = np.issubdtype(dtype, np.floating) or dtype == numpy_dtype("bfloat16")
    return cast if cast is not None and floating else np.dtype(dtype)


def _weights_dtype(source: CanonicalCheckpoint) -> str:
    names = {source.dtype(key).name for key in source}
    return "float32" if "float32" in names or not names else sorted(names)[0]


def _target_plan(
    source: CanonicalCheckpoint, target: Target, family: str, head: str, config: Any
) -> dict[str, tuple[str, Transform, tuple[int, ...]]]:
    """Target name → (canonical key, transform, target shape), in the order Hugging Face writes (PyTorch:
    state_dict order; TF: model.weights order; Flax: sorted paths). A tied `lm_head.weight` is left out: it
    is `wte` (the .bin re-adds it)."""
    keyed = plan_to_backend(family, target.backend, source.keys(), head=head, config=config)
    layout = "tf" if target.backend == "tf_h5" else "pt"
    order = {_bare(key): i for i, key in enumerate(expected_shapes(config, head, order=layout))}
    items = sorted(keyed.items(), key=lambda item: order.get(_bare(item[0]), len(order)))
    plan = {}
    for key, (name, transform) in items:
        if target.kind == "safetensors" and target.backend == "flax":
            name = name.replace("/", ".")  # Flax safetensors join the param path with "." (FORMATS.md §6)
        plan[name] = (key, transform, transform.backend_shape(source.shape(key)))
    if target.backend == "flax":
        plan = dict(sorted(plan.items()))
    return plan


def _bare(key: str) -> str:
    prefix = BASE_MODEL_PREFIX + "."
    return key[len(prefix):] if key.startswith(prefix) else key


def _bin_aliases(target: Target, plan: dict, config: Any, head: str) -> dict[str, str]:
    """pytorch_model.bin keeps the tied `lm_head.weight`, sharing `transformer.wte.weight`'s storage."""
    wte = f"{BASE_MODEL_PREFIX}.wte.weight"
    if target.kind != "bin" or "lm_head.weight" in plan or wte not in plan:
        return {}
    if head not in ("causal_lm", "double_heads") or not config.tie_word_embeddings:
        return {}
    plan["lm_head.weight"] = plan[wte]
    return {"lm_head.weight": wte}


def _add_aliases_to_index(directory: str, target: Target, aliases: dict[str, str]) -> None:
    """HF's `pytorch_model.bin.index.json` lists the tied copy too, in its partner's shard (FORMATS.md §8)."""
    index_path = os.path.join(directory, f"{target.weights_name}.index.json")
    if not aliases or not os.path.isfile(index_path):
        return
    weight_map, metadata = read_index(index_path)
    for alias, partner in aliases.items():
        weight_map[alias] = weight_map[partner]
    write_index(index_path, dict(sorted(weight_map.items())), metadata["total_size"])


def _index_key(target: Target, family: str, head: str) -> Callable[[str], str] | None:
    if target.backend != "tf_h5":
        return None
    # HF's TF indexes key tensors by the full variable name, Keras model name included (FORMATS.md §8).
    model_name = keras_model_name("TF" + TABLES[family].classes[head])
    return lambda name: f"{model_name}/{name}"


def _shard_writer(
    target: Target, specs: dict, fetch: Callable[[str], np.ndarray], aliases: dict[str, str], family: str, head: str
) -> Callable[[str, list[str]], None]:
    def write(path: str, names: list[str]) -> None:
        shard_specs = {name: specs[name] for name in names}
        if target.kind == "safetensors":
            safetensors.write_safetensors(path, metadata=target.metadata, specs=shard_specs, fetch=fetch)
        elif target.kind == "bin":
            for alias, partner in aliases.items():
                if partner in shard_specs:  # HF puts the tied copy in its partner's shard
                    shard_specs[alias] = specs[partner]
            torch_bin.write_pytorch_bin(path, shard_specs, fetch, aliases)
        elif target.kind == "h5":
            sharded = os.path.basename(path) != target.weights_name
            model_name = keras_model_name("TF" + TABLES[family].classes[head])
            keras_h5.write_tf_h5(path, shard_specs, fetch, model_name=model_name, shard=sharded)
        else:
            flax_msgpack.write_flax_msgpack(path, shard_specs, fetch)

    return write


def _copy_aux_files(src: str | os.PathLike, staging: str, dtype: str | None, hub: dict) -> None:
    for name in AUX_FILES:
        path = resolve_file(src, name, required=False, **hub)
        if path is None:
            continue
        if name == "config.json" and dtype is not None:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            config["torch_dtype"] = dtype
            atomic_write_text(os.path.join(staging, name), json.dumps(config, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copyfile(path, os.path.join(staging, name))


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Any]:
    if not enabled:
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="converting") as bar:
        yield bar


class _NoBar:
    def update(self, n: int) -> None:
        pass


# --------------------------------------------------------------------------------------------- verification
def verify_conversion(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: str = "float32",
    log: Callable[[str], None] = print,
    **hub: Any,
) -> list[tuple[str, str, float, float]]:
    """Load `src` and `dst` in every installed twin and compare their outputs on a fixed padded batch.

    The source is loaded in the first twin available (PyTorch, TensorFlow, Flax); the target in each of them.
    Twins whose framework or model class is not importable are skipped with a note.

    Each output must agree within `VERIFY_TOLERANCES[dtype] × max(1, max |reference output|)`: fp32 rounding
    grows with the values, so the project's 1e-5 bound applies to unit-scale outputs and scales with larger
    ones (see VERIFY_TOLERANCES).

    Returns:
        Rows (twin, output name, max |Δ| over valid positions, bound).
    Raises:
        ValueError: some output differs by more than its bound, or no twin is installed.
    """
    tolerance = VERIFY_TOLERANCES[dtype]
    target = open_checkpoint(dst)
    config = target.config
    family = family_of(config)
    head = infer_head(family, target.keys(), config)
    class_name = TABLES[family].classes[head]
    batch = _verification_batch(config, head)
    twins = {}
    for backend in ("pt", "tf", "flax"):
        try:
            twins[backend] = getattr(importlib.import_module(f"twinformers.{backend}"), class_name)
        except (ImportError, AttributeError) as err:
            log(f"note: skipping the {backend} twin for verification ({type(err).__name__}: {err})")
    if not twins:
        raise ValueError("--verify needs at least one installed twin (pip install 'twinformers[pt]', ...)")
    reference_backend = next(iter(twins))
    reference = _run_twin(reference_backend, twins[reference_backend], os.fspath(src), batch, hub)
    rows = []
    for backend, model_class in twins.items():
        outputs = _run_twin(backend, model_class, os.fspath(dst), batch, {})
        for name, expected in reference.items():
            if name not in outputs:
                continue
            diff = _max_diff(outputs[name], expected, batch["valid"])
            bound = tolerance * max(1.0, _max_abs(expected, batch["valid"]))
            rows.append((backend, name, diff, bound))
            log(f"verify {backend:<4} {name:<24} max |Δ| = {diff:.3e}  (bound {bound:.1e})")
    failed = [f"{backend} {name} {diff:.3e} > {bound:.1e}" for backend, name, diff, bound in rows
              if not diff <= bound]
    if failed:
        raise ValueError(f"verification failed (bound {tolerance:.0e} × max(1, max |output|)): {', '.join(failed)}")
    return rows


def _verification_batch(config: Any, head: str) -> dict[str, np.ndarray]:
    """Fixed inputs: batch 2 × 7 tokens, the second row right-padded by 3 (one row when the config has no
    pad token and the head pools the last token, which then cannot be found)."""
    rng = np.random.default_rng(0)
    length = min(7, int(config.max_position_embeddings))
    rows = 1 if head == "seq_cls" and config.pad_token_id is None else 2
    input_ids = rng.integers(0, config.vocab_size, size=(rows, length)).astype(np.int32)
    attention_mask = np.ones((rows, length), np.int32)
    if rows == 2:
        attention_mask[1, length - 3:] = 0
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "valid": attention_mask.astype(bool)}
    if head == "double_heads":  # (B, C, T) choices and the token each choice is classified at
        batch["input_ids"] = np.stack([input_ids, input_ids[:, ::-1]], axis=1)
        batch["attention_mask"] = np.stack([attention_mask, attention_mask], axis=1)
        batch["mc_token_ids"] = np.array([[length - 1, length - 1], [length - 4, length - 4]][:rows], np.int32)
        batch["valid"] = batch["attention_mask"].astype(bool)
    return batch


def _run_twin(backend: str, model_class: Any, path: str, batch: dict, hub: dict) -> dict[str, np.ndarray]:
    model = model_class.from_pretrained(path, **{k: v for k, v in hub.items() if v not in (None, False)})
    inputs = {k: v for k, v in batch.items() if k != "valid"}
    if backend == "pt":
        import torch

        model.eval()
        with torch.no_grad():
            outputs = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()},
                            output_hidden_states=True)
    else:
        outputs = model(**inputs, output_hidden_states=True)
    arrays = {}
    for field in ("logits", "last_hidden_state", "mc_logits", "start_logits", "end_logits"):
        value = getattr(outputs, field, None)
        if value is not None:
            arrays[field] = _numpy(value)
    for i, hidden in enumerate(getattr(outputs, "hidden_states", None) or ()):
        arrays[f"hidden_states[{i}]"] = _numpy(hidden)
    return arrays


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float()
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float64)


def _max_diff(actual: np.ndarray, expected: np.ndarray, valid: np.ndarray) -> float:
    if actual.shape != expected.shape:
        return float("inf")
    return _max_abs(actual - expected, valid)


def _max_abs(values: np.ndarray, valid: np.ndarray) -> float:
    """max |values| over the valid (unpadded) positions."""
    values = np.abs(values)
    if values.ndim >= valid.ndim and values.shape[: valid.ndim] == valid.shape:
        values = values[valid]  # padded positions hold no meaningful output
    return float(values.max()) if values.size else 0.0
