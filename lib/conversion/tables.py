"""The naming tables: canonical (PyTorch) weight names ↔ TensorFlow names ↔ Flax paths, per family and head,
with the layout transforms between them and the expected shapes of every weight.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..checkpoints.loading import IGNORABLE_BUFFERS, fix_legacy_key, shape_mismatch_error


# --------------------------------------------------------------------------------------------- transforms
class Transform:
    """A named, invertible change of layout from the canonical (PyTorch) array to a backend's array."""

    def __init__(
        self,
        name: str,
        to_backend: Callable[[np.ndarray], np.ndarray],
        to_canonical: Callable[[np.ndarray], np.ndarray],
        backend_shape: Callable[[tuple[int, ...]], tuple[int, ...]],
        canonical_shape: Callable[[tuple[int, ...]], tuple[int, ...]],
        keeps_memory_order: bool,
    ) -> None:
        self.name = name
        self.to_backend = to_backend
        self.to_canonical = to_canonical
        self.backend_shape = backend_shape
        self.canonical_shape = canonical_shape
        # True when both layouts hold the same bytes in the same order (only the shape may differ), so a
        # file can be read straight into the destination buffer.
        self.keeps_memory_order = keeps_memory_order

    def __repr__(self) -> str:
        return f"Transform({self.name!r})"


def _transposed(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 2:
        raise ValueError(f"transpose needs a 2-D tensor, got shape {shape}")
    return shape[::-1]


def _row(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 1:
        raise ValueError(f"reshape_row needs a 1-D tensor, got shape {shape}")
    return (1, shape[0])


def _unrow(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 2 or shape[0] != 1:
        raise ValueError(f"reshape_row expects a (1, n) tensor, got shape {shape}")
    return (shape[1],)


IDENTITY = Transform("identity", lambda a: a, lambda a: a, tuple, tuple, True)
# Linear (out, in) ↔ Dense (in, out), and GPT-2 Conv1D (in, out) ↔ Flax's Conv1D kernel (out, in).
TRANSPOSE = Transform("transpose", lambda a: a.T, lambda a: a.T, _transposed, _transposed, False)
# Hugging Face's TF Conv1D keeps its bias as (1, n) (FORMATS.md §5); PyTorch and Flax use (n,).
RESHAPE_ROW = Transform(
    "reshape_row", lambda a: a.reshape(_row(a.shape)), lambda a: a.reshape(_unrow(a.shape)), _row, _unrow, True
)
TRANSFORMS = {t.name: t for t in (IDENTITY, TRANSPOSE, RESHAPE_ROW)}

# --------------------------------------------------------------------------------------------- leaf rules
# The backends a table maps to: "pt" is the canonical layout itself; "tf" our Keras variables (path without
# the model's own first component); "tf_h5" Hugging Face's TF names (`...:0`) and shapes, as stored in
# `tf_model.h5` and TF-format safetensors; "flax" Hugging Face's Flax param paths (`/`-joined), as stored in
# `flax_model.msgpack` (Flax-format safetensors join them with "." instead).
BACKENDS = ("pt", "tf", "tf_h5", "flax")

# Our Keras Conv1D keeps its bias (n,) like PyTorch and Flax; only HF's h5 layout has (1, n).
TF_CONV1D_BIAS = IDENTITY


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One parameter of a layer kind: its name and layout in every framework, and its canonical shape
    from the layer's two dims (a, b)."""

    pt: str
    tf: str
    flax: str
    tf_transform: Transform
    tf_h5_transform: Transform
    flax_transform: Transform
    shape: Callable[[int, int], tuple[int, ...]]

    def transform(self, backend: str) -> Transform:
        return {"pt": IDENTITY, "tf": self.tf_transform, "tf_h5": self.tf_h5_transform,
                "flax": self.flax_transform}[backend]


_EMBEDDING = Leaf("weight", "embeddings", "embedding", IDENTITY, IDENTITY, IDENTITY, lambda a, b: (a, b))
_LINEAR_WEIGHT = Leaf("weight", "kernel", "kernel", TRANSPOSE, TRANSPOSE, TRANSPOSE, lambda a, b: (b, a))
_BIAS = Leaf("bias", "bias", "bias", IDENTITY, IDENTITY, IDENTITY, lambda a, b: (b,))

# Layer kind → its leaves. The generic rules: Embedding weight ↔ embeddings ↔ embedding; LayerNorm
# weight/bias ↔ gamma/beta ↔ scale/bias; Linear (out, in) ↔ Dense kernel (in, out) in TF and Flax;
# GPT-2 Conv1D (in, out) is kept as is by TF and transposed by Flax.
LAYER_KINDS: dict[str, tuple[Leaf, ...]] = {
    "embedding": (_EMBEDDING,),
    # TFSharedEmbeddings (GPT-J's `wte` in Hugging Face TF) names its matrix `weight`.
    "shared_embedding": (dataclasses.replace(_EMBEDDING, tf="weight"),),
    "layer_norm": (
        Leaf("weight", "gamma", "scale", IDENTITY, IDENTITY, IDENTITY, lambda a, b: (a,)),
        Leaf("bias", "beta", "bias", IDENTITY, IDENTITY, IDENTITY, lambda a, b: (a,)),
    ),
    "conv1d": (
        Leaf("weight", "weight", "kernel", IDENTITY, IDENTITY, TRANSPOSE, lambda a, b: (a, b)),
        Leaf("bias", "bias", "bias", TF_CONV1D_BIAS, RESHAPE_ROW, IDENTITY, lambda a, b: (b,)),
    ),
    "linear": (_LINEAR_WEIGHT, _BIAS),
    "linear_no_bias": (_LINEAR_WEIGHT,),
}


@dataclasses.dataclass(frozen=True)
class Layer:
    """A module with parameters: canonical path (`h.{i}` for every block), kind, dims (a, b) as config
    symbols — V vocab, P positions, D hidden, I inner, C num_labels, S summary size, or ints/`3D`-style
    multiples — and the config flag it exists under (None: always)."""

    path: str
    kind: str
    dims: tuple[str, str]
    when: str | None = None


@dataclasses.dataclass(frozen=True)
class FamilyTable:
    """Everything family-specific about a checkpoint: its layers, its heads and their class names.

    The class names are the one registry of the model classes: every backend's auto classes, package exports
    and distributed block classes, and the tests' class lists, are derived from them (`model_classes`).
    """

    family: str
    prefix: str  # the class-name prefix: `{prefix}Block`, `{prefix}PreTrainedModel`
    backbone: tuple[Layer, ...]
    heads: dict[str, tuple[Layer, ...]]
    classes: dict[str, str]
    inner_size: str  # the config attribute holding I (None → 4·D)
    # Hugging Face's TF models create some layers in another order than PyTorch; their h5 files and shards
    # follow it: block layers in this order (empty: PyTorch's), and heads built before the base model.
    tf_block_order: tuple[str, ...] = ()
    tf_heads_first: tuple[str, ...] = ()


HEADS = ("base", "causal_lm", "double_heads", "seq_cls", "token_cls", "qa")
BASE_MODEL_PREFIX = "transformer"
# Tied parameters: head key → base-model key (the prefix is added for head models).
TIED_WEIGHTS = {"lm_head.weight": "wte.weight"}

_GPT2_BLOCK = (
    Layer("h.{i}.ln_1", "layer_norm", ("D", "D")),
    Layer("h.{i}.attn.c_attn", "conv1d", ("D", "3D")),
    Layer("h.{i}.attn.c_proj", "conv1d", ("D", "D")),
    Layer("h.{i}.ln_2", "layer_norm", ("D", "D")),
    Layer("h.{i}.crossattention.c_attn", "conv1d", ("D", "2D"), when="add_cross_attention"),
    Layer("h.{i}.crossattention.q_attn", "conv1d", ("D", "D"), when="add_cross_attention"),
    Layer("h.{i}.crossattention.c_proj", "conv1d", ("D", "D"), when="add_cross_attention"),
    Layer("h.{i}.ln_cross_attn", "layer_norm", ("D", "D"), when="add_cross_attention"),
    Layer("h.{i}.mlp.c_fc", "conv1d", ("D", "I")),
    Layer("h.{i}.mlp.c_proj", "conv1d", ("I", "D")),
)
_TIED_LM_HEAD = (Layer("lm_head", "linear_no_bias", ("D", "V")),)
_CLASSIFIER_HEADS = {
    "seq_cls": (Layer("score", "linear_no_bias", ("D", "C")),),
    "token_cls": (Layer("classifier", "linear", ("D", "C")),),
    "qa": (Layer("qa_outputs", "linear", ("D", "2")),),
}


def _class_names(prefix: str, causal_lm: str) -> dict[str, str]:
    return {
        "base": f"{prefix}Model", "causal_lm": causal_lm, "seq_cls": f"{prefix}ForSequenceClassification",
        "token_cls": f"{prefix}ForTokenClassification", "qa": f"{prefix}ForQuestionAnswering",
    }


TABLES: dict[str, FamilyTable] = {
    "gpt2": FamilyTable(
        family="gpt2",
        prefix="GPT2",
        backbone=(
            Layer("wte", "embedding", ("V", "D")),
            Layer("wpe", "embedding", ("P", "D")),
            *_GPT2_BLOCK,
            Layer("ln_f", "layer_norm", ("D", "D")),
        ),
        heads={
            "base": (),
            "causal_lm": _TIED_LM_HEAD,
            "double_heads": (*_TIED_LM_HEAD, Layer("multiple_choice_head.summary", "linear", ("D", "S"),
                                                   when="summary_use_proj")),
            **_CLASSIFIER_HEADS,
        },
        classes={**_class_names("GPT2", "GPT2LMHeadModel"), "double_heads": "GPT2DoubleHeadsModel"},
        inner_size="n_inner",
        tf_heads_first=("seq_cls",),
    ),
    "gptj": FamilyTable(
        family="gptj",
        prefix="GPTJ",
        backbone=(
            Layer("wte", "shared_embedding", ("V", "D")),
            Layer("h.{i}.ln_1", "layer_norm", ("D", "D")),
            Layer("h.{i}.attn.k_proj", "linear_no_bias", ("D", "D")),
            Layer("h.{i}.attn.v_proj", "linear_no_bias", ("D", "D")),
            Layer("h.{i}.attn.q_proj", "linear_no_bias", ("D", "D")),
            Layer("h.{i}.attn.out_proj", "linear_no_bias", ("D", "D")),
            Layer("h.{i}.mlp.fc_in", "linear", ("D", "I")),
            Layer("h.{i}.mlp.fc_out", "linear", ("I", "D")),
            Layer("ln_f", "layer_norm", ("D", "D")),
        ),
        heads={
            "base": (),
            "causal_lm": (Layer("lm_head", "linear", ("D", "V")),),  # untied by default, with a bias
            **_CLASSIFIER_HEADS,
            "qa": (Layer("qa_outputs", "linear", ("D", "C")),),  # num_labels wide, unlike GPT-2 / GPT-Neo
        },
        classes=_class_names("GPTJ", "GPTJForCausalLM"),
        inner_size="n_inner",
        tf_block_order=("h.{i}.ln_1", "h.{i}.attn.q_proj", "h.{i}.attn.k_proj", "h.{i}.attn.v_proj",
                        "h.{i}.attn.out_proj", "h.{i}.mlp.fc_in", "h.{i}.mlp.fc_out"),
    ),
    "gpt_neo": FamilyTable(
        family="gpt_neo",
        prefix="GPTNeo",
        backbone=(
            Layer("wte", "embedding", ("V", "D")),
            Layer("wpe", "embedding", ("P", "D")),
            Layer("h.{i}.ln_1", "layer_norm", ("D", "D")),
            Layer("h.{i}.attn.attention.k_proj", "linear_no_bias", ("D", "D")),
            Layer("h.{i}.attn.attention.v_proj", "linear_no_bias", ("D", "D")),
            Layer("h.{i}.attn.attention.q_proj", "linear_no_bias", ("D", "D")),
            Layer("h.{i}.attn.attention.out_proj", "linear", ("D", "D")),
            Layer("h.{i}.ln_2", "layer_norm", ("D", "D")),
            # GPT-Neo reuses GPT-2's MLP names with nn.Linear (out, in) weights.
            Layer("h.{i}.mlp.c_fc", "linear", ("D", "I")),
            Layer("h.{i}.mlp.c_proj", "linear", ("I", "D")),
            Layer("ln_f", "layer_norm", ("D", "D")),
        ),
        heads={"base": (), "causal_lm": _TIED_LM_HEAD, **_CLASSIFIER_HEADS},
        classes=_class_names("GPTNeo", "GPTNeoForCausalLM"),
        inner_size="intermediate_size",
    ),
}

# Alternative class names found in `config.architectures` (TF/Flax saves strip their prefix, but be lenient).
# Every backend also exports them, right after the class they name.
_CLASS_ALIASES = {"GPT2ForCausalLM": "GPT2LMHeadModel"}

# The auto classes of every backend and the head each picks, in export order.
AUTO_CLASSES = {
    "AutoModel": "base",
    "AutoModelForCausalLM": "causal_lm",
    "AutoModelForSequenceClassification": "seq_cls",
    "AutoModelForTokenClassification": "token_cls",
    "AutoModelForQuestionAnswering": "qa",
}


def model_classes(family: str) -> list[str]:
    """The model classes `lib/<backend>/<family>.py` exports from every backend package, in export order: one per
    head (in `HEADS` order), each alias right after its class, then `{prefix}PreTrainedModel`."""
    table = TABLES[family]
    names = []
    for head in HEADS:
        if head in table.classes:
            name = table.classes[head]
            names += [name, *(alias for alias, target in _CLASS_ALIASES.items() if target == name)]
    return [*names, f"{table.prefix}PreTrainedModel"]


def block_class(family: str) -> str:
    """The class of one transformer block (the unit of activation checkpointing and sharding)."""
    return f"{TABLES[family].prefix}Block"


# --------------------------------------------------------------------------------------------- names
@dataclasses.dataclass(frozen=True)
class _Rule:
    """One leaf of one layer: the canonical key template (`h.{i}.attn.c_attn.weight`, no prefix) and
    whether it belongs to the base model."""

    layer: Layer
    leaf: Leaf
    in_base: bool

    @property
    def template(self) -> str:
        return f"{self.layer.path}.{self.leaf.pt}"

    def backend_template(self, backend: str) -> str:
        if backend == "pt":
            return self.template
        path = self.layer.path
        if backend in ("tf", "tf_h5"):
            # Keras names list elements `h_._{i}`; the TF main layer is always `transformer`, even in base models.
            path = path.replace(".", "/").replace("h/{i}", "h_._{i}")
            name = f"{path}/{self.leaf.tf}"
            name = f"{BASE_MODEL_PREFIX}/{name}" if self.in_base else name
            return f"{name}:0" if backend == "tf_h5" else name
        return f"{path.replace('.', '/')}/{self.leaf.flax}"


def _rules(family: str) -> dict[str, _Rule]:
    table = _table(family)
    rules: dict[str, _Rule] = {}
    layers = [(layer, True) for layer in table.backbone]
    layers += [(layer, False) for head in table.heads.values() for layer in head]
    for layer, in_base in layers:
        for leaf in LAYER_KINDS[layer.kind]:
            rule = _Rule(layer, leaf, in_base)
            if rule.template in rules and rules[rule.template] != rule:
                raise AssertionError(f"{family} table has two rules for {rule.template}")
            rules[rule.template] = rule
    return rules


def _table(family: str) -> FamilyTable:
    if family not in TABLES:
        raise ValueError(f"unknown model family {family!r}; twinformers converts {', '.join(TABLES)}")
    return TABLES[family]


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


# A block index in a name, or the `{i}` placeholder of a template.
_LAYER_INDEX = {
    "pt": r"h\.(\d+|\{i\})\.", "tf": r"h_\._(\d+|\{i\})/", "tf_h5": r"h_\._(\d+|\{i\})/", "flax": r"h/(\d+|\{i\})/",
}
_LAYER_TEMPLATE = {"pt": "h.{i}.", "tf": "h_._{i}/", "tf_h5": "h_._{i}/", "flax": "h/{i}/"}
_SEPARATOR = {"pt": ".", "tf": "/", "tf_h5": "/", "flax": "/"}


def _split_name(backend: str, name: str) -> tuple[bool, str, str | None]:
    """A backend name → (has the base-model prefix, template with `{i}`, the layer index or None)."""
    prefix = BASE_MODEL_PREFIX + _SEPARATOR[backend]
    has_prefix = name.startswith(prefix)
    rest = name[len(prefix):] if has_prefix else name
    match = re.match(_LAYER_INDEX[backend], rest)
    if match is None:
        return has_prefix, rest, None
    index = None if match.group(1) == "{i}" else match.group(1)
    return has_prefix, _LAYER_TEMPLATE[backend] + rest[match.end():], index


@functools.cache
def _reverse_rules(family: str, backend: str) -> dict[tuple[bool, str], _Rule]:
    """(prefixed, backend template) → rule: the table read backwards, derived, never written by hand."""
    reverse: dict[tuple[bool, str], _Rule] = {}
    for rule in _rules(family).values():
        name = rule.backend_template(backend).removesuffix(":0")  # looked up with `:0` stripped
        prefixed, template, _ = _split_name(backend, name)
        keys = [(prefixed, template)]
        if rule.in_base and backend in ("pt", "flax"):
            keys.append((True, template))  # base-model keys appear with and without the prefix
        for key in keys:
            if key in reverse:
                raise AssertionError(f"{family} table maps two keys to {backend} name {template}")
            reverse[key] = rule
    return reverse


def _canonical_rule(family: str, key: str) -> tuple[_Rule, bool, str | None]:
    """Canonical key → (its rule, whether it carries the `transformer.` prefix, layer index)."""
    prefixed, template, index = _split_name("pt", key)
    rule = _rules(family).get(template)
    if rule is None or (prefixed and not rule.in_base):
        raise KeyError(key)
    return rule, prefixed, index


def canonical_to_backend_name(family: str, backend: str, key: str, *, head: str | None = None) -> str:
    """The name `backend` gives canonical `key`.

    Examples: ("gpt2", "tf", "transformer.h.0.attn.c_attn.weight") → "transformer/h_._0/attn/c_attn/weight";
    ("gpt2", "tf_h5", "wte.weight") → "transformer/wte/embeddings:0"; ("gptj", "flax", "lm_head.weight") →
    "lm_head/kernel". Flax keeps the canonical key's prefix (base models have none) unless `head` says
    "base" (prefix dropped) or a head model (prefix added).

    Raises:
        ValueError: the family's table has no rule for `key`.
    """
    _check_backend(backend)
    try:
        rule, prefixed, index = _canonical_rule(family, key)
    except KeyError:
        raise ValueError(f"{family} has no parameter {key!r} (not in its conversion table)") from None
    name = rule.backend_template(backend)
    if index is not None:
        name = name.replace("{i}", index)
    if rule.in_base and backend in ("pt", "flax"):
        want_prefix = prefixed if head is None else head != "base"
        if want_prefix:
            name = BASE_MODEL_PREFIX + _SEPARATOR[backend] + name
    return name


def transform_for(family: str, backend: str, key: str) -> Transform:
    """The named transform taking canonical `key`'s array to `backend`'s layout."""
    _check_backend(backend)
    try:
        return _canonical_rule(family, key)[0].leaf.transform(backend)
    except KeyError:
        raise ValueError(f"{family} has no parameter {key!r} (not in its conversion table)") from None


# --------------------------------------------------------------------------------------------- configs
def family_of(config_or_model_type: Any) -> str:
    """"gpt2", "gptj" or "gpt_neo" from a config, a config dict, a model (its `.config`) or a model_type.

    Raises:
        ValueError: any other model type (the message lists the supported ones).
    """
    value = config_or_model_type
    if hasattr(value, "config") and not isinstance(value, (str, dict)):
        value = value.config
    if isinstance(value, dict):
        value = value.get("model_type")
    elif not isinstance(value, str):
        value = getattr(value, "model_type", None)
    if value not in TABLES:
        raise ValueError(f"unknown model type {value!r}; twinformers supports {', '.join(TABLES)}")
    return value


def head_of(config: Any) -> str | None:
    """The head ("base", "causal_lm", ...) named by `config.architectures[0]`, or None when it names none."""
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        return None
    table = _table(family_of(config))
    name = architectures[0]
    for framework_prefix in ("TF", "Flax"):
        if name.startswith(framework_prefix) and name[len(framework_prefix):] in table.classes.values():
            name = name[len(framework_prefix):]
    name = _CLASS_ALIASES.get(name, name)
    return {cls: head for head, cls in table.classes.items()}.get(name)


def infer_head(family: str, keys: Iterable[str], config: Any = None) -> str:
    """The head a checkpoint was saved from: `config.architectures` when it says, else from the keys."""
    head = head_of(config) if config is not None else None
    if head is not None:
        return head
    keys = list(keys)
    found = set()
    for key in keys:
        rule = _rules(family).get(_split_name("pt", fix_legacy_key(key))[1])
        if rule is not None and not rule.in_base:
            found.add(rule.layer.path.split(".")[0])
    for head, layers in _table(family).heads.items():
        if layers and {layer.path.split(".")[0] for layer in layers} == found:
            return head
    if "lm_head" in found:
        return "causal_lm"
    prefix = BASE_MODEL_PREFIX + "."
    return "causal_lm" if any(k.startswith(prefix) for k in keys) and family != "gptj" else "base"


def tie_word_embeddings(family: str, config: Any = None) -> bool:
    """Whether `lm_head.weight` is `wte.weight`: the config's flag, else the family default (GPT-J unties)."""
    if config is not None:
        return bool(config.tie_word_embeddings)
    return family != "gptj"


def _symbols(config: Any, family: str) -> dict[str, int]:
    hidden = int(config.hidden_size)
    inner = getattr(config, _table(family).inner_size, None)
    return {
        "V": int(config.vocab_size),
        "P": int(config.max_position_embeddings),
        "D": hidden,
        "I": int(inner) if inner is not None else 4 * hidden,
        "C": int(config.num_labels),
        # GPT2DoubleHeadsModel forces num_labels = 1; the summary projects to it, or keeps D.
        "S": 1 if getattr(config, "summary_proj_to_labels", True) else hidden,
    }


def _dim(symbol: str, symbols: Mapping[str, int]) -> int:
    match = re.fullmatch(r"(\d*)([A-Z]?)", symbol)
    if match is None or not (match.group(1) or match.group(2)):
        raise AssertionError(f"bad dim {symbol!r} in a conversion table")
    factor = int(match.group(1) or 1)
    return factor * symbols[match.group(2)] if match.group(2) else factor


def _layer_exists(layer: Layer, config: Any) -> bool:
    return layer.when is None or bool(getattr(config, layer.when, False))


def expected_shapes(config: Any, head: str, order: str = "pt") -> dict[str, tuple[int, ...]]:
    """Canonical key → shape of every parameter of a `head` model built from `config`.

    Head models prefix the base model with `transformer.`; "base" models do not. LM heads list the tied
    `lm_head.weight` too (it is in the PyTorch state_dict even when tied; safetensors files leave it out).

    Args:
        config: a GPT2Config, GPTJConfig or GPTNeoConfig. head: one of `HEADS`.
        order: "pt" — PyTorch state_dict order; "tf" — Hugging Face TF `model.weights` order (how its h5
            files and shards are laid out).
    """
    family = family_of(config)
    table = _table(family)
    if head not in table.heads:
        raise ValueError(f"{family} has no head {head!r}; choose one of {', '.join(table.heads)}")
    symbols = _symbols(config, family)
    prefix = "" if head == "base" else BASE_MODEL_PREFIX + "."
    shapes: dict[str, tuple[int, ...]] = {}

    def add(layer: Layer, path: str) -> None:
        if not _layer_exists(layer, config):
            return
        a, b = (_dim(d, symbols) for d in layer.dims)
        for leaf in LAYER_KINDS[layer.kind]:
            shapes[f"{path}.{leaf.pt}"] = leaf.shape(a, b)

    blocks = [layer for layer in table.backbone if "{i}" in layer.path]
    heads_first = order == "tf" and head in table.tf_heads_first
    if order == "tf" and table.tf_block_order:
        blocks.sort(key=lambda layer: table.tf_block_order.index(layer.path))
    for layer in table.heads[head] if heads_first else ():
        add(layer, layer.path)
    for layer in table.backbone:
        if "{i}" not in layer.path:
            if layer is table.backbone[-1]:  # ln_f comes after the blocks
                continue
            add(layer, prefix + layer.path)
    for i in range(int(config.num_hidden_layers)):
        for layer in blocks:
            add(layer, prefix + layer.path.replace("{i}", str(i)))
    add(table.backbone[-1], prefix + table.backbone[-1].path)
    for layer in () if heads_first else table.heads[head]:
        add(layer, layer.path)
    return shapes


def _expected_shape(family: str, key: str, config: Any) -> tuple[int, ...] | None:
    """The shape `config` gives canonical `key`, or None when such a model has no such parameter."""
    rule, _, index = _canonical_rule(family, key)
    if not _layer_exists(rule.layer, config):
        return None
    if index is not None and int(index) >= int(config.num_hidden_layers):
        return None
    symbols = _symbols(config, family)
    return rule.leaf.shape(*(_dim(d, symbols) for d in rule.layer.dims))


# --------------------------------------------------------------------------------------------- plans
def plan_to_backend(
    family: str,
    backend: str,
    keys: Iterable[str],
    *,
    head: str | None = None,
    config: Any = None,
) -> dict[str, tuple[str, Transform]]:
    """Canonical key → (backend name, transform) for every key that has a place in `backend`.

    Dropped on purpose: known ignorable buffers, and the tied `lm_head.weight` when the model ties it
    (`config.tie_word_embeddings`, else the family default) and its partner is present. Legacy
    `gamma`/`beta` names are accepted.

    Raises:
        ValueError: keys the table does not know, or two keys landing on one name — all listed at once.
    """
    _check_backend(backend)
    keys = list(keys)
    present = {_strip_prefix(fix_legacy_key(k)) for k in keys}
    tied = tie_word_embeddings(family, config)
    plan: dict[str, tuple[str, Transform]] = {}
    unknown, produced, duplicates = [], {}, []
    for key in keys:
        fixed = fix_legacy_key(key)
        if tied and fixed in TIED_WEIGHTS and TIED_WEIGHTS[fixed] in present:
            continue
        try:
            name = canonical_to_backend_name(family, backend, fixed, head=head)
        except ValueError:
            if not _is_ignorable(key):
                unknown.append(key)
            continue
        if name in produced:
            duplicates.append(f"{produced[name]!r} and {key!r} → {name!r}")
        produced[name] = key
        plan[key] = (name, transform_for(family, backend, fixed))
    _raise_unmatched(family, "canonical", unknown, duplicates)
    return plan


def plan_from_backend(
    family: str,
    backend: str,
    names: Iterable[str],
    *,
    head: str | None = None,
) -> dict[str, tuple[str, Transform]]:
    """Backend name → (canonical key, transform to apply *backwards*) for every name, from the same table.

    TF names always carry `transformer/`; the canonical keys get the `transformer.` prefix unless `head`
    is "base". Flax (and "pt") keep the name's own prefix unless `head` says otherwise.

    Raises:
        ValueError: names the table does not know, or two names landing on one key — all listed at once.
    """
    _check_backend(backend)
    reverse = _reverse_rules(family, backend)
    plan: dict[str, tuple[str, Transform]] = {}
    unknown, produced, duplicates = [], {}, []
    for name in names:
        bare = name
        if backend == "tf_h5":
            if not name.endswith(":0"):
                unknown.append(name)
                continue
            bare = name[:-2]
        prefixed, template, index = _split_name(backend, fix_legacy_key(bare) if backend == "pt" else bare)
        rule = reverse.get((prefixed, template))
        if rule is None:
            if not (backend == "pt" and _is_ignorable(name)):
                unknown.append(name)
            continue
        key = rule.template if index is None else rule.template.replace("{i}", index)
        if rule.in_base:
            want_prefix = (head != "base") if head is not None or backend in ("tf", "tf_h5") else prefixed
            key = BASE_MODEL_PREFIX + "." + key if want_prefix else key
        if key in produced:
            duplicates.append(f"{produced[key]!r} and {name!r} → {key!r}")
        produced[key] = name
        plan[name] = (key, rule.leaf.transform(backend))
    _raise_unmatched(family, backend, unknown, duplicates)
    return plan


def _strip_prefix(key: str) -> str:
    prefix = BASE_MODEL_PREFIX + "."
    return key[len(prefix):] if key.startswith(prefix) else key


def _is_ignorable(key: str) -> bool:
    return any(re.search(pattern, key) for pattern in IGNORABLE_BUFFERS)


def _raise_unmatched(family: str, what: str, unknown: list[str], duplicates: list[str]) -> None:
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} {what} name(s) match no rule of the {family} table: {', '.join(unknown)}")
    if duplicates:
        problems.append(f"several names land on one target: {'; '.join(duplicates)}")
    if problems:
        raise ValueError(". ".join(problems))


# --------------------------------------------------------------------------------------------- arrays
def to_backend(
    family: str,
    backend: str,
    canonical: Mapping[str, np.ndarray],
    *,
    head: str | None = None,
    config: Any = None,
) -> dict[str, np.ndarray]:
    """Canonical arrays → `backend` names and layouts (views where the layout allows).

    With `config`, every shape is checked against it. Strictness and dropped keys as `plan_to_backend`.

    Raises:
        ValueError: unknown keys, duplicate targets, or shapes that disagree (all listed at once).
    """
    plan = plan_to_backend(family, backend, canonical.keys(), head=head, config=config)
    check_shapes(family, {k: np.shape(canonical[k]) for k in plan}, config)
    return {name: transform.to_backend(np.asarray(canonical[key])) for key, (name, transform) in plan.items()}


def from_backend(
    family: str,
    backend: str,
    arrays: Mapping[str, np.ndarray],
    *,
    head: str | None = None,
    config: Any = None,
) -> dict[str, np.ndarray]:
    """`backend` arrays (names as `canonical_to_backend_name` gives) → canonical keys and layouts.

    Raises:
        ValueError: unknown names, duplicate targets, or shapes that disagree (all listed at once).
    """
    plan = plan_from_backend(family, backend, arrays.keys(), head=head)
    shapes = {}
    bad_layout = []
    for name, (key, transform) in plan.items():
        try:
            shapes[key] = transform.canonical_shape(tuple(np.shape(arrays[name])))
        except ValueError as err:
            bad_layout.append(f"{name}: {err}")
    if bad_layout:
        raise ValueError(f"{len(bad_layout)} {backend} tensor(s) have an impossible layout: " + "; ".join(bad_layout))
    check_shapes(family, shapes, config)
    return {key: transform.to_canonical(np.asarray(arrays[name])) for name, (key, transform) in plan.items()}


def check_shapes(family: str, shapes: Mapping[str, tuple[int, ...]], config: Any = None) -> None:
    """Check canonical shapes against `config` (when given) and each layout's rank; all problems at once.

    Raises:
        ValueError: naming every key whose shape disagrees (with both shapes) or that the config has no place for.
    """
    rows, absent, impossible = [], [], []
    for key, shape in shapes.items():
        fixed = fix_legacy_key(key)
        try:
            transform_for(family, "flax", fixed).backend_shape(tuple(shape))
            transform_for(family, "tf_h5", fixed).backend_shape(tuple(shape))
        except ValueError as err:
            impossible.append(f"{key}: {err}")
            continue
        if config is None:
            continue
        expected = _expected_shape(family, fixed, config)
        if expected is None:
            absent.append(key)
        elif tuple(shape) != expected:
            rows.append((key, tuple(shape), expected))
    if impossible or absent:
        raise ValueError(
            "; ".join([*impossible, *([f"the config has no parameter(s) {', '.join(absent)}"] if absent else [])])
        )
    if rows:
        raise shape_mismatch_error(sorted(rows), f"checkpoint does not match its {family} config")
