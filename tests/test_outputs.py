import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import twinformers
from twinformers.outputs import OUTPUT_CLASSES, CausalLMOutputWithPast, GPT2DoubleHeadsModelOutput


def test_indexing_skips_none_fields():
    logits = np.ones((2, 3))
    out = CausalLMOutputWithPast(logits=logits, past_key_values=((1, 2),))
    assert out[0] is logits  # no loss: index 0 is the logits, as in Hugging Face
    assert out["logits"] is logits and out.logits is logits
    assert out.keys() == ["logits", "past_key_values"]
    assert out.to_tuple() == (logits, ((1, 2),))
    assert out[:1] == (logits,)
    assert "loss" not in out and "logits" in out and len(out) == 2
    with pytest.raises(KeyError, match="loss"):
        out["loss"]
    out_with_loss = CausalLMOutputWithPast(loss=0.5, logits=logits)
    assert out_with_loss[0] == 0.5 and out_with_loss[1] is logits
    assert list(out_with_loss) == ["loss", "logits"]
    assert dict(out_with_loss.items()) == {"loss": 0.5, "logits": logits}


def test_setitem_updates_attribute():
    out = CausalLMOutputWithPast()
    out["logits"] = 3
    assert out.logits == 3 and out.keys() == ["logits"]
    with pytest.raises(KeyError):
        out["nonsense"] = 1


def test_double_heads_field_order():
    fields = [f.name for f in dataclasses.fields(GPT2DoubleHeadsModelOutput)]
    assert fields == ["loss", "mc_loss", "logits", "mc_logits", "past_key_values", "hidden_states", "attentions"]


def test_field_order_is_hugging_faces():
    # Indexing and to_tuple follow the declaration order, so every class keeps Hugging Face's (modeling_outputs.py).
    past = ["past_key_values", "hidden_states", "attentions"]
    expected = {
        "BaseModelOutputWithPast": ["last_hidden_state", *past],
        "BaseModelOutputWithPastAndCrossAttentions": ["last_hidden_state", *past, "cross_attentions"],
        "CausalLMOutputWithPast": ["loss", "logits", *past],
        "CausalLMOutputWithCrossAttentions": ["loss", "logits", *past, "cross_attentions"],
        "SequenceClassifierOutputWithPast": ["loss", "logits", *past],
        "TokenClassifierOutput": ["loss", "logits", "hidden_states", "attentions"],
        "QuestionAnsweringModelOutput": ["loss", "start_logits", "end_logits", "hidden_states", "attentions"],
        "GPT2DoubleHeadsModelOutput": ["loss", "mc_loss", "logits", "mc_logits", *past],
    }
    assert {cls.__name__: [f.name for f in dataclasses.fields(cls)] for cls in OUTPUT_CLASSES} == expected


def test_all_seed_outputs_exported_at_top_level():
    for cls in OUTPUT_CLASSES:
        assert getattr(twinformers, cls.__name__) is cls


def test_tf_nest_protocol_round_trip():
    out = CausalLMOutputWithPast(logits=1, hidden_states=(2, 3))
    names, values = out.__tf_flatten__()
    assert CausalLMOutputWithPast.__tf_unflatten__(names, values) == out


def test_import_twinformers_loads_no_framework():
    code = (
        "import sys, twinformers\n"
        "twinformers.GPT2Config, twinformers.CausalLMOutputWithPast, twinformers.AutoConfig\n"
        "import twinformers.checkpoints.files, twinformers.model_math, twinformers.cli.main\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'jax', 'flax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_top_level_name():
    with pytest.raises(AttributeError, match="no attribute 'GPT5Model'"):
        _ = twinformers.GPT5Model


def test_missing_backend_names_the_extra(monkeypatch):
    import importlib.util

    from twinformers._backends import require_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'twinformers\[flax\]'"):
        require_backend("flax")


def test_torch_pytree_registration():
    torch = pytest.importorskip("torch")
    from torch.utils import _pytree

    from twinformers.outputs import register_torch_pytrees

    register_torch_pytrees()
    out = CausalLMOutputWithPast(logits=torch.ones(2), past_key_values=((torch.zeros(1), torch.zeros(1)),))
    leaves, spec = _pytree.tree_flatten(out)
    assert len(leaves) == 3
    rebuilt = _pytree.tree_unflatten([leaf + 1 for leaf in leaves], spec)
    assert isinstance(rebuilt, CausalLMOutputWithPast) and float(rebuilt.logits[0]) == 2.0


def test_jax_pytree_registration():
    jax = pytest.importorskip("jax")
    from twinformers.outputs import register_jax_pytrees

    register_jax_pytrees()
    out = CausalLMOutputWithPast(logits=np.ones(2, np.float32))
    doubled = jax.jit(lambda o: jax.tree_util.tree_map(lambda x: x * 2, o))(out)
    assert isinstance(doubled, CausalLMOutputWithPast) and doubled.loss is None
    np.testing.assert_array_equal(np.asarray(doubled.logits), [2, 2])
