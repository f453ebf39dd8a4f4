"""Loading builds the model on `meta` without value fills, so it never imports `torch._dynamo` (and, with a
CUDA build of torch, `triton`, whose import after TensorFlow crashes the process: docs/troubleshooting.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import HF_FIXTURES
from twinformers.pt.modeling_utils import _MetaWithoutInit


@pytest.mark.parametrize("fixture", ["gpt2-pt-causal_lm", "gptj-tf-causal_lm", "gpt_neo-flax-causal_lm"])
def test_from_pretrained_imports_no_dynamo(fixture):
    code = f"""
        import sys
        from twinformers.pt import AutoModelForCausalLM
        import torch
        model = AutoModelForCausalLM.from_pretrained({os.path.join(HF_FIXTURES, fixture)!r})
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False)
        print(sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "triton"))))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_meta_construction_skips_fills_only():
    with torch.device("meta"), _MetaWithoutInit():
        embedding = torch.nn.Embedding(10, 4)
        layer_norm = torch.nn.LayerNorm(4)
        weight = torch.nn.init.normal_(torch.empty(3, 3), std=0.02)
    assert embedding.weight.is_meta and layer_norm.weight.is_meta and weight.is_meta
    assert embedding.weight.requires_grad  # not a fill: still applied
    # Real tensors are filled as usual inside the mode.
    with _MetaWithoutInit():
        real = torch.nn.init.ones_(torch.empty(2, device="cpu"))
    assert torch.equal(real, torch.ones(2))
