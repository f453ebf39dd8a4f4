"""LoRA adapters, written once for the three backends: the config (PEFT's field names), the adapter files
(`adapter_config.json` + `adapter_model.safetensors` with PEFT's key names) and the mapping between PEFT's
keys and a model's projection layers. Framework-free; each backend's `lora.py` holds the layers and the
`LoraMixin` methods (`add_adapter`, `load_adapter`, `save_adapter`, `merge_adapter`, ...).
"""

from .config import DEFAULT_TARGET_MODULES, LoraConfig
from .files import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, load_adapter_files, save_adapter_files
from .mapping import LoraTarget, adapter_arrays, head_of_class, peft_key, resolve_targets

__all__ = [
    "LoraConfig",
    "DEFAULT_TARGET_MODULES",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "save_adapter_files",
    "load_adapter_files",
    "LoraTarget",
    "head_of_class",
    "resolve_targets",
    "peft_key",
    "adapter_arrays",
]
