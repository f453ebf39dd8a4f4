"""Shared data of the LoRA tests: the PEFT-written fixtures (tests/fixtures/peft) and their references."""

from __future__ import annotations

import json
import os

import numpy as np

from helpers import PEFT_CASES, PEFT_FIXTURES

CASES = sorted(PEFT_CASES)


def case_dir(case: str, part: str = "") -> str:
    """`tests/fixtures/peft/<case>/<part>` (part: "base", "adapter" or "")."""
    return os.path.join(PEFT_FIXTURES, case, part)


def reference(case: str) -> dict[str, np.ndarray]:
    """input_ids, attention_mask, base_logits, adapted_logits, merged_logits — computed by PEFT."""
    with np.load(case_dir(case, "reference.npz")) as data:
        return dict(data)


def valid(ref: dict[str, np.ndarray]) -> np.ndarray:
    """(B, T) bool: the positions that carry tokens (the fixtures' second row is left-padded)."""
    return ref["attention_mask"].astype(bool)


def peft_file_keys(case: str) -> list[str]:
    """The tensor names in PEFT's adapter_model.safetensors of `case`, read from the header."""
    with open(case_dir(case, "adapter/adapter_model.safetensors"), "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return sorted(k for k in json.loads(f.read(size)) if k != "__metadata__")


def peft_config(case: str) -> dict:
    with open(case_dir(case, "adapter/adapter_config.json"), encoding="utf-8") as f:
        return json.load(f)


def peft_logits(base_dir: str, adapter_dir: str, ref: dict[str, np.ndarray]) -> np.ndarray:
    """Logits of Hugging Face + PEFT with the adapter in `adapter_dir` on the model in `base_dir`; skips the
    calling test where transformers, peft or torch is not installed (they are never dependencies)."""
    import pytest

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
    model = peft.PeftModel.from_pretrained(model, adapter_dir).eval()
    with torch.no_grad():
        output = model(input_ids=torch.tensor(ref["input_ids"]), attention_mask=torch.tensor(ref["attention_mask"]))
    return output.logits.numpy()


# The train_lora_* examples at CI size: two tiny layers, a dozen steps.
LORA_EXAMPLE_FLAGS = ("--max-bytes", "40000", "--block-size", "32", "--num-layers", "2", "--hidden-size", "32",
                      "--num-heads", "4", "--batch-size", "8", "--max-steps", "12", "--eval-batches", "2")


def run_lora_example(script: str, output_dir: str, *flags: str) -> dict:
    """Run `examples/<script>` as a user would (a subprocess) and return its train_log.json, after checking
    what every LoRA example promises: the validation loss fell, only the adapter trained (the default
    c_attn adapter: r·(in + out) per layer), and the saved adapter reloads onto the saved base model with the
    final loss."""
    import subprocess
    import sys

    from example_runs import EXAMPLES

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", HF_HUB_OFFLINE="1")
    command = [sys.executable, os.path.join(EXAMPLES, script), "--output-dir", str(output_dir),
               *LORA_EXAMPLE_FLAGS, *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}"
    with open(os.path.join(output_dir, "train_log.json"), encoding="utf-8") as f:
        log = json.load(f)
    (_, first), (_, last) = log["eval"]
    assert last < first - 0.02, f"validation loss {first:.4f} -> {last:.4f} did not fall"
    assert log["trainable_parameters"] == 2 * 8 * (32 + 96), log["trainable_parameters"]
    assert abs(log["reloaded_eval"] - last) < 1e-5, (log["reloaded_eval"], last)
    assert sorted(os.listdir(os.path.join(output_dir, "adapter"))) == ["adapter_config.json",
                                                                     "adapter_model.safetensors"]
    return log
