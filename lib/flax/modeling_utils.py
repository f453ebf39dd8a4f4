"""The Flax model wrapper base class: parameters, the jitted call, the static cache, checkpoints.

Each user-facing class (`GPT2LMHeadModel`, ...) wraps one `flax.nnx` module (`GPT2LMHeadModel.module_class`) with
Hugging Face's Flax API: `Model(config, input_shape=(1, 1), seed=0, dtype=jnp.float32, _do_init=True)`,
`model.params` (a plain nested dict, exactly the tree of `flax_model.msgpack`), `model(input_ids, ...,
params=None, dropout_rng=None, train=False)`, `init_cache`, `to_fp16/to_bf16/to_fp32`, `from_pretrained`
and `save_pretrained`.

The NNX module runs as a pure function inside `jax.jit`: its graph definition is split off once per class and
config, and each call merges it with the params dict (and the dropout key) while tracing, so no NNX graph
traversal happens on the hot path. `model.nnx_module` hands NNX users the module itself.
"""

from __future__ import annotations

import collections
import copy
import inspect
import json
import logging
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend.core import Var

from ..checkpoints.canonical import open_checkpoint
from ..checkpoints.files import FLAX_WEIGHTS_NAME, SAFE_WEIGHTS_NAME, release_free_memory, scratch_array
from ..checkpoints.flax_msgpack import write_flax_msgpack
from ..checkpoints.loading import plan_load, tied_head_keys
from ..checkpoints.quantized import plan_with_scales, quantized_checkpoint_error, state_dict_position
from ..checkpoints.safetensors import write_safetensors
from ..checkpoints.sharding import parse_size, save_sharded, staged_checkpoint
from ..configuration import PretrainedConfig, resolve_model_config
from ..conversion.tables import Transform, expected_shapes, family_of, head_of, plan_from_backend
from ..generation.config import save_generation_config
from ..inputs import check_model_inputs
from . import ops
from .generation import GenerationMixin
from .lora import LoraMixin, attach_lora_dropout
from .ops import StaticCache
from .quantization import QuantizationMixin, quantize_projections

logger = logging.getLogger(__name__)

__all__ = ["PreTrainedModel", "CrossAttentionPreTrainedModel", "StaticCache", "flatten_params", "unflatten_params"]

Array = jax.Array
Params = dict[str, Any]

# Module arguments that change the traced program (Python values, not arrays).
_STATIC_ARGS = ("deterministic", "use_cache", "output_attentions", "output_hidden_states", "return_dict")
# Jitted programs by (class, dtype, attention implementation, config JSON), least recently used first.
_COMPILED: collections.OrderedDict[tuple, _Programs] = collections.OrderedDict()
_COMPILED_MAX = 64
# Config entries that never change the computation (so models loaded from different paths share programs).
_NOT_COMPUTATIONAL = ("_name_or_path", "architectures", "torch_dtype", "transformers_version")


# --------------------------------------------------------------------------------------------- param trees
def flatten_params(params: Params, sep: str = "/") -> dict[str, Any]:
    """{"transformer": {"wte": {"embedding": x}}} → {"transformer/wte/embedding": x}."""
    flat: dict[str, Any] = {}

    def walk(tree: Any, prefix: str) -> None:
        if isinstance(tree, dict) or hasattr(tree, "items") and not hasattr(tree, "shape"):
            for name, child in tree.items():
                walk(child, f"{prefix}{sep}{name}" if prefix else str(name))
        else:
            flat[prefix] = tree

    walk(params, "")
    return flat


def unflatten_params(flat: dict[str, Any], sep: str = "/") -> Params:
    """Inverse of `flatten_params`."""
    tree: Params = {}
    for path, leaf in flat.items():
        node = tree
        *parents, name = path.split(sep)
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = leaf
    return tree


def _aligned_empty(shape: tuple[int, ...], dtype: Any, alignment: int = 64) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on an `alignment`-byte boundary (NumPy only
    guarantees 16): XLA's CPU client then uses it in place instead of copying it."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    offset = -raw.ctypes.data % alignment
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


# --------------------------------------------------------------------------------------------- the programs
def _graph_and_rng_state(build: Any) -> tuple[nnx.GraphDef, Params]:
    """The graph definition of `build(PRNGKey(0))` and its dropout streams' state, from one trace.

    The streams' keys are a few `fold_in`s of the seed, but building the module also initializes every
    parameter: jitting the whole build compiled those initializers only for XLA to drop them as dead code
    (with a second trace for the graph definition, most of a GPT-2 124M `from_pretrained`: 15-16 s against
    5-8 s now). Here one trace is cut down to the equations the streams depend on, and those few run
    eagerly: the same values, no initializer compiled or run.
    """
    graphdefs = []

    def rng_state(rng: Array) -> Any:
        graphdef, _, state = nnx.split(build(rng), nnx.Param, ...)
        graphdefs.append(graphdef)
        return state

    closed, shapes = jax.make_jaxpr(rng_state, return_shape=True)(jax.random.PRNGKey(0))
    needed = {v for v in closed.jaxpr.outvars if isinstance(v, Var)}
    live = []
    for eqn in reversed(closed.jaxpr.eqns):
        if needed.intersection(eqn.outvars):
            live.append(eqn)
            needed.update(v for v in eqn.invars if isinstance(v, Var))
    leaves = jax.core.eval_jaxpr(closed.jaxpr.replace(eqns=live[::-1]), closed.consts, jax.random.PRNGKey(0))
    state = jax.tree.unflatten(jax.tree.structure(shapes), [jnp.asarray(leaf) for leaf in leaves])
    # Plain arrays, not Variables: merging them inside a trace makes fresh Variables there (reseedable).
    return graphdefs[0], nnx.to_pure_dict(state)


class _Programs:
    """One NNX module class and config as pure functions: the graph definition (fixed at trace time) and the
    dropout streams' state, split off once; `apply` and `init` jitted over them.

    Args:
        module_class: the `nnx.Module` class. config: its config (a private copy). dtype: computation dtype.
    """

    def __init__(self, module_class: type[nnx.Module], config: PretrainedConfig, dtype: Any) -> None:
        def build(rng: Array) -> nnx.Module:
            params_rng, dropout_rng = jax.random.split(rng)
            module = module_class(config, dtype=dtype, rngs=nnx.Rngs(params=params_rng, dropout=dropout_rng))
            if getattr(config, "quantization_config", None):  # int8 projections (twinformers.flax.quantization)
                quantize_projections(module, dtype, fill=False)
            return module

        def init(rng: Array, input_shape: tuple[int, ...] = (1, 1)) -> Params:
            # NNX creates every parameter in __init__, so the dummy input shape no longer matters.
            _, params, _ = nnx.split(build(rng), nnx.Param, ...)
            return nnx.to_pure_dict(params)

        def apply(params: Params, rngs: dict[str, Array], inputs: dict[str, Any], deterministic: bool = True,
                  lora: dict[str, Any] | None = None, **static: Any) -> Any:
            module = self.bind(params, rngs.get("dropout"), deterministic)
            if lora:  # an unfolded LoRA adapter, for its dropout (twinformers.flax.lora)
                attach_lora_dropout(module, lora, rngs["dropout"])
            with ops.host_checked_ids():  # the wrapper checks concrete ids before the call (`_check_values`)
                return module(**inputs, **static)

        self.graphdef, self.rng_state = _graph_and_rng_state(build)
        self.apply = jax.jit(apply, static_argnames=_STATIC_ARGS)
        self.init = jax.jit(init, static_argnums=1)

    def bind(self, params: Params, dropout_rng: Array | None = None, deterministic: bool = True) -> nnx.Module:
        """The NNX module holding `params` (a nested dict), in eval mode unless `deterministic` is False, its
        dropout streams reseeded from `dropout_rng`. Inside `jax.jit` this costs only trace time."""
        module = nnx.merge(self.graphdef, params, self.rng_state)
        if dropout_rng is not None:
            nnx.reseed(module, dropout=dropout_rng)
        return nnx.view(module, deterministic=deterministic)


class LinenCompat:
    """`model.module` for code written against the linen twin (kept for one release, removed in the next):
    `apply({"params": params}, *args, deterministic=True, rngs=None, method=None, **kwargs)` and
    `init(rng, *args, **kwargs) -> {"params": ...}` over the NNX module.

    `apply` builds the NNX module from the params and calls it (or `method(module, *args, **kwargs)`); run it
    inside your own `jax.jit` to pay that only once. New code: `model(...)`, or `model.nnx_module`.
    """

    def __init__(self, programs: _Programs) -> None:
        self._programs = programs

    def apply(self, variables: dict[str, Params], *args: Any, deterministic: bool = True,
              rngs: dict[str, Array] | None = None, method: Any = None, **kwargs: Any) -> Any:
        _warn_linen_compat()
        module = self._programs.bind(variables["params"], (rngs or {}).get("dropout"), deterministic)
        if method is None:
            return module(*args, **kwargs)
        return method(module, *args, **kwargs)

    def init(self, rngs: Array | dict[str, Array], *args: Any, **kwargs: Any) -> dict[str, Params]:
        _warn_linen_compat()
        rng = rngs["params"] if isinstance(rngs, dict) else rngs
        return {"params": self._programs.init(rng)}


def _warn_linen_compat() -> None:
    warnings.warn(
        "model.module is a compatibility adapter for the former flax.linen modules and will be removed in the "
        "next release: call the model itself, or use model.nnx_module (a flax.nnx.Module)",
        DeprecationWarning,
        stacklevel=3,
    )


def _module_options(module_class: type[nnx.Module]) -> list[str]:
    """The options of an nnx module class: the public class attributes its classes (below `nnx.Module`) declare
    or annotate, such as `block_class` or `lm_head_bias`; methods and properties are not options."""
    names: list[str] = []
    for klass in reversed(module_class.__mro__[: module_class.__mro__.index(nnx.Module)]):
        declared = [*inspect.get_annotations(klass), *vars(klass)]
        for name in declared:
            value = vars(klass).get(name)
            if name.startswith("_") or name in names or inspect.isfunction(value) or isinstance(value, property):
                continue
            names.append(name)
    return names


# --------------------------------------------------------------------------------------------- the wrapper
class PreTrainedModel(GenerationMixin, LoraMixin, QuantizationMixin):
    """Base of every Flax model wrapper.

    Args:
        config: the family's config. input_shape: shape of the dummy `input_ids` used to create the params.
        seed: PRNG seed of the random init. dtype: computation dtype (the params keep theirs; see `to_bf16`).
        _do_init: False skips the random init: the params are only described (`params_shape_tree`, via
            `jax.eval_shape`) and must be passed to every call, as `from_pretrained(..., _do_init=False)` does.
    """

    config_class: type[PretrainedConfig] = PretrainedConfig
    module_class: type[nnx.Module]
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    _is_generative = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A family's subclass of a model written once (`class GPTJModel(DecoderModel, GPTJPreTrainedModel)` with
        `block_class = GPTJBlock`, `class GPTJForCausalLM(ModelForCausalLM, ...)` with `base_model_class =
        GPTJModel`) that names no `module_class` of its own gets one: a subclass of the inherited nnx module with
        the module's options (its class attributes) as this class sets them, a wrapper standing for its module.
        Its qualified name, `GPTJModel.module_class`, is where pickle finds it.

        A `forward` method in the class body is the forward pass of its module, as in PyTorch (`self` is the nnx
        module): it becomes the generated module's `__call__` and leaves the wrapper, whose `__call__` stays
        Hugging Face's. It may not call `super()` (its class is the wrapper's)."""
        super().__init_subclass__(**kwargs)
        module_class = getattr(cls, "module_class", None)
        forward = vars(cls).get("forward")
        if module_class is None or "module_class" in vars(cls) and forward is None:
            return
        options = {}
        for name in _module_options(module_class):
            value = getattr(cls, name, None)
            if isinstance(value, type) and issubclass(value, PreTrainedModel):
                value = value.module_class
            if value is not None:
                options[name] = value
        namespace = dict(options, __module__=cls.__module__, __qualname__=f"{cls.__qualname__}.module_class",
                         __doc__=cls.__doc__)
        if forward is not None:
            namespace["__call__"] = forward
            del cls.forward
        cls.module_class = type(f"{cls.__name__}Module", (module_class,), namespace)

    def __init__(
        self,
        config: PretrainedConfig,
        input_shape: tuple[int, ...] = (1, 1),
        seed: int = 0,
        dtype: Any = jnp.float32,
        _do_init: bool = True,
    ) -> None:
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.dtype = dtype
        self.input_shape = tuple(input_shape)
        self.key = jax.random.PRNGKey(seed)
        self._module_args = frozenset(inspect.signature(self.module_class.__call__).parameters) - {"self"}
        # Abstract shapes only: no random numbers are drawn for this.
        self._params_shape_tree = jax.eval_shape(self._compiled().init, self.key, self.input_shape)
        self._params: Params | None = self.init_weights(self.key, self.input_shape) if _do_init else None
        self._is_initialized = _do_init

    # ----------------------------------------------------------------------------------------- params
    def init_weights(self, rng: Array, input_shape: tuple[int, ...], params: Params | None = None) -> Params:
        """Random params (normal with the config's `initializer_range`, GPT-2's residual projections scaled
        by 1/√(2·n_layer)); with `params`, only the paths `params` lacks are random. `input_shape` is kept
        for Hugging Face's signature: NNX modules create every parameter when they are built."""
        random_params = self._compiled().init(rng, tuple(input_shape))
        if params is None:
            return random_params
        flat = flatten_params(random_params)
        flat.update({path: leaf for path, leaf in flatten_params(params).items() if path in flat})
        return unflatten_params(flat)

    def _compiled(self) -> _Programs:
        """The jitted programs, shared by every model of this class with an equal config and dtype.

        Keyed by the config's current contents, so a config changed after a call gets programs of its own
        instead of replaying ones traced with the old values.
        """
        config = {k: v for k, v in self.config.to_dict().items() if k not in _NOT_COMPUTATIONAL}
        key = (type(self), jnp.dtype(self.dtype).name, self.config._attn_implementation,
               json.dumps(config, sort_keys=True, default=str))
        compiled = _COMPILED.get(key)
        if compiled is None:
            compiled = _Programs(self.module_class, copy.deepcopy(self.config), self.dtype)
            _COMPILED[key] = compiled
            if len(_COMPILED) > _COMPILED_MAX:
                _COMPILED.popitem(last=False)
        else:
            _COMPILED.move_to_end(key)
        return compiled

    @property
    def params(self) -> Params:
        if not self._is_initialized:
            raise ValueError(
                "this model was built with _do_init=False, so it holds no params: pass `params=` to each call, "
                "or set `model.params = params`"
            )
        return self._params

    @params.setter
    def params(self, params: Params) -> None:
        self.check_params(params)
        self._params = params
        self._is_initialized = True

    @property
    def nnx_module(self) -> nnx.Module:
        """The model as a `flax.nnx.Module` holding `self.params`, in eval mode (dropout off).

        For `nnx.Optimizer`, `nnx.split`/`nnx.merge`, LoRA-style wrapping; `nnx.view(module, deterministic=False)`
        turns dropout on (reseed it with `nnx.reseed(module, dropout=key)`). The module shares the params' arrays
        but not the dict: after training it, write the result back with
        `model.params = nnx.to_pure_dict(nnx.state(module, nnx.Param))`.
        """
        return self._compiled().bind(self.params)

    @property
    def module(self) -> LinenCompat:
        """Deprecated linen-style access (`model.module.apply(...)`); see `LinenCompat`."""
        return LinenCompat(self._compiled())

    @property
    def params_shape_tree(self) -> Params:
        """The params' shapes and dtypes as `jax.ShapeDtypeStruct` leaves (no memory)."""
        return self._params_shape_tree

    def check_params(self, params: Params) -> None:
        """ValueError naming every path that is missing, unexpected or of the wrong shape for this config."""
        expected = flatten_params(self._params_shape_tree)
        given = flatten_params(params)
        problems = [f"  missing {path} {tuple(leaf.shape)}" for path, leaf in expected.items() if path not in given]
        problems += [f"  unexpected {path}" for path in given if path not in expected]
        problems += [
            f"  {path}: shape {tuple(np.shape(given[path]))} vs expected {tuple(leaf.shape)}"
            for path, leaf in expected.items()
            if path in given and tuple(np.shape(given[path])) != tuple(leaf.shape)
        ]
        if problems:
            raise ValueError(
                f"params do not match {type(self).__name__} for this config ({len(problems)} problem(s)):\n"
                + "\n".join(problems)
            )

    def _cast_floating(self, params: Params, dtype: Any, mask: Any = None) -> Params:
        def cast(x: Any, keep: bool = True) -> Any:
            return jnp.asarray(x, dtype) if keep and _is_float(x) else x

        if mask is None:
            return jax.tree_util.tree_map(cast, params)
        return jax.tree_util.tree_map(cast, params, mask)

    def to_bf16(self, params: Params, mask: Any = None) -> Params:
        """Floating params cast to bfloat16 (a new tree; `mask`, a tree of bools, limits which leaves)."""
        return self._cast_floating(params, jnp.bfloat16, mask)

    def to_fp16(self, params: Params, mask: Any = None) -> Params:
        """Floating params cast to float16 (a new tree; `mask`, a tree of bools, limits which leaves)."""
        return self._cast_floating(params, jnp.float16, mask)

    def to_fp32(self, params: Params, mask: Any = None) -> Params:
        """Floating params cast to float32 (a new tree; `mask`, a tree of bools, limits which leaves)."""
        return self._cast_floating(params, jnp.float32, mask)

    # ----------------------------------------------------------------------------------------- cache
    def init_cache(self, batch_size: int, max_length: int) -> StaticCache:
        """A zeroed `StaticCache` for `batch_size` rows and up to `max_length` positions: pass it as
        `past_key_values`, then the `past_key_values` each call returns, so every step keeps its shapes.

        Args:
            batch_size: rows (for GPT2DoubleHeadsModel, batch × choices).
            max_length: positions the cache holds, at most the model's position table.
        """
        config = self.config
        if not 0 < max_length <= config.max_position_embeddings:
            raise ValueError(
                f"max_length={max_length} must be in [1, {config.max_position_embeddings}] "
                "(n_positions / max_position_embeddings)"
            )
        num_heads = config.num_attention_heads
        shape = (batch_size, num_heads, max_length, config.hidden_size // num_heads)
        key_values = tuple(
            (jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)) for _ in range(config.num_hidden_layers)
        )
        return StaticCache(key_values=key_values, index=jnp.zeros((), jnp.int32))

    # ----------------------------------------------------------------------------------------- calling
    def __call__(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        params: Params | None = None,
        past_key_values: Any = None,
        dropout_rng: Array | None = None,
        train: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        token_type_ids: Array | None = None,
        head_mask: Array | None = None,
        inputs_embeds: Array | None = None,
        encoder_hidden_states: Array | None = None,
        encoder_attention_mask: Array | None = None,
        use_cache: bool | None = None,
        labels: Array | None = None,
        mc_token_ids: Array | None = None,
        mc_labels: Array | None = None,
        start_positions: Array | None = None,
        end_positions: Array | None = None,
    ) -> Any:
        """Run the model; jitted, so each new input shape or flag combination compiles once.

        Args:
            input_ids, attention_mask, position_ids, past_key_values, token_type_ids, head_mask, inputs_embeds,
                encoder_hidden_states, encoder_attention_mask, use_cache, labels, mc_token_ids, mc_labels,
                start_positions, end_positions, output_attentions, output_hidden_states, return_dict: as the
                module's `__call__` (e.g. `GPT2Model.forward`); an argument this class does not take raises
                TypeError. NumPy arrays are accepted.
            params: the params to run with (default `self.params`).
            dropout_rng: PRNG key of the dropout layers; needed with `train=True`, which turns dropout on.
        Returns:
            The module's output dataclass (a pytree), or its `to_tuple()` with `return_dict=False`.
        """
        inputs = dict(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask,
            inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, mc_token_ids=mc_token_ids, labels=labels,
            mc_labels=mc_labels, start_positions=start_positions, end_positions=end_positions,
        )
        flags = dict(
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )
        return self._call_module(params, dropout_rng, train, inputs, flags)

    def _call_module(
        self,
        params: Params | None,
        dropout_rng: Array | None,
        train: bool,
        inputs: dict[str, Any],
        static: dict[str, Any],
    ) -> Any:
        """Check the arguments, then run the jitted module (traced once per input shape and flag set)."""
        inputs = {name: value for name, value in inputs.items() if value is not None}
        static = {name: value for name, value in static.items() if value is not None}
        refused = sorted((set(inputs) | set(static)) - self._module_args)
        if refused:
            raise TypeError(f"{type(self).__name__} does not take {', '.join(refused)}")
        params, lora = self.call_params(params, train)  # the active LoRA adapter (twinformers.flax.lora)
        if params is None:
            params = self.params
        else:
            self.check_params(params)
        if train and dropout_rng is None:
            raise ValueError("train=True needs a dropout_rng (a jax.random.PRNGKey) for the dropout layers")
        inputs = {
            name: jnp.asarray(value) if isinstance(value, (np.ndarray, list, tuple, int)) and name != "past_key_values"
            else value
            for name, value in inputs.items()
        }
        self._check_values(inputs)
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        return self._compiled().apply(params, rngs, inputs, deterministic=not train, lora=lora, **static)

    def _check_values(self, inputs: dict[str, Any]) -> None:
        """Checks that need concrete values, done before tracing (inside `jax.jit` they are skipped)."""
        config = self.config
        check_model_inputs(inputs)  # exact shapes, no empty sequences (framework-free, shared)
        ops.check_ids(inputs.get("input_ids"), config.vocab_size, "input_ids", "vocab_size")
        ops.check_ids(inputs.get("token_type_ids"), config.vocab_size, "token_type_ids", "vocab_size")
        ops.check_ids(
            inputs.get("position_ids"), config.max_position_embeddings, "position_ids", "max_position_embeddings"
        )
        tokens = inputs.get("input_ids", inputs.get("inputs_embeds"))
        if tokens is None:
            return
        seq_len = tokens.shape[-1] if "input_ids" in inputs else tokens.shape[-2]
        if "mc_token_ids" in inputs:  # an index into each choice's T positions
            ops.check_ids(inputs["mc_token_ids"], seq_len, "mc_token_ids", "seq_len")
        cache = inputs.get("past_key_values")
        if isinstance(cache, StaticCache) and not isinstance(cache.index, jax.core.Tracer):
            if int(cache.index) + seq_len > cache.max_length:
                raise ValueError(
                    f"the static cache holds {cache.max_length} positions: {int(cache.index)} are filled and "
                    f"{seq_len} more do not fit; call init_cache with a larger max_length"
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={jnp.dtype(self.dtype).name}, config={self.config.to_json_string()})"

    @classmethod
    def can_generate(cls) -> bool:
        """Whether the class has a language-modeling head (and so gets a generation config)."""
        return cls._is_generative

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: PretrainedConfig | str | os.PathLike | None = None,
        dtype: Any = jnp.float32,
        param_dtype: Any = None,
        input_shape: tuple[int, ...] = (1, 1),
        seed: int = 0,
        _do_init: bool = True,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        output_loading_info: bool = False,
        **config_kwargs: Any,
    ) -> Any:
        """Load a model from a directory or Hub id holding `config.json` and Hugging Face weights of any layout.

        Files are looked up in Hugging Face's Flax order — `flax_model.msgpack` (and its index) first, then
        `model.safetensors` (and its index, which Hugging Face's Flax cannot read), `pytorch_model.bin`
        (and its index), `tf_model.h5` — and read through the conversion tables, one tensor at a time
        straight into the params, so loading needs about 1× the checkpoint in memory. Parameters keep the
        checkpoint's dtype (bf16 stays bf16); `dtype` is the computation dtype. Base-model checkpoints load
        into head models and vice versa; missing parameters are initialized randomly and, like unexpected
        ones, logged.

        Args:
            pretrained_model_name_or_path: checkpoint directory or Hub repository id.
            config: a config (or a path to one) to use instead of the checkpoint's `config.json`.
            dtype: computation dtype. input_shape, seed: as the constructor.
            param_dtype: None keeps the checkpoint's dtype; "bfloat16", "float16" or "float32" (or a jnp dtype)
                casts the floating params as they are read, one tensor at a time (no copy of the whole model
                in the file's dtype, unlike loading and then `to_bf16`).
            _do_init: False returns `(model, params)` with a model that holds no params.
            revision, cache_dir, local_files_only, token: Hub download options.
            output_loading_info: also return {"missing_keys", "unexpected_keys", "mismatched_keys",
                "error_msgs"} (canonical key names) as the last element.
            **config_kwargs: config attributes to override (e.g. `pad_token_id=0`).
        Raises:
            ValueError: checkpoint shapes that do not match the config (every one named with both shapes).
            OSError: no weights, a missing shard, a truncated or corrupt file.
        """
        path = os.fspath(pretrained_model_name_or_path)
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        config = resolve_model_config(cls.__name__, cls.config_class, path, config, hub, config_kwargs)
        if (error := quantized_checkpoint_error(config, path, "flax")) is not None:
            raise error

        weights = open_checkpoint(path, prefer="msgpack", **hub)
        model = cls(config, *model_args, input_shape=input_shape, seed=seed, dtype=dtype, _do_init=False)
        release_free_memory()  # what tracing and compiling the model's programs left in the C heap (~0.1x of GPT-2)
        params, loading_info = model._load_params(weights, param_dtype)
        if _do_init:
            model.params = params
            result: tuple = (model,)
        else:
            result = (model, params)
        if output_loading_info:
            result += (loading_info,)
        return result[0] if len(result) == 1 else result

    def _canonical_plan(self) -> dict[str, tuple[str, Transform]]:
        """Flax param path → (canonical key, transform), from the conversion table."""
        family = family_of(self.config)  # int8 models: each `kernel_scale` next to its kernel
        return plan_with_scales(flatten_params(self._params_shape_tree),
                                lambda names: plan_from_backend(family, "flax", names))

    def _load_params(self, weights: Any, param_dtype: Any = None) -> tuple[Params, dict[str, list]]:
        """Params read from `weights` (canonical key → NumPy, read lazily), random where missing; floating
        params cast to `param_dtype` (None: as stored)."""
        shape_tree = flatten_params(self._params_shape_tree)
        plan = self._canonical_plan()
        model_shapes = {key: transform.canonical_shape(tuple(shape_tree[path].shape))
                        for path, (key, transform) in plan.items()}
        load = plan_load(
            model_shapes,
            weights.shapes(),
            base_model_prefix=self.base_model_prefix,
            tied_keys=tied_head_keys(self.can_generate(), self.config.tie_word_embeddings, self.base_model_prefix),
        )
        flat: dict[str, Array] = {}
        for path, (key, transform) in plan.items():
            if key not in load.mapping:
                continue
            source = load.mapping[key]
            stored = weights.dtype(source)
            target = np.dtype(jnp.dtype(param_dtype)) if param_dtype is not None and _is_float(stored) else stored
            if transform.keeps_memory_order and target == stored:
                array = _aligned_empty(weights.shape(source), stored)
                weights.read_into(source, array)  # plain file reads where the format allows (no resident map)
                array = transform.to_backend(array)  # a reshape at most: still the aligned buffer
            else:  # a transposed or cast copy of this one tensor, from scratch pages freed right after
                raw = scratch_array(weights.shape(source), stored)
                weights.read_into(source, raw)
                layout = transform.to_backend(raw)
                array = _aligned_empty(layout.shape, target)
                np.copyto(array, layout, casting="unsafe")
                del raw, layout
            # The CPU device adopts a 64-byte-aligned host buffer without copying it.
            flat[path] = jax.device_put(array, may_alias=True)
            del array
        if load.missing_keys:
            random = flatten_params(self.init_weights(self.key, self.input_shape))
            flat.update({path: random[path] for path in shape_tree if path not in flat})
        return unflatten_params({path: flat[path] for path in shape_tree}), load.report(type(self).__name__)

    # ----------------------------------------------------------------------------------------- saving
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        params: Params | None = None,
        safe_serialization: bool = True,
        max_shard_size: int | str = "5GB",
    ) -> None:
        """Write `config.json`, `generation_config.json` (LM heads) and the weights.

        Args:
            save_directory: created if needed; an existing file there is an error.
            params: the params to save (default `self.params`).
            safe_serialization: `model.safetensors` in the PyTorch layout (canonical keys and shapes,
                `{"format": "pt"}`; any twin and Hugging Face PyTorch read it), or, if False,
                `flax_model.msgpack` in Hugging Face's Flax tree.
            max_shard_size: above this, shards plus an index (`model.safetensors.index.json` or
                `flax_model.msgpack.index.json`) are written.
        """
        parse_size(max_shard_size)  # every argument is checked before anything touches the disk
        if self.quantization_mode and not safe_serialization:
            raise ValueError("save_pretrained: an int8 model saves as safetensors only (safe_serialization=True)")
        params = self.params if params is None else params
        self.check_params(params)
        config = copy.deepcopy(self.config)
        config.architectures = [type(self).__name__]

        flat = flatten_params(params)
        plan = self._canonical_plan()
        canonical = {key: (path, transform) for path, (key, transform) in plan.items()}

        def fetch(key: str) -> np.ndarray:
            path, transform = canonical[key]
            return transform.to_canonical(np.asarray(flat[path]))

        def write_shard(file: str, keys: list[str]) -> None:
            specs = {k: (np.dtype(flat[canonical[k][0]].dtype), canonical[k][1].canonical_shape(
                tuple(flat[canonical[k][0]].shape))) for k in keys}
            write_safetensors(file, specs=specs, fetch=fetch, metadata={"format": "pt"})

        def write_msgpack_shard(file: str, paths: list[str]) -> None:
            specs = {p: (np.dtype(flat[p].dtype), tuple(flat[p].shape)) for p in paths}
            write_flax_msgpack(file, specs, lambda p: np.asarray(flat[p]))

        weights_name = SAFE_WEIGHTS_NAME if safe_serialization else FLAX_WEIGHTS_NAME
        # Staged beside `save_directory` and swapped in whole: a kill leaves the old checkpoint or the new one.
        with staged_checkpoint(save_directory, weights_name) as staging:
            if self.can_generate():
                save_generation_config(config, staging)
            config.save_pretrained(staging)
            if safe_serialization:
                # PyTorch's state_dict order, so shards hold the tensors Hugging Face's would.
                order = {key: i for i, key in enumerate(expected_shapes(config, head_of(config)))}
                keys = sorted(canonical, key=lambda key: state_dict_position(order, key))
                sizes = [(key, int(flat[canonical[key][0]].nbytes)) for key in keys]
                save_sharded(staging, sizes, write_shard, weights_name, max_shard_size)
            else:
                sizes = [(path, int(flat[path].nbytes)) for path in sorted(flat)]
                save_sharded(staging, sizes, write_msgpack_shard, weights_name, max_shard_size)


class CrossAttentionPreTrainedModel(PreTrainedModel):
    """Base of the wrappers of a family with cross-attention (GPT-2): `__call__` in Hugging Face's Flax GPT-2
    argument order, the encoder inputs fourth and fifth, then `params`, `past_key_values`, `dropout_rng`,
    `train`, ... as in `PreTrainedModel.__call__`."""

    def __call__(self, input_ids: Array | None = None, attention_mask: Array | None = None,
                 position_ids: Array | None = None, encoder_hidden_states: Array | None = None,
                 encoder_attention_mask: Array | None = None, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(
            input_ids, attention_mask, position_ids, *args,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask, **kwargs,
        )
