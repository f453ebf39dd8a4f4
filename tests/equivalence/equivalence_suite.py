"""The logit-equivalence suite's machinery, shared by the tests and `scripts/equivalence_report.py`.

One seeded set of random canonical (PyTorch-layout) weights per model spec is placed into every backend through
`twinformers.conversion.tables.to_backend`; every case builds one set of NumPy inputs, runs it through each backend
once (models and Flax's compiled functions are built once and reused) and the outputs are compared leaf by
leaf on valid (unmasked) query positions only.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from helpers import assert_close, max_abs_diff, tiny_config, to_numpy
from twinformers.conversion.tables import TABLES, expected_shapes, to_backend
from twinformers.model_math import positions_from_mask

BACKENDS = ("pt", "tf", "flax")
PAIRS = (("pt", "tf"), ("pt", "flax"), ("tf", "flax"))
BATCH, SEQ, CHOICES, ENCODER_SEQ = 3, 7, 2, 5
PAD = 0
NUM_LABELS = 3  # classification heads: deliberately not 2 (QA keeps 2: start and end)

# Random weights: LayerNorm weights around 1 and non-zero biases (default init would hide mapping bugs).
# Matrices at 0.1 keep GELU and softmax non-linear and outputs O(1) (|logits| <= ~2): at 0.2, logits reach ~4
# and float32 rounding across backends (~2e-6 relative) already uses most of the 1e-5 absolute bound.
WEIGHT_STD, BIAS_STD, LAYER_NORM_STD = 0.1, 0.1, 0.1

# Heads that take labels.
LABELLED_HEADS = frozenset({"causal_lm", "double_heads", "seq_cls", "token_cls", "qa"})


# --------------------------------------------------------------------------------------------- models
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model class with one config: the family, the head kind, an optional config variant.

    Attributes:
        cases: the case names run on this spec (None: every case that applies to the head).
    """

    family: str
    head: str
    variant: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()
    cases: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        return "-".join(filter(None, (self.family, self.head, self.variant)))

    @property
    def class_name(self) -> str:
        return TABLES[self.family].classes[self.head]

    @property
    def cross_attention(self) -> bool:
        return dict(self.overrides).get("add_cross_attention", False)

    def config(self) -> Any:
        overrides = {"pad_token_id": PAD, **dict(self.overrides)}
        if self.head in ("seq_cls", "token_cls"):
            overrides.setdefault("num_labels", NUM_LABELS)
        return tiny_config(self.family, **overrides)


HEADS_OF = {family: tuple(table.heads) for family, table in TABLES.items()}
_VARIANT_CASES = ("no_mask", "right_padding", "left_padding_positions", "cache_left_padding", "all_inputs",
                  "return_dict_false")
SPECS: tuple[ModelSpec, ...] = (
    *(ModelSpec(family, head) for family in TABLES for head in HEADS_OF[family]),
    ModelSpec("gpt2", "causal_lm", "scaled_upcast",
              (("scale_attn_by_inverse_layer_idx", True), ("reorder_and_upcast_attn", True)), _VARIANT_CASES),
    ModelSpec("gpt2", "causal_lm", "cross_attention", (("add_cross_attention", True),),
              (*_VARIANT_CASES, "cache")),
)
SPEC_BY_ID = {spec.id: spec for spec in SPECS}


def canonical_weights(spec: ModelSpec) -> dict[str, np.ndarray]:
    """The spec's one seeded set of random float32 weights, canonical keys and shapes (tied heads share wte)."""
    config = spec.config()
    rng = np.random.default_rng(zlib.crc32(spec.id.encode()))
    weights = {}
    for key, shape in expected_shapes(config, spec.head).items():
        module = key.rsplit(".", 2)[-2]
        if module.startswith("ln") and key.endswith(".weight"):
            weights[key] = 1.0 + rng.normal(0.0, LAYER_NORM_STD, shape)
        elif key.endswith(".bias"):
            weights[key] = rng.normal(0.0, BIAS_STD, shape)
        else:
            weights[key] = rng.normal(0.0, WEIGHT_STD, shape)
        weights[key] = weights[key].astype(np.float32)
    if "lm_head.weight" in weights and config.tie_word_embeddings:
        weights["lm_head.weight"] = weights["transformer.wte.weight"]
    return weights


def build_model(backend: str, spec: ModelSpec, weights: dict[str, np.ndarray], dtype: str = "float32") -> Any:
    """A `backend` model of `spec` holding `weights`, placed through the conversion table, in inference mode.

    Raises:
        AssertionError: the table's names for this backend and the model's parameters differ.
    """
    config = spec.config()
    family, head = spec.family, spec.head
    placed = to_backend(family, backend, weights, head=head, config=config)
    if backend == "pt":
        import torch

        import twinformers.pt as pt

        model = getattr(pt, spec.class_name)(config).eval()
        missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in placed.items()},
                                                    strict=False)
        # Only a tied head's `lm_head.weight` is left out by the table: it *is* the embedding.
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (spec.id, missing, unexpected)
        assert not missing or model.lm_head.weight is model.transformer.wte.weight, f"{spec.id}: lm_head not tied"
        return model.to(getattr(torch, dtype))
    if backend == "tf":
        import twinformers.tf as tf_models

        model = getattr(tf_models, spec.class_name)(config, dtype=dtype)
        model.build()
        variables = {v.path.split("/", 1)[1]: v for v in model.weights}
        assert set(variables) == set(placed), (spec.id, sorted(set(variables) ^ set(placed)))
        for name, variable in variables.items():
            variable.assign(placed[name].astype(variable.dtype))
        return model
    import jax.numpy as jnp

    import twinformers.flax as flax_models
    from twinformers.flax.modeling_utils import unflatten_params

    model = getattr(flax_models, spec.class_name)(config, dtype=getattr(jnp, dtype), _do_init=False)
    params = unflatten_params({name: jnp.asarray(array) for name, array in placed.items()})
    model.params = params if dtype == "float32" else model.to_bf16(params)
    return model


def backend_input(backend: str, value: Any) -> Any:
    """A NumPy input as `backend` takes it (PyTorch wants tensors; TF and Flax take NumPy)."""
    if backend == "pt" and isinstance(value, np.ndarray):
        import torch

        return torch.from_numpy(value)
    return value


def call_model(backend: str, model: Any, kwargs: dict[str, Any]) -> Any:
    """One forward pass with keyword arguments (NumPy arrays, or the backend's own cache)."""
    kwargs = {name: backend_input(backend, value) for name, value in kwargs.items()}
    if backend == "pt":
        import torch

        with torch.no_grad():
            return model(**kwargs)
    return model(**kwargs)


@dataclasses.dataclass
class Call:
    """One forward pass of a case.

    Attributes:
        kwargs: NumPy inputs and flags.
        valid: bool (*batch, T): query positions to compare (None: all).
        key_valid: bool (*batch, S): cached key positions to compare (None: all).
        continues: whether the previous call's `past_key_values` are passed in.
    """

    kwargs: dict[str, Any]
    valid: np.ndarray | None = None
    key_valid: np.ndarray | None = None
    continues: bool = False


def run_calls(backend: str, model: Any, calls: list[Call], **extra: Any) -> list:
    """NumPy outputs of `calls` in order; a continuing call gets the previous output's (backend-native) cache.

    Args:
        extra: more keyword arguments for every call (e.g. Flax `params=`).
    """
    outputs, native = [], None
    for call in calls:
        kwargs = {**call.kwargs, **extra}
        if call.continues:
            kwargs["past_key_values"] = native.past_key_values
        native = call_model(backend, model, kwargs)
        outputs.append(to_numpy(native))
    return outputs


# --------------------------------------------------------------------------------------------- inputs
@dataclasses.dataclass(frozen=True)
class Case:
    """A named input scenario; `make(spec, rng)` returns its calls, `heads` the heads it applies to."""

    name: str
    description: str
    make: Callable[[ModelSpec, np.random.Generator], list[Call]]
    heads: frozenset[str] = frozenset(HEADS_OF["gpt2"])


def _batch(spec: ModelSpec) -> tuple[int, ...]:
    return (BATCH, CHOICES) if spec.head == "double_heads" else (BATCH,)


def _ids(spec: ModelSpec, rng: np.random.Generator, seq: int = SEQ) -> np.ndarray:
    """Token ids avoiding the padding id, (*batch, T)."""
    return rng.integers(1, spec.config().vocab_size, size=(*_batch(spec), seq))


def _padding(spec: ModelSpec, lengths: tuple[int, ...], side: str, seq: int = SEQ) -> np.ndarray:
    """A 0/1 int mask (*batch, T): row b holds `lengths[b]` real tokens (every choice alike), padded on `side`."""
    rows = np.arange(seq)[None, :] < np.asarray(lengths)[:, None]  # right padding, (B, T)
    if side == "left":
        rows = rows[:, ::-1]
    mask = np.broadcast_to(rows.reshape(BATCH, *(1,) * (len(_batch(spec)) - 1), seq), (*_batch(spec), seq))
    return np.ascontiguousarray(mask).astype(np.int64)


def _positions(mask: np.ndarray) -> np.ndarray:
    return positions_from_mask(mask.reshape(-1, mask.shape[-1])).reshape(mask.shape)


def _extras(spec: ModelSpec, rng: np.random.Generator, mask: np.ndarray | None) -> dict[str, np.ndarray]:
    """Inputs a spec needs in every call: encoder states for cross-attention, summary tokens for double heads."""
    extras = {}
    if spec.cross_attention:
        hidden_size = spec.config().hidden_size
        extras["encoder_hidden_states"] = rng.normal(0.0, 1.0, (BATCH, ENCODER_SEQ, hidden_size)).astype(np.float32)
        extras["encoder_attention_mask"] = (np.arange(ENCODER_SEQ)[None, :] < np.array([[5], [3], [4]])).astype(
            np.int64)
    if spec.head == "double_heads" and mask is not None:
        # Summarize each choice's last real token (the default, the last position, may be padding).
        extras["mc_token_ids"] = _last_valid(mask)
    return extras


def _last_valid(mask: np.ndarray) -> np.ndarray:
    return (mask * np.arange(mask.shape[-1])).argmax(-1)


def _labels(spec: ModelSpec, rng: np.random.Generator, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The head's targets; padded positions are -100 (ignored), spans and summaries stay on real tokens."""
    if spec.head in ("causal_lm", "double_heads"):
        labels = {"labels": np.where(mask == 1, ids, -100)}
        if spec.head == "double_heads":
            labels["mc_labels"] = rng.integers(0, CHOICES, size=(BATCH,))
        return labels
    if spec.head == "seq_cls":
        return {"labels": rng.integers(0, NUM_LABELS, size=(BATCH,))}
    if spec.head == "token_cls":
        return {"labels": np.where(mask == 1, rng.integers(0, NUM_LABELS, size=ids.shape), -100)}
    last = _last_valid(mask)
    start = np.array([rng.integers(0, end + 1) for end in last])
    return {"start_positions": start, "end_positions": np.array([rng.integers(s, end + 1) for s, end in
                                                                  zip(start, last)])}


def _padded(side: str, lengths: tuple[int, ...], with_positions: bool) -> Callable:
    def make(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
        mask = _padding(spec, lengths, side)
        ids = np.where(mask == 1, _ids(spec, rng), PAD)
        kwargs = {"input_ids": ids, "attention_mask": mask, **_extras(spec, rng, mask)}
        if with_positions:
            kwargs["position_ids"] = _positions(mask)
        return [Call(kwargs, valid=mask == 1, key_valid=mask == 1)]

    return make


def _no_mask(seq: int = SEQ) -> Callable:
    def make(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
        return [Call({"input_ids": _ids(spec, rng, seq), **_extras(spec, rng, None)})]

    return make


def _output_flags(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
    [call] = _padded("right", (7, 4, 6), False)(spec, rng)
    call.kwargs.update(output_hidden_states=True, output_attentions=True)
    return [call]


def _random_head_mask(spec: ModelSpec, rng: np.random.Generator) -> np.ndarray:
    """(L, H) float32 of 0 / 0.5 / 1 entries, at least one head switched off."""
    config = spec.config()
    head_mask = rng.choice([0.0, 0.5, 1.0], size=(config.num_hidden_layers, config.num_attention_heads))
    head_mask[0, 0] = 0.0
    return head_mask.astype(np.float32)


def _head_mask(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
    return [Call({"input_ids": _ids(spec, rng), "head_mask": _random_head_mask(spec, rng),
                  "output_attentions": True, **_extras(spec, rng, None)})]


def _all_inputs(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
    """Every optional input (and the head's labels) at once, so a head that drops one on its way to the base
    model or its loss shows."""
    [call] = _output_flags(spec, rng)
    mask = call.kwargs["attention_mask"]
    call.kwargs.update(position_ids=_positions(mask), token_type_ids=_ids(spec, rng),
                       head_mask=_random_head_mask(spec, rng))
    if spec.head in LABELLED_HEADS:
        call.kwargs.update(_labels(spec, rng, call.kwargs["input_ids"], mask))
    return [call]


def _inputs_embeds(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
    embeds = rng.normal(0.0, 1.0, (*_batch(spec), SEQ, spec.config().hidden_size)).astype(np.float32)
    return [Call({"inputs_embeds": embeds, **_extras(spec, rng, None)})]


def _token_type_ids(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
    return [Call({"input_ids": _ids(spec, rng), "token_type_ids": _ids(spec, rng), **_extras(spec, rng, None)})]


def _position_ids(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
    positions = rng.integers(0, spec.config().max_position_embeddings, size=(*_batch(spec), SEQ))
    return [Call({"input_ids": _ids(spec, rng), "position_ids": positions, **_extras(spec, rng, None)})]


def _with_labels(problem: str | None = None) -> Callable:
    def make(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
        [call] = _padded("right", (7, 4, 6), False)(spec, rng)
        call.kwargs.update(_labels(spec, rng, call.kwargs["input_ids"], call.kwargs["attention_mask"]))
        if problem == "multi_label":  # float (B, num_labels) targets make the loss a multi-label BCE
            call.kwargs["labels"] = rng.integers(0, 2, size=(BATCH, NUM_LABELS)).astype(np.float32)
        return [call]

    return make


def _return_dict_false(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
    ids = _ids(spec, rng)
    kwargs = {"input_ids": ids, "return_dict": False, "output_hidden_states": True, "output_attentions": True,
              **_extras(spec, rng, None)}
    if spec.head in LABELLED_HEADS:
        kwargs.update(_labels(spec, rng, ids, np.ones_like(ids)))
    return [Call(kwargs)]


# Incremental decoding: the full forward, then the same tokens as a prefix and two continuations. Left-padded
# rows are long enough that every step ends on a real token (pooled heads summarize a step's last token).
CACHE_SPLITS = (4, 5, 7)
CACHE_LENGTHS = (7, 4, 5)


def _cache(side: str | None) -> Callable:
    def make(spec: ModelSpec, rng: np.random.Generator) -> list[Call]:
        mask = _padding(spec, CACHE_LENGTHS, side) if side else np.ones((*_batch(spec), SEQ), np.int64)
        ids = np.where(mask == 1, _ids(spec, rng), PAD)
        extras = _extras(spec, rng, None)
        # use_cache is left to the config (True): the full forward then reuses the programs Flax compiled for
        # the no-mask and left-padding cases.
        full = {"input_ids": ids, **extras}
        if side:
            full.update(attention_mask=mask, position_ids=_positions(mask))
        calls = [Call(full, valid=mask == 1, key_valid=mask == 1)]
        start = 0
        for end in CACHE_SPLITS:
            step = {"input_ids": ids[..., start:end], **extras}
            if side:
                step.update(attention_mask=mask[..., :end], position_ids=_positions(mask[..., :end])[..., start:])
            calls.append(Call(step, valid=mask[..., start:end] == 1, key_valid=mask[..., :end] == 1,
                              continues=start > 0))
            start = end
        return calls

    return make


# What runs where. Flax compiles one program per input structure, which dominates the suite's runtime, so
# cases that exercise only the shared transformer body run on each family's LM head (its forward is the base
# model's plus a projection, and it returns every output); every other head runs `all_inputs` — all those
# inputs and its labels at once — so each head's plumbing of every argument and its loss are still compared.
# Decoding runs through the base and LM heads; the other heads return caches that every case compares.
LM_ONLY = frozenset({"causal_lm"})
OTHER_HEADS = frozenset(HEADS_OF["gpt2"]) - LM_ONLY
CASES: tuple[Case, ...] = (
    Case("no_mask", "no attention mask", _no_mask()),
    Case("right_padding", "right padding (one row padded)", _padded("right", (7, 4, 7), False)),
    Case("left_padding_positions", "left padding, position_ids derived from the mask",
         _padded("left", (7, 4, 7), True)),
    Case("left_padding", "left padding, position_ids absent", _padded("left", (7, 4, 7), False)),
    # Right padding cannot change a causal model's real tokens (they never see later positions); left padding
    # can, so the batch of unequal lengths — a length-1 row included — is left-padded, as generation pads.
    Case("unequal_lengths", "batch of unequal lengths (1, 7, 4), left-padded, positions from the mask",
         _padded("left", (1, 7, 4), True)),
    Case("cache", "incremental decoding (prefix 4, +1, +2) vs the full forward", _cache(None),
         frozenset({"base", "causal_lm"})),
    Case("cache_left_padding", "incremental decoding, left padding, positions from the mask", _cache("left"),
         LM_ONLY),
    Case("output_flags", "output_hidden_states and output_attentions, right padding", _output_flags, LM_ONLY),
    Case("head_mask", "head_mask (L, H) with 0 / 0.5 / 1 entries", _head_mask, LM_ONLY),
    Case("inputs_embeds", "inputs_embeds instead of input_ids", _inputs_embeds),
    Case("token_type_ids", "token_type_ids", _token_type_ids, LM_ONLY),
    Case("position_ids", "explicit (shuffled) position_ids", _position_ids, LM_ONLY),
    Case("all_inputs", "right padding + position_ids + token_type_ids + head_mask + both output flags + labels",
         _all_inputs, OTHER_HEADS),
    Case("labels", "labels → loss, right padding, -100 on padding", _with_labels(), LM_ONLY),
    Case("labels_multi_label", "float multi-label targets → BCE loss", _with_labels("multi_label"),
         frozenset({"seq_cls"})),
    Case("return_dict_false", "return_dict=False tuples (with loss, hidden states, attentions)", _return_dict_false),
    Case("long_sequence", "the whole position table (19 tokens; > GPT-Neo's window 5)", _no_mask(19), LM_ONLY),
)
CASE_BY_NAME = {case.name: case for case in CASES}


def cases_for(spec: ModelSpec) -> list[Case]:
    """The spec's own case list, or every case for its head."""
    if spec.cases is not None:
        return [CASE_BY_NAME[name] for name in spec.cases]
    return [case for case in CASES if spec.head in case.heads]


def suite_items() -> list[tuple[ModelSpec, Case]]:
    """Every (spec, case) the suite runs."""
    return [(spec, case) for spec in SPECS for case in cases_for(spec)]


# --------------------------------------------------------------------------------------------- comparing
def _where(field: str | None, shape: tuple[int, ...], call: Call) -> np.ndarray | None:
    """The positions of an output leaf to compare: valid query rows (and valid cached keys)."""
    if field == "past_key_values":  # (B*, H, S, D): the cached keys of real tokens
        if call.key_valid is None:
            return None
        keys = call.key_valid.reshape(-1, call.key_valid.shape[-1])
        return keys[:, None, :] if shape[0] == keys.shape[0] and shape[2] == keys.shape[1] else None
    if call.valid is None:
        return None
    if field in ("attentions", "cross_attentions"):  # (B*, H, T, S): the rows of real queries
        rows = call.valid.reshape(-1, call.valid.shape[-1])
        return rows[:, None, :]
    if tuple(shape[: call.valid.ndim]) == call.valid.shape:  # per-token outputs (*batch, T, ...)
        return call.valid
    return None  # pooled outputs and losses are computed from real tokens only


def leaves(actual: Any, expected: Any, name: str, call: Call, field: str | None = None) -> Iterator[tuple]:
    """(name, actual array, expected array, where) for every array of two outputs (dicts/tuples/arrays).

    Raises:
        AssertionError: the two outputs differ in structure (a field missing, tuples of different length).
    """
    if isinstance(expected, dict) or isinstance(actual, dict):
        assert isinstance(actual, dict) and isinstance(expected, dict), f"{name}: one output is not a mapping"
        for key in sorted(set(actual) | set(expected)):
            yield from leaves(actual.get(key), expected.get(key), f"{name}.{key}", call, field or key)
    elif isinstance(expected, (tuple, list)) or isinstance(actual, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and isinstance(expected, (tuple, list)), f"{name}: not a tuple"
        assert len(actual) == len(expected), f"{name}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            yield from leaves(a, e, f"{name}[{i}]", call, field)
    elif expected is None or actual is None:
        assert actual is None and expected is None, f"{name}: {'missing' if actual is None else 'unexpected'}"
    else:
        yield name, actual, expected, _where(field, np.shape(expected), call)


def assert_equivalent(actual: list, expected: list, calls: list[Call], dtype: str = "float32") -> None:
    """Every output leaf of every call within `TOLERANCES[dtype]` on its valid positions."""
    for i, (a, e, call) in enumerate(zip(actual, expected, calls)):
        for name, a_leaf, e_leaf, where in leaves(a, e, f"call{i}" if len(calls) > 1 else "outputs", call):
            assert_close(a_leaf, e_leaf, name, dtype=dtype, where=where)


def max_difference(actual: list, expected: list, calls: list[Call]) -> float:
    """The largest |Δ| over every output leaf of every call (valid positions only), for the report."""
    worst = 0.0
    for a, e, call in zip(actual, expected, calls):
        for _, a_leaf, e_leaf, where in leaves(a, e, "outputs", call):
            worst = max(worst, max_abs_diff(a_leaf, e_leaf, where=where))
    return worst


# --------------------------------------------------------------------------------------------- the suite
def cache_consistency(outputs: list, calls: list[Call]) -> Iterator[tuple[str, Any, Any, np.ndarray | None]]:
    """What must agree within one backend after a cache case (full forward, then the steps): the steps'
    per-token outputs concatenated vs the full forward's (pooled classification logits: the last step's), and
    the last step's cache vs the full forward's.

    Yields:
        (name, from the steps, from the full forward, where) for every array.
    """
    (full, *steps), full_call = outputs, calls[0]
    time_axis = full_call.valid.ndim - 1
    for field in ("last_hidden_state", "logits"):
        value = full.get(field)
        if value is None:
            continue
        if np.shape(value)[: full_call.valid.ndim] == full_call.valid.shape:  # per token
            joined = np.concatenate([step[field] for step in steps], axis=time_axis)
        else:  # pooled over the last token, which only the last step sees
            joined = steps[-1][field]
        yield f"steps.{field}", joined, value, _where(field, np.shape(value), full_call)
    yield from leaves(steps[-1]["past_key_values"], full["past_key_values"], "steps.past_key_values", full_call,
                      "past_key_values")


class Suite:
    """Builds each (spec, backend, dtype) model once and runs each (spec, case, backend, dtype) once, lazily."""

    def __init__(self) -> None:
        self._weights: dict[str, dict[str, np.ndarray]] = {}
        self._models: dict[tuple[str, str, str], Any] = {}
        self._calls: dict[tuple[str, str], list[Call]] = {}
        self._runs: dict[tuple[str, str, str, str], list] = {}

    def weights(self, spec: ModelSpec) -> dict[str, np.ndarray]:
        if spec.id not in self._weights:
            self._weights[spec.id] = canonical_weights(spec)
        return self._weights[spec.id]

    def model(self, spec: ModelSpec, backend: str, dtype: str = "float32") -> Any:
        key = (spec.id, backend, dtype)
        if key not in self._models:
            self._models[key] = build_model(backend, spec, self.weights(spec), dtype)
        return self._models[key]

    def calls(self, spec: ModelSpec, case: Case) -> list[Call]:
        key = (spec.id, case.name)
        if key not in self._calls:
            self._calls[key] = case.make(spec, np.random.default_rng(zlib.crc32(f"{spec.id}/{case.name}".encode())))
        return self._calls[key]

    def run(self, spec: ModelSpec, case: Case, backend: str, dtype: str = "float32") -> list:
        """NumPy outputs of every call of `case` in `backend`; a continuing call gets the backend's own cache."""
        key = (spec.id, case.name, backend, dtype)
        if key not in self._runs:
            self._runs[key] = run_calls(backend, self.model(spec, backend, dtype), self.calls(spec, case))
        return self._runs[key]

    def compare(self, spec: ModelSpec, case: Case, pair: tuple[str, str], dtype: str = "float32") -> None:
        """Assert `pair[1]`'s outputs equal `pair[0]`'s within `TOLERANCES[dtype]`."""
        expected, actual = (self.run(spec, case, backend, dtype) for backend in pair)
        assert_equivalent(actual, expected, self.calls(spec, case), dtype)

    def difference(self, spec: ModelSpec, case: Case, pair: tuple[str, str], dtype: str = "float32") -> float:
        expected, actual = (self.run(spec, case, backend, dtype) for backend in pair)
        return max_difference(actual, expected, self.calls(spec, case))


BF16_SPECS = tuple(SPEC_BY_ID[f"{family}-causal_lm"] for family in TABLES)
BF16_CASES = ("no_mask", "left_padding_positions")


# --------------------------------------------------------------------------------------------- Flax static cache
STATIC_CASE = "cache_left_padding"  # generation's situation: left-padded prompts, positions from the mask
STATIC_SPECS = tuple(SPEC_BY_ID[f"{family}-causal_lm"] for family in TABLES)


def flax_static_cache_pairs(suite: Suite, spec: ModelSpec, case: Case) -> Iterator[tuple]:
    """Flax through `init_cache`'s fixed-size cache — a prefix of 4, then one token at a time (one compiled
    step) — against Flax's full forward of the case's first call.

    Yields:
        (name, from the steps, from the full forward, where) for the per-token output and the cache.
    """
    model = suite.model(spec, "flax")
    full_call, full = suite.calls(spec, case)[0], suite.run(spec, case, "flax")[0]
    ids = full_call.kwargs["input_ids"]
    extras = {k: v for k, v in full_call.kwargs.items() if k.startswith("encoder_")}
    seq_len = ids.shape[-1]
    cache = model.init_cache(ids.shape[0], seq_len)
    field = "logits" if "logits" in full else "last_hidden_state"
    pieces = []
    for start, end in ((0, CACHE_SPLITS[0]), *((t, t + 1) for t in range(CACHE_SPLITS[0], seq_len))):
        kwargs = {"input_ids": ids[:, start:end], "past_key_values": cache, **extras}
        if "attention_mask" in full_call.kwargs:  # the mask so far; the static cache pads it to its length
            kwargs.update(attention_mask=full_call.kwargs["attention_mask"][:, :end],
                          position_ids=full_call.kwargs["position_ids"][:, start:end])
        output = model(**kwargs)
        cache = output.past_key_values
        pieces.append(to_numpy(getattr(output, field)))
    assert int(cache.index) == seq_len, f"static cache index {int(cache.index)} after {seq_len} tokens"
    yield f"static.{field}", np.concatenate(pieces, axis=1), full[field], full_call.valid
    yield from leaves(to_numpy(tuple(cache.key_values)), full["past_key_values"], "static.past_key_values",
                      full_call, "past_key_values")


# --------------------------------------------------------------------------------------------- files
# (writer, file format, reader). LM heads: every native format is read by both other backends, and each
# backend's safetensors by one other backend (rotating), so every writer and every reader of every format is
# used. Other heads (whose files differ only in the head's few tensors): one cycle through the native formats.
ROUND_TRIPS = (
    ("pt", "bin", "tf"), ("tf", "h5", "flax"), ("flax", "msgpack", "pt"),
    ("pt", "bin", "flax"), ("tf", "h5", "pt"), ("flax", "msgpack", "tf"),
    ("pt", "safetensors", "flax"), ("tf", "safetensors", "pt"), ("flax", "safetensors", "tf"),
)
HEAD_ROUND_TRIPS = ROUND_TRIPS[:3]
WEIGHT_FILE = {"bin": "pytorch_model.bin", "h5": "tf_model.h5", "msgpack": "flax_model.msgpack",
               "safetensors": "model.safetensors"}
FILE_SPECS = tuple(spec for spec in SPECS if spec.variant in ("", "cross_attention"))
FILE_CASE = "left_padding_positions"


def round_trips(spec: ModelSpec) -> tuple[tuple[str, str, str], ...]:
    """The (writer, format, reader) combinations run for `spec`."""
    return ROUND_TRIPS if spec.head == "causal_lm" else HEAD_ROUND_TRIPS


def save(suite: Suite, spec: ModelSpec, writer: str, fmt: str, directory: str) -> None:
    """`writer`'s model of `spec` saved to `directory` as `fmt` (`save_pretrained`)."""
    suite.model(spec, writer).save_pretrained(directory, safe_serialization=fmt == "safetensors")
    assert WEIGHT_FILE[fmt] in os.listdir(directory), f"{spec.id} {writer} wrote {os.listdir(directory)}"


def load_and_run(suite: Suite, spec: ModelSpec, reader: str, directory: str) -> list:
    """`reader`'s `from_pretrained(directory)` run on the file case's calls (NumPy outputs).

    Flax's params run through the suite's model of the same class and config, whose programs are compiled
    already; the loaded model must accept them too.
    """
    module = importlib.import_module(f"twinformers.{reader}")
    cls = getattr(module, spec.class_name)
    calls = suite.calls(spec, CASE_BY_NAME[FILE_CASE])
    if reader == "flax":
        loaded, params = cls.from_pretrained(directory, _do_init=False)
        loaded.check_params(params)
        return run_calls(reader, suite.model(spec, "flax"), calls, params=params)
    loaded = cls.from_pretrained(directory)
    return run_calls(reader, loaded.eval() if reader == "pt" else loaded, calls)


# --------------------------------------------------------------------------------------------- generation
GENERATION_CASE = "left_padding_positions"  # left-padded prompts of unequal lengths
MAX_NEW_TOKENS = 8


def greedy_tokens(suite: Suite, spec: ModelSpec, backend: str) -> np.ndarray:
    """(B, P + MAX_NEW_TOKENS) ids from `backend`'s greedy `generate` on the generation case's prompts."""
    call = suite.calls(spec, CASE_BY_NAME[GENERATION_CASE])[0]
    prompts = {name: backend_input(backend, call.kwargs[name]) for name in ("input_ids", "attention_mask")}
    tokens = suite.model(spec, backend).generate(**prompts, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return np.asarray(to_numpy(tokens))


def greedy_margin(suite: Suite, spec: ModelSpec) -> float:
    """The smallest gap between the best and second-best logit over PyTorch's greedy steps: a gap far above the
    1e-5 float32 bound means the ids cannot legitimately differ between backends."""
    import torch

    call = suite.calls(spec, CASE_BY_NAME[GENERATION_CASE])[0]
    prompts = {name: torch.from_numpy(call.kwargs[name]) for name in ("input_ids", "attention_mask")}
    output = suite.model(spec, "pt").generate(**prompts, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                              output_scores=True, return_dict_in_generate=True)
    scores = np.stack([to_numpy(step) for step in output.scores], axis=1)  # (B, N, V)
    best_two = np.sort(scores, axis=-1)[..., -2:]
    return float((best_two[..., 1] - best_two[..., 0]).min())
