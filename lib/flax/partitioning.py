"""Tensor- and data-parallel training of the Flax twins with `jax.sharding`: partition rules, params placement,
vocabulary padding and a sharded train step.

Devices form a 2-D mesh with axes `("data", "model")`. Batches are split over "data"; parameters follow
Megatron-LM's layout over "model" and are replicated over "data":

- attention and MLP input projections (`c_attn`, `q/k/v_proj`, `c_fc`, `fc_in`) are split by output columns,
  their output projections (`c_proj`, `out_proj`, `fc_out`) by input rows, so each pair needs one all-reduce;
- the word embedding (and an untied `lm_head`) is split over the vocabulary, the position embedding over the
  hidden size;
- LayerNorms, output-projection biases and the small task heads are replicated.

GPT-2's Conv1D keeps Hugging Face's (out, in) kernel, `nn.Dense` kernels are (in, out): the rules below say
"column" or "row" for each family's real layout. The compiler (GSPMD) inserts the collectives; the rules only
choose where each parameter lives, so a sharded model computes what the unsharded one does.

A dimension must divide by its mesh axis. The vocabulary rarely does (50257 is prime-ish), so `pad_vocab`
adds zero rows up to a multiple of the model axis; the train step ignores the padded logits, so training is
unchanged and the padded rows stay zero. `unpad_vocab` cuts them off again before `save_pretrained`.

    mesh = make_mesh(data=2, model=4)
    padded_model, params = pad_vocab(model, model.params, multiple=mesh.shape["model"])
    specs = match_partition_rules(partition_rules(model.config), params)
    params = shard_params(params, mesh, specs)
    train_step, opt_state = make_train_step(padded_model, optax.adamw(1e-4), mesh, params, specs,
                                            vocab_size=model.config.vocab_size)
    params, opt_state, loss = train_step(params, opt_state, input_ids, dropout_rng)
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..configuration import PretrainedConfig
from ..conversion.tables import family_of
from .modeling_utils import PreTrainedModel
from .ops import causal_lm_loss

__all__ = [
    "DATA_AXIS",
    "MODEL_AXIS",
    "PARTITION_RULES",
    "partition_rules",
    "match_partition_rules",
    "make_mesh",
    "pad_vocab",
    "unpad_vocab",
    "shard_params",
    "make_train_step",
]

DATA_AXIS, MODEL_AXIS = "data", "model"
Rules = Sequence[tuple[str, P]]

COLUMN_CONV1D, ROW_CONV1D = P(MODEL_AXIS, None), P(None, MODEL_AXIS)  # GPT-2 Conv1D kernels are (out, in)
COLUMN_DENSE, ROW_DENSE = P(None, MODEL_AXIS), P(MODEL_AXIS, None)  # nn.Dense kernels are (in, out)
SPLIT_BIAS, REPLICATED = P(MODEL_AXIS), P()
VOCAB_EMBEDDING = P(MODEL_AXIS, None)  # (V, E) split over the vocabulary
HIDDEN_EMBEDDING = P(None, MODEL_AXIS)  # (P, E) split over the hidden size

# Rules shared by every family: embeddings, an untied LM head, norms, task heads.
_COMMON_RULES: list[tuple[str, P]] = [
    (r"wte/embedding$", VOCAB_EMBEDDING),
    (r"wpe/embedding$", HIDDEN_EMBEDDING),
    (r"lm_head/kernel$", COLUMN_DENSE),  # (E, V): the vocabulary split, like wte
    (r"lm_head/bias$", SPLIT_BIAS),
    (r"(ln_\w+|ln_f)/(scale|bias)$", REPLICATED),
    (r"(score|classifier|qa_outputs|multiple_choice_head/summary)/(kernel|bias)$", REPLICATED),
]

# Regex (searched in the "/"-joined param path) → PartitionSpec; the first match wins.
PARTITION_RULES: dict[str, list[tuple[str, P]]] = {
    "gpt2": [
        (r"(attn|crossattention)/(c_attn|q_attn)/kernel$", COLUMN_CONV1D),
        (r"(attn|crossattention)/(c_attn|q_attn)/bias$", SPLIT_BIAS),
        (r"(attn|crossattention)/c_proj/kernel$", ROW_CONV1D),
        (r"mlp/c_fc/kernel$", COLUMN_CONV1D),
        (r"mlp/c_fc/bias$", SPLIT_BIAS),
        (r"mlp/c_proj/kernel$", ROW_CONV1D),
        (r"c_proj/bias$", REPLICATED),  # added after the all-reduce of the row split
        *_COMMON_RULES,
    ],
    "gptj": [
        (r"attn/(q_proj|k_proj|v_proj)/kernel$", COLUMN_DENSE),
        (r"attn/out_proj/kernel$", ROW_DENSE),
        (r"mlp/fc_in/kernel$", COLUMN_DENSE),
        (r"mlp/fc_in/bias$", SPLIT_BIAS),
        (r"mlp/fc_out/kernel$", ROW_DENSE),
        (r"mlp/fc_out/bias$", REPLICATED),
        *_COMMON_RULES,
    ],
    "gpt_neo": [
        (r"attention/(q_proj|k_proj|v_proj)/kernel$", COLUMN_DENSE),
        (r"attention/out_proj/kernel$", ROW_DENSE),
        (r"attention/out_proj/bias$", REPLICATED),
        (r"mlp/c_fc/kernel$", COLUMN_DENSE),
        (r"mlp/c_fc/bias$", SPLIT_BIAS),
        (r"mlp/c_proj/kernel$", ROW_DENSE),
        (r"mlp/c_proj/bias$", REPLICATED),
        *_COMMON_RULES,
    ],
}

# Leaves with a vocabulary axis, and which axis: padded by `pad_vocab`.
_VOCAB_AXES = ((r"wte/embedding$", 0), (r"lm_head/kernel$", 1), (r"lm_head/bias$", 0))


def partition_rules(config: PretrainedConfig) -> list[tuple[str, P]]:
    """The partition rules of `config`'s family (GPT-2, GPT-J or GPT-Neo)."""
    return PARTITION_RULES[family_of(config)]


def _path_name(path: tuple) -> str:
    """A pytree key path as "a/b/0/c" (dict keys, attribute names and sequence indices alike)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def match_partition_rules(rules: Rules, tree: Any) -> Any:
    """A tree of `PartitionSpec`s shaped like `tree`: each leaf gets the spec of the first rule whose regex is
    found in its "/"-joined path. Scalars (optimizer step counts) are replicated, so an optax state — whose
    moment trees repeat the param paths — can be matched with the same rules.

    Raises:
        ValueError: listing every non-scalar leaf no rule matches.
    """
    compiled = [(re.compile(pattern), spec) for pattern, spec in rules]
    unmatched = []

    def spec_of(path: tuple, leaf: Any) -> P:
        if np.ndim(leaf) == 0:
            return REPLICATED
        name = _path_name(path)
        for pattern, spec in compiled:
            if pattern.search(name):
                return spec
        unmatched.append(name)
        return REPLICATED

    specs = jax.tree_util.tree_map_with_path(spec_of, tree)
    if unmatched:
        raise ValueError(f"no partition rule matches {len(unmatched)} parameter(s): {', '.join(unmatched)}")
    return specs


def make_mesh(data: int, model: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `("data", "model")` mesh of `data × model` devices (default: all of `jax.devices()`, which must be
    exactly that many). Neighbouring devices share a "model" group, where the traffic is heaviest."""
    devices = list(jax.devices() if devices is None else devices)
    if data < 1 or model < 1 or data * model != len(devices):
        raise ValueError(f"make_mesh: data={data} × model={model} must equal the {len(devices)} devices given")
    return Mesh(np.asarray(devices).reshape(data, model), (DATA_AXIS, MODEL_AXIS))


def _vocab_leaves(params: Any) -> dict[str, tuple[tuple, int]]:
    return {_path_name(path): (path, axis) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
            for pattern, axis in _VOCAB_AXES if re.search(pattern, _path_name(path))}


def _resize_vocab(params: Any, size: int) -> Any:
    """Every vocabulary-sized leaf cut or zero-padded to `size` along its vocabulary axis."""
    vocab_paths = {path: axis for path, axis in _vocab_leaves(params).values()}

    def resize(path: tuple, leaf: Any) -> Any:
        if path not in vocab_paths:
            return leaf
        axis = vocab_paths[path]
        current = leaf.shape[axis]
        if current >= size:
            return jax.lax.slice_in_dim(leaf, 0, size, axis=axis)
        widths = [(0, 0)] * leaf.ndim
        widths[axis] = (0, size - current)
        return jnp.pad(leaf, widths)

    return jax.tree_util.tree_map_with_path(resize, params)


def pad_vocab(model: PreTrainedModel, params: Any, multiple: int) -> tuple[PreTrainedModel, Any]:
    """Pad the vocabulary to a multiple of `multiple` (the model-axis size) so it can be split over devices.

    Args:
        model: a Flax twin; it is not changed.
        params: its params.
        multiple: the padded vocabulary size is the smallest multiple of this ≥ `config.vocab_size`.
    Returns:
        (padded_model, padded_params): a model of the same class whose config has the padded `vocab_size` (it
        holds no params), and params whose new embedding rows / LM-head columns are zero. Its logits for the
        first `vocab_size` ids equal the original model's; the padded ones are extra columns to ignore
        (`make_train_step(vocab_size=...)` does).
    """
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"pad_vocab: multiple must be a positive int, got {multiple!r}")
    config = copy.deepcopy(model.config)
    config.vocab_size = math.ceil(config.vocab_size / multiple) * multiple
    padded_model = type(model)(config, input_shape=model.input_shape, dtype=model.dtype, _do_init=False)
    return padded_model, _resize_vocab(params, config.vocab_size)


def unpad_vocab(params: Any, vocab_size: int) -> Any:
    """The inverse of `pad_vocab`: vocabulary-sized leaves cut back to `vocab_size` (e.g. before saving)."""
    return _resize_vocab(params, vocab_size)


def _check_divisible(params: Any, specs: Any, mesh: Mesh) -> None:
    problems = []

    def check(path: tuple, leaf: Any, spec: P) -> None:
        for dim, axes in enumerate(spec):
            axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
            size = math.prod(mesh.shape[a] for a in axes)
            if size > 1 and leaf.shape[dim] % size:
                problems.append(f"{_path_name(path)} {tuple(leaf.shape)}: dim {dim} ({leaf.shape[dim]}) over mesh "
                                f"axis {'×'.join(axes)} of size {size}")

    jax.tree_util.tree_map_with_path(check, params, specs, is_leaf=lambda x: isinstance(x, P))
    if problems:
        raise ValueError(
            "these parameters cannot be split evenly (pad the vocabulary with pad_vocab, or choose sizes the "
            "model axis divides):\n  " + "\n  ".join(problems)
        )


def shard_params(params: Any, mesh: Mesh, specs: Any) -> Any:
    """Place `params` on `mesh` as `specs` (from `match_partition_rules`) say; each device receives only its
    slice. The result never aliases `params`' buffers, so the train step may donate it and `params` stays valid.
    ValueError, naming each one, for a parameter whose split dimension the mesh axis does not divide."""
    _check_divisible(params, specs, mesh)
    shardings = jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), specs,
                                       is_leaf=lambda x: isinstance(x, P))
    # A compiled copy rather than `device_put`: device_put may hand back the input's own buffer for a replicated
    # leaf (even with may_alias=False), and donating it in the train step would then delete the caller's params.
    return jax.jit(lambda tree: jax.tree_util.tree_map(jnp.copy, tree), out_shardings=shardings)(params)


def make_train_step(
    model: PreTrainedModel,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    params: Any,
    specs: Any,
    vocab_size: int | None = None,
) -> tuple[Callable[..., tuple[Any, Any, jax.Array]], Any]:
    """A jitted causal-LM train step whose params and optimizer state stay sharded as `specs` over `mesh` and
    whose batch is split over the "data" axis.

    Args:
        model: a Flax causal-LM twin (the padded one from `pad_vocab`, if the vocabulary was padded).
        optimizer: any optax transformation; its state is sharded like the params it mirrors.
        mesh: a `("data", "model")` mesh (`make_mesh`).
        params: the sharded params (`shard_params`), used to create the optimizer state.
        specs: the params' PartitionSpecs.
        vocab_size: the real vocabulary size: logits past it (padding) are left out of the loss.
    Returns:
        (train_step, opt_state): `train_step(params, opt_state, input_ids, dropout_rng, attention_mask=None)` →
        (params, opt_state, loss), input_ids (B, T) with B divisible by the "data" axis; labels are the
        input_ids (shifted inside the loss, masked positions ignored). `dropout_rng=None` trains without dropout.
    """
    vocab_size = model.config.vocab_size if vocab_size is None else vocab_size
    param_shardings = jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), specs,
                                             is_leaf=lambda x: isinstance(x, P))
    opt_state = jax.jit(optimizer.init)(params)
    opt_shardings = _optimizer_shardings(opt_state, params, param_shardings, mesh)
    opt_state = jax.device_put(opt_state, opt_shardings)
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS, None))
    replicated = NamedSharding(mesh, REPLICATED)

    def loss_fn(params: Any, input_ids: jax.Array, attention_mask: jax.Array | None, dropout_rng: Any) -> jax.Array:
        logits = model(input_ids, attention_mask=attention_mask, params=params, dropout_rng=dropout_rng,
                       train=dropout_rng is not None).logits
        labels = input_ids if attention_mask is None else jnp.where(attention_mask > 0, input_ids, -100)
        return causal_lm_loss(logits[..., :vocab_size], labels)

    def step(params: Any, opt_state: Any, input_ids: jax.Array, dropout_rng: Any, attention_mask: Any = None):
        loss, grads = jax.value_and_grad(loss_fn)(params, input_ids, attention_mask, dropout_rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jitted = jax.jit(
        step,
        in_shardings=(param_shardings, opt_shardings, batch_sharding, replicated, batch_sharding),
        out_shardings=(param_shardings, opt_shardings, replicated),
        donate_argnums=(0, 1),
    )

    def train_step(params: Any, opt_state: Any, input_ids: Any, dropout_rng: Any = None, attention_mask: Any = None):
        if input_ids.shape[0] % mesh.shape[DATA_AXIS]:
            raise ValueError(f"input_ids batch size {input_ids.shape[0]} is not divisible by the data axis "
                             f"({mesh.shape[DATA_AXIS]} devices)")
        return jitted(params, opt_state, input_ids, dropout_rng, attention_mask)

    return train_step, opt_state


def _optimizer_shardings(opt_state: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
    """Each optimizer-state leaf takes the sharding of the param it mirrors (its path ends with the param's path
    and it has the param's shape, as Adam's moments); anything else (step counts) is replicated."""
    by_path = {
        _path_name(path): (np.shape(leaf), sharding)
        for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                          jax.tree_util.tree_leaves(param_shardings))
    }
    replicated = NamedSharding(mesh, REPLICATED)

    def sharding_of(path: tuple, leaf: Any) -> NamedSharding:
        parts = _path_name(path).split("/")
        for start in range(len(parts)):
            shape, sharding = by_path.get("/".join(parts[start:]), (None, None))
            if sharding is not None and np.shape(leaf) == shape:
                return sharding
        return replicated

    return jax.tree_util.tree_map_with_path(sharding_of, opt_state)
