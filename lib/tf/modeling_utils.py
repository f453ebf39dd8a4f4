"""`PreTrainedModel`: the TensorFlow base class — input formats, building from shapes, Keras training with the
model's own loss, `from_pretrained` / `save_pretrained`.

Variables are created by one symbolic call of `call` (Keras `compute_output_spec` on placeholder inputs): no
real computation runs, so building costs the same whatever the model size, and every sublayer creates its
variables inside its own name scope. A variable's `.path` minus its first component (the model's name) is
Hugging Face's TF name without `:0` (`transformer/h_._0/attn/c_attn/weight`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.util
import inspect
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np
import optree
import tensorflow as tf

from ..adapters.mixin import is_adapter_name
from ..checkpoints.canonical import open_checkpoint
from ..checkpoints.files import SAFE_WEIGHTS_NAME, TF_WEIGHTS_NAME, numpy_dtype, release_free_memory, scratch_array
from ..checkpoints.keras_h5 import keras_model_name, write_tf_h5
from ..checkpoints.loading import LoadPlan, plan_load, tied_head_keys
from ..checkpoints.quantized import plan_with_scales, quantized_checkpoint_error
from ..checkpoints.safetensors import write_safetensors
from ..checkpoints.sharding import parse_size, plan_shards, save_sharded, staged_checkpoint
from ..configuration import PretrainedConfig, resolve_model_config
from ..conversion.converter import STREAM_BLOCK_BYTES
from ..conversion.tables import TRANSPOSE, Transform, family_of, plan_from_backend, plan_to_backend
from ..generation.config import save_generation_config
from ..inputs import check_model_inputs
from ..outputs import OUTPUT_CLASSES, ModelOutput
from . import ops
from .generation import GenerationMixin
from .lora import LoraMixin, keras_adapter_config, restore_adapters
from .quantization import QuantizationMixin

logger = logging.getLogger(__name__)

__all__ = ["PreTrainedModel", "register_keras_pytrees"]

# Keyword arguments `keras.Model.__init__` accepts besides a config.
_KERAS_KWARGS = ("name", "dtype", "trainable")


_registered = False


def register_keras_pytrees() -> None:
    """Register every output class in Keras' pytree namespace (idempotent), so symbolic calls, `predict` and
    the trainers see the tensors inside. None fields are left out of the leaves, as in `to_tuple()`."""
    global _registered
    if _registered:
        return
    for cls in OUTPUT_CLASSES:
        optree.register_pytree_node(
            cls,
            lambda output: (tuple(output.values()), tuple(output.keys()), tuple(output.keys())),
            lambda names, values, cls=cls: cls(**dict(zip(names, values))),
            namespace="keras",
        )
    _registered = True


class PreTrainedModel(QuantizationMixin, keras.Model, GenerationMixin, LoraMixin):  # ours before Keras' quantize
    """Base of every TensorFlow model: holds the config, accepts Hugging Face's TF input formats, builds its
    variables from shapes, trains with its own loss under `fit`, loads and saves Hugging Face checkpoints.

    Inputs (Hugging Face's "TF models accept two input formats"): keyword arguments, or everything in the first
    positional argument — one tensor (`input_ids`), a list/tuple in `call`'s argument order, or a dict keyed by
    argument name; NumPy arrays or tensors.

    Keras training: `compile(optimizer=...)` without a `loss` makes `fit`/`evaluate` use the model's own loss —
    labels (`labels`; `start_positions`/`end_positions` for QA; `labels`/`mc_labels` for double heads) either in
    the input dict or given as `y` (a tensor for the first label name, or a dict). With a Keras `loss`, it
    receives the logits (a tuple of them for QA and double heads). The model's loss is a float32 scalar: the
    mean over the counted tokens (-100 ignored), as in the PyTorch twin; the double-heads model trains on
    `loss + mc_loss` (whichever are present).
    """

    config_class: type[PretrainedConfig] = PretrainedConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    label_names: tuple[str, ...] = ("labels",)
    _is_generative = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every model class is known to Keras' deserializer by name ("twinformers>GPT2LMHeadModel"), so a `.keras`
        # file loads with `keras.models.load_model` once twinformers.tf is imported.
        super().__init_subclass__(**kwargs)
        keras.saving.register_keras_serializable(package="twinformers")(cls)
        if "__init__" in cls.__dict__:  # sublayers created in __init__ take the model's dtype policy
            cls.__init__ = _under_own_dtype_policy(cls.__dict__["__init__"])

    def __init__(self, config: PretrainedConfig, *inputs: Any, **kwargs: Any) -> None:
        extra = {k: v for k, v in kwargs.items() if k not in _KERAS_KWARGS}
        if inputs or extra:
            raise TypeError(f"{type(self).__name__}() takes a config and Keras' name/dtype only, got {inputs} {extra}")
        super().__init__(**kwargs)
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    # ----------------------------------------------------------------------------------------- properties
    def __dir__(self) -> list[str]:
        # Keras' `.keras` saving walks `dir()` for sublayers and, on loading, marks one visited only after its
        # children: `base_model` (self in a base model) would recurse forever and, in a head, put the weights under
        # "base_model/" instead of "transformer/". The sublayers are reached through their own attributes.
        return [name for name in super().__dir__() if name != "base_model"]

    @property
    def base_model(self) -> keras.layers.Layer:
        return getattr(self, self.base_model_prefix, self)

    @classmethod
    def can_generate(cls) -> bool:
        """Whether the class has a language-modeling head (and so gets a generation config)."""
        return cls._is_generative

    def get_input_embeddings(self) -> keras.layers.Layer:
        return self.base_model.wte

    def get_output_embeddings(self) -> keras.layers.Layer | None:
        return getattr(self, "lm_head", None)

    @property
    def dummy_inputs(self) -> dict[str, keras.KerasTensor]:
        """Placeholder inputs that reach every layer: one token, plus encoder states for cross-attention."""
        inputs = {self.main_input_name: keras.KerasTensor((1, 1), dtype="int32")}
        if getattr(self.config, "add_cross_attention", False):
            hidden_size = self.config.hidden_size
            inputs["encoder_hidden_states"] = keras.KerasTensor((1, 1, hidden_size), dtype=self.compute_dtype)
        return inputs

    # ----------------------------------------------------------------------------------------- Keras serialization
    def get_config(self) -> dict[str, Any]:
        """Keras' config (`model.save("x.keras")`): the model config as its `to_dict()`, plus name and dtype, and
        the LoRA adapters when there are any (`twinformers.tf.lora`)."""
        return {"config": self.config.to_dict(), "name": self.name, "dtype": self.dtype_policy.name,
                "trainable": self.trainable, **keras_adapter_config(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PreTrainedModel:
        """Rebuild the model from `get_config()` (the variables are built; Keras then loads the weights)."""
        config = dict(config)
        model_config = cls.config_class.from_dict(config.pop("config"))
        model = cls(model_config, **{k: v for k, v in config.items() if k in _KERAS_KWARGS})
        model.build()
        if "adapters" in config:
            restore_adapters(model, config["adapters"])
        return model

    # ----------------------------------------------------------------------------------------- building
    def build(self, input_shape: Any = None) -> None:
        """Create every variable from the config's shapes (`input_shape` is not needed and ignored).

        One symbolic call of `call` on `dummy_inputs` traces the model in a scratch graph: sublayers build
        themselves inside their name scopes and nothing is computed. A base model used on its own opens a
        `transformer` scope first: inside a head it *is* the head's `transformer` sublayer (the PyTorch twin's
        layout), and Hugging Face's TF names keep `transformer/` in every class, base models included.
        """
        if self.name == self.base_model_prefix:
            return  # the head's trace is running our `call` next and builds our sublayers there: trace once
        standalone_base = not hasattr(self, self.base_model_prefix)
        scope = keras.name_scope(self.base_model_prefix) if standalone_base else contextlib.nullcontext()
        with scope:
            self.compute_output_spec(**self.dummy_inputs)

    # ----------------------------------------------------------------------------------------- calling
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs = self._inputs_as_kwargs(args, kwargs)
        check_model_inputs(inputs)  # exact shapes, no empty sequences (framework-free, shared)
        ids = inputs.get("input_ids")
        if not tf.executing_eagerly() and tf.is_tensor(ids) and ids.dtype.is_integer:
            # In a graph the model reads ids that depend on their range assertions (see ops.check_ids).
            inputs["input_ids"] = ops.check_ids(ids, self.config.vocab_size, "input_ids", "vocab_size")
        return super().__call__(**inputs)

    def _inputs_as_kwargs(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Hugging Face's input formats → keyword arguments of `call`."""
        names = [n for n in inspect.signature(self.call).parameters if n != "training"]
        if args and isinstance(args[0], Mapping):
            packed, args = dict(args[0]), args[1:]
        elif args and isinstance(args[0], (list, tuple)):
            if len(args[0]) > len(names):
                raise ValueError(f"{type(self).__name__} got {len(args[0])} inputs in a list; it takes at most "
                                 f"{len(names)}: {', '.join(names)}")
            packed, args = dict(zip(names, args[0])), args[1:]
        else:
            packed = {}
        if packed and args:
            raise TypeError(f"{type(self).__name__}: inputs packed in a dict or list take no further positional ones")
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional inputs, got {len(args)}")
        unknown = sorted(set(packed) - set(names))
        if unknown:
            raise ValueError(f"{type(self).__name__} got unknown inputs {unknown}; it takes {', '.join(names)}")
        packed.update(zip(names, args))
        for name, value in kwargs.items():
            if name in packed:
                raise TypeError(f"{type(self).__name__} got multiple values for input {name!r}")
            packed[name] = value
        return packed

    # ----------------------------------------------------------------------------------------- Keras training
    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        return super().fit(self._checked_data(x), *args, **kwargs)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        return super().evaluate(self._checked_data(x), *args, **kwargs)

    def _checked_data(self, x: Any) -> Any:
        """Token ids checked before they reach the compiled step, where XLA drops graph assertions (and a GPU
        gather returns zeros for an out-of-range id): arrays here, a `tf.data.Dataset` by a `map` (tf.data
        functions are never XLA-compiled, so its assertions run)."""
        def check(features: Any) -> None:
            ids = features.get("input_ids") if isinstance(features, Mapping) else features
            if ids is not None and not isinstance(ids, (list, str)) and getattr(ids, "dtype", None) is not None \
                    and np.issubdtype(np.dtype(getattr(ids.dtype, "as_numpy_dtype", ids.dtype)), np.integer):
                ops.check_ids(ids, self.config.vocab_size, "input_ids", "vocab_size")

        if isinstance(x, tf.data.Dataset):
            def checked(*batch: Any) -> Any:
                check(batch[0])
                return batch if len(batch) > 1 else batch[0]

            return x.map(checked)
        check(x)
        return x

    def train_step(self, data: Any) -> dict[str, Any]:
        return super().train_step(self._labels_as_inputs(data))

    def test_step(self, data: Any) -> dict[str, Any]:
        return super().test_step(self._labels_as_inputs(data))

    def _labels_as_inputs(self, data: Any) -> tuple[Any, Any, Any]:
        """Without a compiled loss the model computes its own, so labels given as `y` join the inputs; labels
        found in the inputs become `y` for compiled metrics."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.loss is not None:
            return x, y, sample_weight
        x = dict(x) if isinstance(x, Mapping) else {self.main_input_name: x}
        if y is None:
            labels = {k: x[k] for k in self.label_names if k in x}
            y = next(iter(labels.values())) if len(labels) == 1 else (labels or None)
            return x, y, sample_weight
        if isinstance(y, Mapping):
            labels = dict(y)
        elif isinstance(y, (list, tuple)):
            labels = dict(zip(self.label_names, y))
        else:
            labels = {self.label_names[0]: y}
        unknown = sorted(set(labels) - set(self.label_names))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown label names {unknown}; expected {list(self.label_names)}")
        x.update(labels)
        return x, y, sample_weight

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        if self.loss is not None:
            return super().compute_loss(x, y, _keras_predictions(y_pred), sample_weight, training)
        # Every loss the output carries: the LM and multiple-choice losses of the double-heads model add up.
        losses = [v for k, v in y_pred.items() if k == "loss" or k.endswith("_loss")] \
            if isinstance(y_pred, ModelOutput) else []
        loss = sum(losses[1:], losses[0]) if losses else None
        if loss is None:
            raise ValueError(
                f"{type(self).__name__} was compiled without a loss, so it trains on its own loss, which needs "
                f"labels: pass {' / '.join(self.label_names)} in the input dict or as y, or compile with a loss"
            )
        # Under tf.distribute Keras sums the replicas' gradients and multiplies the tracked loss back by the
        # replica count: each replica's mean loss must come divided by it, as Keras' own losses do.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict[str, Any]:
        return super().compute_metrics(x, y, _keras_predictions(y_pred), sample_weight)

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: PretrainedConfig | str | os.PathLike | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        output_loading_info: bool = False,
        **config_kwargs: Any,
    ) -> PreTrainedModel | tuple[PreTrainedModel, dict[str, list]]:
        """Load a model from a directory or Hub id holding `config.json` and Hugging Face weights.

        Any layout loads, read through the conversion tables one tensor at a time: PyTorch-layout safetensors
        (Hugging Face's default, single or sharded), TF-layout safetensors, `tf_model.h5` (single or sharded,
        read without h5py where it is in h5py's default layout), and `pytorch_model.bin` when torch is installed.
        Files are looked up in Hugging Face's order — safetensors first; without torch `tf_model.h5` comes before
        `pytorch_model.bin`. Every variable is created straight from its checkpoint tensor (no random
        initialization first), so loading needs about 1× the model's bytes. Base-model checkpoints load into
        head models and vice versa; missing variables are initialized randomly and, like unused checkpoint
        tensors, logged.

        Args:
            pretrained_model_name_or_path: checkpoint directory or Hub repository id.
            config: a config (or a path to one) to use instead of the checkpoint's `config.json`.
            dtype: the Keras dtype policy — "float32" (default), "bfloat16" or "float16" (variables and
                computation in that dtype; checkpoint tensors are cast one at a time as they are read), or
                a policy name such as "mixed_bfloat16".
            revision, cache_dir, local_files_only, token: Hub download options.
            output_loading_info: also return {"missing_keys", "unexpected_keys", "mismatched_keys",
                "error_msgs"} (canonical key names).
            **config_kwargs: config attributes to override (e.g. `pad_token_id=0`).
        Raises:
            ValueError: checkpoint shapes that do not match the config (every one named with both shapes).
            OSError: no weights, a missing shard, a truncated or corrupt file.
        """
        path = os.fspath(pretrained_model_name_or_path)
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        config = resolve_model_config(cls.__name__, cls.config_class, path, config, hub, config_kwargs)
        if (error := quantized_checkpoint_error(config, path, "tf")) is not None:
            raise error

        prefer = "h5" if importlib.util.find_spec("torch") is None else None
        weights = open_checkpoint(path, prefer=prefer, **hub)
        with _dtype_policy(dtype):  # sublayers take the global policy when they are created
            model = cls(config, *model_args, **({"dtype": dtype} if dtype is not None else {}))
        loading_info = model._load_weights(weights)
        return (model, loading_info) if output_loading_info else model

    def _canonical_plan(self) -> dict[str, tuple[keras.Variable, str, Transform]]:
        """Our TF name → (variable, canonical key, transform), from the conversion table."""
        if not self.built:
            self.build()
        variables = {v.path.split("/", 1)[1]: v for v in self.weights if not is_adapter_name(v.path)}
        head = "base" if self.base_model is self else None
        family = family_of(self.config)  # int8 models: each `<kernel>_scale` next to its kernel
        plan = plan_with_scales(variables, lambda names: plan_from_backend(family, "tf", names, head=head))
        return {name: (variables[name], key, transform) for name, (key, transform) in plan.items()}

    def _load_weights(self, weights: Any) -> dict[str, list]:
        """Fill every variable the checkpoint holds (canonical key → NumPy, read lazily, one at a time).

        An unbuilt model is built inside a Keras `StatelessScope`, which declares the variables without
        values; each one's initializer is then pointed at its checkpoint tensor, so leaving the scope creates
        the variables from the file one by one and the model's bytes are allocated once. (Building first and
        assigning afterwards held the random initial values and the loaded ones at once: about 2× the
        checkpoint at the peak.) An already built model gets each tensor assigned in turn.
        """
        if self.built:
            plan, load = self._plan_load(weights)
            for var, key, transform in plan.values():
                if key in load.mapping:
                    var.assign(_checkpoint_value(weights, load.mapping[key], transform, var.dtype))
        else:
            with keras.StatelessScope():  # leaving it initializes every variable declared inside
                self.build()
                plan, load = self._plan_load(weights)
                for var, key, transform in plan.values():
                    if key in load.mapping:
                        var._initializer = functools.partial(_checkpoint_value, weights, load.mapping[key], transform)
        return load.report(type(self).__name__)

    def _plan_load(self, weights: Any) -> tuple[dict[str, tuple[keras.Variable, str, Transform]], LoadPlan]:
        """Our variables (as `_canonical_plan`) and which checkpoint tensor fills each (`loading.plan_load`)."""
        plan = self._canonical_plan()
        model_shapes = {key: transform.canonical_shape(tuple(var.shape)) for var, key, transform in plan.values()}
        load = plan_load(
            model_shapes,
            weights.shapes(),
            base_model_prefix=self.base_model_prefix,
            tied_keys=tied_head_keys(self.can_generate(), self.config.tie_word_embeddings, self.base_model_prefix),
        )
        return plan, load

    # ----------------------------------------------------------------------------------------- saving
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        max_shard_size: int | str = "5GB",
    ) -> None:
        """Write `config.json`, `generation_config.json` (LM heads) and the weights.

        Args:
            save_directory: created if needed; an existing file there is an error.
            safe_serialization: `model.safetensors` in the PyTorch layout (canonical keys and shapes,
                `{"format": "pt"}`; every twin and Hugging Face PyTorch read it), or, if False, `tf_model.h5` in
                Hugging Face's TF layout (Keras-2 `save_weights` groups, `:0` names, (1, n) Conv1D biases).
            max_shard_size: above this, shards plus an index (`model.safetensors.index.json` or
                `tf_model.h5.index.json`) are written.
        """
        parse_size(max_shard_size)  # every argument is checked before anything touches the disk
        if self._int8_mode() and not safe_serialization:
            raise ValueError("save_pretrained: an int8 model saves as safetensors only (safe_serialization=True)")
        plan = self._canonical_plan()
        config = copy.deepcopy(self.config)
        config.architectures = [type(self).__name__]  # the PyTorch class name, as Hugging Face TF writes
        canonical = {key: (var, transform) for var, key, transform in plan.values()}

        def fetch(key: str) -> np.ndarray:
            var, transform = canonical[key]
            return transform.to_canonical(var.numpy())

        sizes = [(key, int(np.prod(var.shape)) * np.dtype(var.dtype).itemsize) for key, (var, _) in canonical.items()]

        def write_shard(file: str, keys: list[str]) -> None:
            specs = {k: (np.dtype(canonical[k][0].dtype), canonical[k][1].canonical_shape(
                tuple(canonical[k][0].shape))) for k in keys}
            write_safetensors(file, specs=specs, fetch=fetch, metadata={"format": "pt"})

        head = "base" if self.base_model is self else None
        names = {} if safe_serialization else plan_to_backend(  # h5 names: tf_model.h5 only
            family_of(self.config), "tf_h5", canonical, head=head, config=self.config)
        h5_names = {key: name for key, (name, _) in names.items()}
        model_name = keras_model_name(f"TF{type(self).__name__}")  # Hugging Face's Keras-2 auto name
        sharded = len(plan_shards(sizes, max_shard_size)) > 1

        def write_h5_shard(file: str, keys: list[str]) -> None:
            specs = {h5_names[k]: (np.dtype(canonical[k][0].dtype), names[k][1].backend_shape(
                canonical[k][1].canonical_shape(tuple(canonical[k][0].shape)))) for k in keys}
            by_name = {h5_names[k]: k for k in keys}
            write_tf_h5(file, specs, lambda name: names[by_name[name]][1].to_backend(fetch(by_name[name])),
                        model_name=model_name, shard=sharded)

        weights_name = SAFE_WEIGHTS_NAME if safe_serialization else TF_WEIGHTS_NAME
        # Staged beside `save_directory` and swapped in whole: a kill leaves the old checkpoint or the new one.
        with staged_checkpoint(save_directory, weights_name) as staging:
            if self.can_generate():
                save_generation_config(config, staging)
            config.save_pretrained(staging)
            if safe_serialization:
                save_sharded(staging, sizes, write_shard, weights_name, max_shard_size)
            else:
                save_sharded(staging, sizes, write_h5_shard, weights_name, max_shard_size,
                             index_keys=lambda key: f"{model_name}/{h5_names[key]}")


@contextlib.contextmanager
def _dtype_policy(dtype: str | None) -> Iterator[None]:
    """Keras' global dtype policy set to `dtype` for the block (nothing changes for None)."""
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))  # a name, a policy or a serialized one
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _under_own_dtype_policy(init: Any) -> Any:
    """`init` run with Keras' global dtype policy set to its `dtype=` argument: Keras gives `dtype` to the layer
    it is passed to only, and sublayers created without one take the global policy (a bfloat16 model had
    float32 variables)."""

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        with _dtype_policy(kwargs.get("dtype")):
            init(self, *args, **kwargs)

    return wrapped


def _checkpoint_value(weights: Any, key: str, transform: Transform, shape: Any = None, dtype: Any = None) -> tf.Tensor:
    """Checkpoint tensor `key` in our layout and `dtype`, read with plain file reads into scratch pages that
    become the variable's own memory; usable as a Keras initializer (`shape` is the variable's, already
    checked by `plan_load`)."""
    release_free_memory()  # what the previous variable's temporaries left in the heap
    dtype = numpy_dtype(keras.backend.standardize_dtype(dtype)) if dtype is not None else weights.dtype(key)
    if transform is TRANSPOSE and weights.can_read_rows(key) and weights.nbytes(key) > STREAM_BLOCK_BYTES:
        return _tensor_sharing(_transposed_by_rows(weights, key, dtype))
    raw = scratch_array(weights.shape(key), weights.dtype(key))
    weights.read_into(key, raw)
    array = transform.to_backend(raw)
    if array.dtype != dtype or not array.flags.c_contiguous or array.ctypes.data % _TF_ALIGNMENT:
        cast = scratch_array(array.shape, dtype)  # cast and/or laid out (a transposed kernel) in scratch pages
        np.copyto(cast, array, casting="unsafe")
        array = cast
    return _tensor_sharing(array)


def _transposed_by_rows(weights: Any, key: str, dtype: np.dtype) -> np.ndarray:
    """A big Linear weight (out, in) as our (in, out) kernel in `dtype`, filled from blocks of its rows: the
    destination plus one block in memory, not the whole tensor twice (GPT-J's 413 MB head)."""
    rows, columns = weights.shape(key)
    kernel = scratch_array((columns, rows), dtype)
    step = max(1, STREAM_BLOCK_BYTES // max(1, weights.nbytes(key) // rows))
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        np.copyto(kernel[:, start:stop], weights.read_rows(key, start, stop).T, casting="unsafe")
    return kernel


# TensorFlow adopts a DLPack buffer without copying only at this alignment (EIGEN_MAX_ALIGN_BYTES).
_TF_ALIGNMENT = 64


def _tensor_sharing(array: np.ndarray) -> tf.Tensor:
    """A tensor over `array`'s memory, without a copy (DLPack, then a same-width `bitcast` for dtypes DLPack
    lacks, such as bfloat16).

    A variable created from it adopts that memory once the tensor is dropped: loading holds one copy of each
    tensor. (`tf.Variable(numpy_array)` held three at once — the array, a converted tensor and the variable's
    buffer — which for GPT-J's 413 MB embedding and head was ~0.8 GB above the model at the peak.)
    """
    if array.size == 0:
        return tf.convert_to_tensor(array)
    bits = np.dtype(f"u{array.dtype.itemsize}")
    shared = tf.experimental.dlpack.from_dlpack(array.view(bits).__dlpack__())
    return tf.bitcast(shared, tf.as_dtype(array.dtype)) if array.dtype != bits else shared


def _keras_predictions(y_pred: Any) -> Any:
    """The logits of a model output, for Keras losses and metrics: one tensor, or a tuple of all `*logits`
    fields (QA start/end, double-heads LM/multiple-choice)."""
    if not isinstance(y_pred, ModelOutput):
        return y_pred
    logits = tuple(getattr(y_pred, f.name) for f in dataclasses.fields(y_pred)
                   if f.name.endswith("logits") and getattr(y_pred, f.name) is not None)
    return logits[0] if len(logits) == 1 else logits

