"""Adapter files in PEFT's layout: `adapter_config.json` and `adapter_model.safetensors` (`{"format": "pt"}`,
keys `base_model.model.<module>.lora_A.weight` (r, in) and `...lora_B.weight` (out, r))."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping

import numpy as np

from ..checkpoints.safetensors import SafetensorsFile, write_safetensors
from .config import LoraConfig

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "save_adapter_files", "load_adapter_files"]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


def save_adapter_files(directory: str | os.PathLike, config: LoraConfig, tensors: Mapping[str, np.ndarray]) -> None:
    """Write both files into `directory` (created if needed). They are staged in a scratch directory beside it
    and moved in only when both are complete, so a failure leaves no half-written adapter."""
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        raise ValueError(f"save_adapter: {directory!r} is a file, expected a directory")
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".adapter-", dir=directory)
    try:
        with open(os.path.join(staging, ADAPTER_CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(config.to_json_string())
        write_safetensors(os.path.join(staging, ADAPTER_WEIGHTS_NAME), dict(tensors), metadata={"format": "pt"})
        for name in (ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME):
            os.replace(os.path.join(staging, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_adapter_files(directory: str | os.PathLike) -> tuple[LoraConfig, dict[str, np.ndarray]]:
    """(config, PEFT key → float array) from an adapter directory."""
    directory = os.fspath(directory)
    config_path = os.path.join(directory, ADAPTER_CONFIG_NAME)
    weights_path = os.path.join(directory, ADAPTER_WEIGHTS_NAME)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_adapter: no {os.path.basename(path)} in {directory!r}")
    with open(config_path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    config = LoraConfig.from_dict(data, source=config_path)
    tensors = {key: np.array(array) for key, array in SafetensorsFile(weights_path).items()}
    return config, tensors
