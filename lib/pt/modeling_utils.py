"""`PreTrainedModel`: the PyTorch base class — weights init and tying, `from_pretrained` / `save_pretrained`.

Loading is low-memory: the model is built on the `meta` device (no parameter memory), then each parameter
is allocated once in its final dtype and the checkpoint tensor is read straight into it (plain file reads,
no resident memory map), so the peak resident memory above the imports stays about 1× the checkpoint
(Hugging Face needs 2×). Mask and rotary tables are built from NumPy, so they never live on `meta`.

The meta model is built without weight initialization (`_MetaWithoutInit`): every value is read from the
checkpoint or initialized later on real memory. Random fills on `meta` run PyTorch's Python reference
kernels, which import `torch._dynamo` and with it `triton`; after TensorFlow is loaded, importing triton
crashes the process (docs/troubleshooting.md), so loading must not reach them.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint

from ..checkpoints.canonical import CanonicalCheckpoint, open_checkpoint
from ..checkpoints.files import (
    PT_WEIGHTS_INDEX_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_NAME,
    atomic_output,
    bfloat16_dtype,
    scratch_array,
)
from ..checkpoints.loading import plan_load, tied_head_keys
from ..checkpoints.quantized import quantized_checkpoint_error
from ..checkpoints.safetensors import write_safetensors
from ..checkpoints.sharding import parse_size, read_index, save_sharded, staged_checkpoint, write_index
from ..configuration import PretrainedConfig, resolve_model_config
from ..errors import InputError
from ..generation.config import save_generation_config
from ..inputs import check_model_inputs
from .generation import GenerationMixin
from .lora import LoraMixin
from .ops import Conv1D, numpy_view
from .quantization import QuantizationMixin

logger = logging.getLogger(__name__)

__all__ = ["PreTrainedModel", "ATTN_IMPLEMENTATIONS"]

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float64": torch.float64}


# In-place fills that only write values; on a meta tensor (no values) they are skipped.
_VALUE_FILLS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_})


class _MetaWithoutInit(TorchFunctionMode):
    """Inside `with torch.device("meta"), _MetaWithoutInit():` modules are built with no value fills:
    `torch.nn.init.*` and the fills above return their meta tensor untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes its tensor by keyword
        skip = func in _VALUE_FILLS or getattr(func, "__module__", None) == "torch.nn.init"
        if skip and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


class PreTrainedModel(nn.Module, GenerationMixin, LoraMixin, QuantizationMixin):
    """Base of every PyTorch model: holds the config, initializes and ties weights, loads and saves
    Hugging Face-layout checkpoints.

    Subclasses set `config_class`, and `_tied_weights_keys` when their output embedding may share the input
    embedding. Text generation (`generate()`) is added later by a mixin from `twinformers.pt.generation`;
    `can_generate()` already tells which classes get it.
    """

    config_class: type[PretrainedConfig] = PretrainedConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _tied_weights_keys: list[str] | None = None
    _is_generative = False

    def __init__(self, config: PretrainedConfig, *inputs: Any, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        if inputs or kwargs:
            raise TypeError(f"{type(self).__name__}() takes only a config, got extra arguments {inputs} {kwargs}")
        self.config = config
        if config._attn_implementation is None:
            config._attn_implementation = "sdpa"
        if config._attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {config._attn_implementation!r}"
            )
        self.gradient_checkpointing = False
        self.register_forward_pre_hook(_check_call_inputs, with_kwargs=True)

    # ----------------------------------------------------------------------------------------- properties
    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix, self)

    @property
    def dtype(self) -> torch.dtype:
        for param in self.parameters():
            if param.is_floating_point():
                return param.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def can_generate(cls) -> bool:
        """Whether the class has a language-modeling head (and so gets `generate()` and a generation config)."""
        return cls._is_generative

    # ----------------------------------------------------------------------------------------- init and ties
    def post_init(self) -> None:
        """Called at the end of every subclass `__init__`: initialize the weights and tie them."""
        self.init_weights()

    def init_weights(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        """N(0, initializer_range) for projections and embeddings, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, Conv1D)):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.base_model.wte = value

    def get_output_embeddings(self) -> nn.Linear | None:
        return getattr(self, "lm_head", None)

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def tie_weights(self) -> None:
        """Share the input embedding matrix with `lm_head` when `config.tie_word_embeddings`."""
        output_embeddings = self.get_output_embeddings()
        if output_embeddings is not None and self.config.tie_word_embeddings:
            output_embeddings.weight = self.get_input_embeddings().weight

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None
                                ) -> nn.Embedding:
        """Grow or shrink the vocabulary to `new_num_tokens` rows (rounded up to `pad_to_multiple_of`).

        Existing rows are kept, new rows initialized like fresh weights; an untied `lm_head` (GPT-J) is resized
        with it, a tied one stays tied. Updates `config.vocab_size`. Returns the new input embedding.
        """
        old_embeddings = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old_embeddings
        new_num_tokens = old_embeddings.num_embeddings if new_num_tokens is None else new_num_tokens
        if pad_to_multiple_of is not None:
            if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
                raise ValueError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
            new_num_tokens = math.ceil(new_num_tokens / pad_to_multiple_of) * pad_to_multiple_of
        if not isinstance(new_num_tokens, int) or new_num_tokens < 1:
            raise ValueError(f"new_num_tokens must be a positive int, got {new_num_tokens!r}")
        weight = old_embeddings.weight
        kept = min(old_embeddings.num_embeddings, new_num_tokens)
        new_embeddings = nn.Embedding(new_num_tokens, weight.shape[1], device=weight.device, dtype=weight.dtype)
        self._init_weights(new_embeddings)
        with torch.no_grad():
            new_embeddings.weight[:kept] = weight[:kept]
        self.set_input_embeddings(new_embeddings)
        output_embeddings = self.get_output_embeddings()
        if output_embeddings is not None and not self.config.tie_word_embeddings:
            has_bias = output_embeddings.bias is not None
            new_head = nn.Linear(weight.shape[1], new_num_tokens, bias=has_bias, device=weight.device,
                                 dtype=output_embeddings.weight.dtype)
            self._init_weights(new_head)
            with torch.no_grad():
                new_head.weight[:kept] = output_embeddings.weight[:kept]
                if has_bias:
                    new_head.bias[:kept] = output_embeddings.bias[:kept]
            self.set_output_embeddings(new_head)
        self.config.vocab_size = new_num_tokens
        self.tie_weights()
        return new_embeddings

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Number of (distinct) parameters; tied matrices count once."""
        excluded = set()
        if exclude_embeddings:
            excluded = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(
            p.numel() for p in self.parameters() if id(p) not in excluded and (p.requires_grad or not only_trainable)
        )

    # ----------------------------------------------------------------------------------------- training
    def train(self, mode: bool = True) -> PreTrainedModel:
        """`nn.Module.train`, refused for a model quantized or packed for inference: its weights are frozen, and
        a training loop would otherwise fail later, in `backward()`, with PyTorch's "does not require grad"."""
        frozen = self._frozen_for_inference()
        if mode and frozen:
            raise ValueError(f"train: this model was {frozen}, which froze its weights for inference; to train, "
                             "load it again (from_pretrained) and train it before quantizing or packing")
        return super().train(mode)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each block's activations in the backward pass (torch.utils.checkpoint); while training
        this turns `use_cache` off."""
        self.base_model.gradient_checkpointing = True
        self.base_model._checkpointing_kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}

    def gradient_checkpointing_disable(self) -> None:
        self.base_model.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.base_model.gradient_checkpointing

    def _checkpointing_active(self, use_cache: bool) -> bool:
        """True when blocks are checkpointed in this call; warns that the cache is then off."""
        active = self.gradient_checkpointing and self.training
        if active and use_cache:
            logger.warning("`use_cache=True` is incompatible with gradient checkpointing; setting use_cache=False")
        return active

    def _run_block(self, block: nn.Module, checkpointed: bool, *args: Any) -> Any:
        if checkpointed:
            return checkpoint(block, *args, **getattr(self, "_checkpointing_kwargs", {"use_reentrant": False}))
        return block(*args)

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: PretrainedConfig | str | os.PathLike | None = None,
        torch_dtype: str | torch.dtype | None = None,
        attn_implementation: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        output_loading_info: bool = False,
        **config_kwargs: Any,
    ) -> PreTrainedModel | tuple[PreTrainedModel, dict[str, list]]:
        """Load a model from a directory or Hub id holding `config.json` and weights.

        Weights are found and read by `conversion.open_checkpoint` in Hugging Face's order (`model.safetensors`,
        its index, `pytorch_model.bin` — read with `torch.load(weights_only=True)` —, its index, then TF and Flax
        files, which are translated to PyTorch names and layouts). `loading.plan_load` applies Hugging Face's
        rules: base-model checkpoints load into head models and vice versa, old mask buffers are ignored, and
        missing / unexpected keys are logged (and returned with `output_loading_info`).

        Args:
            pretrained_model_name_or_path: checkpoint directory or Hub repository id.
            config: a config (or a path to one) to use instead of the checkpoint's `config.json`.
            torch_dtype: parameter dtype — None (float32), "auto" (config.torch_dtype, else the checkpoint's),
                or a torch dtype / its name.
            attn_implementation: "eager" or "sdpa" (default "sdpa").
            revision, cache_dir, local_files_only, token: Hub download options.
            output_loading_info: also return {"missing_keys", "unexpected_keys", "mismatched_keys",
                "error_msgs"}.
            **config_kwargs: config attributes to override (e.g. `pad_token_id=0`).
        """
        path = os.fspath(pretrained_model_name_or_path)
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        config = resolve_model_config(cls.__name__, cls.config_class, path, config, hub, config_kwargs)
        if (error := quantized_checkpoint_error(config, path, "pt")) is not None:
            raise error
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation

        weights = open_checkpoint(path, **hub)
        dtype = _resolve_dtype(torch_dtype, config, weights)
        config.torch_dtype = str(dtype).removeprefix("torch.")
        with torch.device("meta"), _MetaWithoutInit():
            model = cls(config, *model_args)
        loading_info = model._load_weights(weights, dtype)
        model.eval()
        return (model, loading_info) if output_loading_info else model

    def _load_weights(self, weights: CanonicalCheckpoint, dtype: torch.dtype) -> dict[str, list]:
        """Materialize this meta-device model from `weights` (canonical key → NumPy, read lazily)."""
        parameters = dict(self.named_parameters())  # a tied alias shares its parameter and is not listed
        plan = plan_load(
            {name: tuple(p.shape) for name, p in self.named_parameters(remove_duplicate=False)},
            weights.shapes(),
            base_model_prefix=self.base_model_prefix,
            tied_keys=tied_head_keys(self.can_generate(), self.config.tie_word_embeddings, self.base_model_prefix),
        )
        materialized = {}
        for name, param in parameters.items():
            module_name, _, attr = name.rpartition(".")
            tensor = torch.empty(param.shape, dtype=dtype if param.is_floating_point() else param.dtype)
            materialized[name] = nn.Parameter(tensor, requires_grad=param.requires_grad)
            self.get_submodule(module_name)._parameters[attr] = materialized[name]
        for name, buffer in self.named_buffers():
            if buffer.is_meta:
                raise RuntimeError(f"buffer {name} was created on the meta device; build it from NumPy instead")
        # Initialize whole modules that own a missing parameter before reading, so a partly present module
        # keeps its loaded tensors.
        for module_name in sorted({name.rpartition(".")[0] for name in plan.missing_keys}):
            self._init_weights(self.get_submodule(module_name))
        with torch.no_grad():
            for name, key in plan.mapping.items():
                if name not in materialized:
                    continue  # the tied alias (lm_head.weight) of a parameter loaded under its other name
                out = numpy_view(materialized[name].data)
                if weights.dtype(key) == out.dtype:
                    weights.read_into(key, out)  # straight from the file into the parameter
                else:  # cast one tensor at a time, from scratch pages freed right after (no resident memory map)
                    raw = scratch_array(weights.shape(key), weights.dtype(key))
                    weights.read_into(key, raw)
                    bits = raw.view(np.int16) if raw.dtype == bfloat16_dtype() else raw
                    source = torch.from_numpy(bits)  # shares the scratch pages
                    materialized[name].data.copy_(source.view(torch.bfloat16) if bits is not raw else source)
                    del raw, bits, source
        self.tie_weights()
        return plan.report(type(self).__name__)

    # ----------------------------------------------------------------------------------------- saving
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        max_shard_size: int | str = "5GB",
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Write `config.json`, `generation_config.json` (LM heads) and the weights in Hugging Face's layout.

        Args:
            save_directory: created if needed; an existing file there is an error.
            safe_serialization: `model.safetensors` (tied weights stored once, `{"format": "pt"}` metadata)
                or, if False, `pytorch_model.bin` (tied keys kept, sharing storage).
            max_shard_size: above this, shards `model-0000k-of-0000n.safetensors` plus an index are written.
            state_dict: tensors to save instead of `self.state_dict()`.
        """
        parse_size(max_shard_size)  # every argument is checked before anything touches the disk
        config = copy.deepcopy(self.config)
        config.architectures = [type(self).__name__]
        config.torch_dtype = str(self.dtype).removeprefix("torch.")

        state_dict = self.state_dict() if state_dict is None else state_dict
        not_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
        if not_tensors:
            raise InputError(f"state_dict values must be torch tensors; not tensors: {', '.join(not_tensors[:10])}")
        state_dict = {k: v.detach() for k, v in state_dict.items()}
        aliases = self._tied_aliases(state_dict)  # alias name -> the name it shares storage with
        stored = [k for k in state_dict if k not in aliases]
        sizes = [(k, state_dict[k].numel() * state_dict[k].element_size()) for k in stored]

        def write_shard(path: str, names: list[str]) -> None:
            arrays = {n: numpy_view(state_dict[n].cpu().contiguous()) for n in names}
            specs = {n: (a.dtype, a.shape) for n, a in arrays.items()}
            write_safetensors(path, specs=specs, fetch=arrays.__getitem__, metadata={"format": "pt"})

        def write_bin_shard(path: str, names: list[str]) -> None:
            names = names + [a for a, target in aliases.items() if target in names]
            with atomic_output(path) as f:
                torch.save({n: state_dict[n].cpu().contiguous() for n in names}, f)

        weights_name = SAFE_WEIGHTS_NAME if safe_serialization else PT_WEIGHTS_NAME
        # Staged beside `save_directory` and swapped in whole: a kill leaves the old checkpoint or the new one.
        with staged_checkpoint(save_directory, weights_name) as staging:
            if self.can_generate():
                save_generation_config(config, staging)
            config.save_pretrained(staging)
            writer = write_shard if safe_serialization else write_bin_shard
            written = save_sharded(staging, sizes, writer, weights_name, max_shard_size)
            if PT_WEIGHTS_INDEX_NAME in written and aliases:
                # Hugging Face lists the tied keys in the .bin index too, beside their storage twin.
                index_path = os.path.join(staging, PT_WEIGHTS_INDEX_NAME)
                weight_map, metadata = read_index(index_path)
                weight_map.update({alias: weight_map[target] for alias, target in aliases.items()})
                write_index(index_path, dict(sorted(weight_map.items())), metadata["total_size"])

    def _tied_aliases(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
        """Names whose tensor shares storage with an earlier kept name (`_tied_weights_keys` are dropped first)."""
        groups: dict[tuple, list[str]] = {}
        for name, tensor in state_dict.items():
            if tensor.device.type == "meta":
                continue
            groups.setdefault((tensor.device, tensor.untyped_storage().data_ptr()), []).append(name)
        tied_keys = set(self._tied_weights_keys or ())
        aliases = {}
        for names in groups.values():
            if len(names) < 2:
                continue
            keep = next((n for n in names if n not in tied_keys), names[0])
            aliases.update({n: keep for n in names if n != keep})
        return aliases


# --------------------------------------------------------------------------------------------- helpers
def _check_call_inputs(module: PreTrainedModel, args: tuple, kwargs: dict[str, Any]) -> None:
    """Forward pre-hook: exact shapes and no empty sequences (the framework-free checks, shared by the twins)."""
    try:
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return  # forward itself reports bad arguments
    check_model_inputs(bound)


def _resolve_dtype(torch_dtype: str | torch.dtype | None, config: PretrainedConfig, weights: Mapping) -> torch.dtype:
    if torch_dtype is None:
        return torch.float32
    if torch_dtype == "auto":
        torch_dtype = config.torch_dtype
        if torch_dtype is None:
            floating = (weights.dtype(k) for k in weights if np.issubdtype(weights.dtype(k), np.floating)
                        or weights.dtype(k).name == "bfloat16")
            torch_dtype = next((d.name for d in floating), "float32")
    if isinstance(torch_dtype, torch.dtype):
        torch_dtype = str(torch_dtype).removeprefix("torch.")
    if torch_dtype not in _FLOAT_DTYPES:
        raise ValueError(f"torch_dtype must be None, 'auto' or one of {sorted(_FLOAT_DTYPES)}, got {torch_dtype!r}")
    return _FLOAT_DTYPES[torch_dtype]
