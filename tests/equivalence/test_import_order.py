"""TensorFlow imported first, then the PyTorch twin: loading, generating and an optimizer step must work.

With pip's default torch (a CUDA build with triton), importing triton after TensorFlow kills the process with
a segmentation fault (docs/troubleshooting.md). Each flow runs in a fresh interpreter, so a crash shows as a
negative return code. The `readme` tox env runs this file on that torch; the other envs have a CPU torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from helpers import HF_FIXTURES

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


def run_after_tensorflow(code: str) -> subprocess.CompletedProcess:
    code = "import tensorflow\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_pt_twin_loads_generates_and_trains_after_tensorflow():
    result = run_after_tensorflow(f"""
        import sys, torch
        from twinformers.pt import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({os.path.join(HF_FIXTURES, "gpt_neo-flax-causal_lm")!r})
        ids = torch.tensor([[1, 2, 3, 4]])
        print(model.generate(ids, max_new_tokens=3, do_sample=False).shape[1])
        print("loading imported dynamo:", "torch._dynamo" in sys.modules)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # its step imports torch._dynamo
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        print("trained")
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["7", "loading imported dynamo: False", "trained"]


def test_importing_triton_after_tensorflow_is_an_error_not_a_crash():
    result = run_after_tensorflow("""
        import twinformers.pt
        try:
            import triton
            print("imported")  # only where triton's LLVM does not clash with TensorFlow's
        except ImportError as err:
            print("ImportError:", err)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(("ImportError: twinformers refused to import triton", "ImportError: No module "
                                     "named 'triton'", "imported"))
