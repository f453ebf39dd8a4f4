"""`--format jax`: `jax.export` artifacts deserialized and run where twinformers cannot be imported give the
twin's logits (1e-5) and its greedy tokens; the params-as-argument variant; errors."""

import json
import os

import pytest

jax = pytest.importorskip("jax")

import numpy as np  # noqa: E402
from export_isolated import run_isolated  # noqa: E402

import twinformers.flax as tfx  # noqa: E402
from helpers import assert_close, tiny_config  # noqa: E402
from twinformers.export import ExportError, export_model  # noqa: E402

LM_CLASSES = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}
NEW_TOKENS = 10

# Left-padded batch of 3 (row 1 padded): forward on each prompt, then greedy decoding with the decode step.
SERVE = '''
import glob, json
import numpy as np
from jax import export

inputs = np.load("inputs.npz")
params = dict(np.load("out/params.npz")) if glob.glob("out/params.npz") else None
suffix = "_params" if params is not None else ""
info = json.load(open("out/config.json"))["export"]

def load(name):
    exp = export.deserialize(open(f"out/{name}{suffix}.jaxexport", "rb").read())
    return (lambda *args: exp.call(params, *args)) if params is not None else exp.call

results = {"logits": np.asarray(load("forward")(inputs["input_ids"], inputs["attention_mask"]))}
if info["head"] == "causal_lm":
    step = load("decode_step")
    prompt, prompt_mask, new = inputs["input_ids"], inputs["attention_mask"], int(inputs["new_tokens"])
    batch, length = prompt.shape
    layers, two, heads, head_dim = info["cache_shape"]
    cache = np.zeros((layers, two, batch, heads, length + new, head_dim), np.float32)
    mask = np.ones((batch, length + new), np.int32)
    mask[:, :length] = prompt_mask
    positions = np.where(prompt_mask == 0, 1, np.cumsum(prompt_mask, -1) - 1).astype(np.int32)
    logits, cache, index = step(prompt, mask, positions, cache, np.int32(0))
    next_positions, tokens = prompt_mask.sum(-1).astype(np.int32), []
    for _ in range(new):
        token = np.asarray(logits).argmax(-1).astype(np.int32)
        tokens.append(token)
        logits, cache, index = step(token[:, None], mask, next_positions[:, None], cache, index)
        next_positions = next_positions + 1
    results["tokens"] = np.stack(tokens, 1)
np.savez("outputs.npz", **results)
'''


def _inputs(vocab: int) -> dict[str, np.ndarray]:
    input_ids = np.random.default_rng(0).integers(1, vocab, size=(3, 6)).astype(np.int32)
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, :2] = 0  # left padding
    input_ids[1, :2] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _check(model, workdir, **options):
    out = os.path.join(workdir, "out")
    export_model(model, out, "jax", **options)
    inputs = _inputs(model.config.vocab_size)
    served = run_isolated(SERVE, workdir, {**inputs, "new_tokens": np.int32(NEW_TOKENS)})
    expected = model(inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    valid = inputs["attention_mask"].astype(bool) if expected.ndim == 3 else None  # per-token: real tokens only
    assert_close(served["logits"], np.asarray(expected), name="forward logits", where=valid)
    if model.can_generate():
        generated = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], do_sample=False,
                                   max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0)
        np.testing.assert_array_equal(served["tokens"], np.asarray(generated)[:, -NEW_TOKENS:])
    return out


@pytest.mark.parametrize("family", sorted(LM_CLASSES))
def test_causal_lm_served_without_twinformers(family, tmp_path):
    model = getattr(tfx, LM_CLASSES[family])(tiny_config(family), seed=1)
    out = _check(model, str(tmp_path))
    assert sorted(os.listdir(out)) == ["config.json", "decode_step.jaxexport", "forward.jaxexport"]


def test_classification_head_and_params_as_argument(tmp_path):
    model = tfx.GPT2ForSequenceClassification(tiny_config("gpt2", num_labels=3, pad_token_id=0), seed=2)
    out = _check(model, str(tmp_path), params_as_argument=True)
    assert sorted(os.listdir(out)) == ["config.json", "forward_params.jaxexport", "params.npz"]
    assert json.load(open(os.path.join(out, "config.json")))["export"]["head"] == "sequence_classification"


def test_params_as_argument_decode(tmp_path):
    model = tfx.GPT2LMHeadModel(tiny_config("gpt2"), seed=3)
    _check(model, str(tmp_path), params_as_argument=True)


def test_errors_leave_nothing_behind(tmp_path):
    model = tfx.GPT2LMHeadModel(tiny_config("gpt2"), seed=3)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="too large to embed.*--params-as-argument"):
        export_model(model, out, "jax", max_embedded_bytes=1000)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ExportError, match="does not export GPT2DoubleHeadsModel"):
        export_model(tfx.GPT2DoubleHeadsModel(tiny_config("gpt2")), out, "jax")
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_model(model, out, "jax")
    assert os.listdir(out) == ["keep.txt"]
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(model, out, "tflite")


def test_cli_exports_the_embedded_model(tmp_path, capsys):
    from jax import export as jax_export

    from twinformers.cli.main import main
    from twinformers.demo.embedded import embedded_model_path

    out = tmp_path / "out"
    assert main(["export", embedded_model_path(), str(out), "--format", "jax"]) == 0, capsys.readouterr().err
    model = tfx.GPT2LMHeadModel.from_pretrained(embedded_model_path())
    exp = jax_export.deserialize((out / "forward.jaxexport").read_bytes())
    inputs = _inputs(model.config.vocab_size)
    assert_close(np.asarray(exp.call(inputs["input_ids"], inputs["attention_mask"])),
                 np.asarray(model(inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits),
                 name="forward logits", where=inputs["attention_mask"] > 0)
    assert main(["export", embedded_model_path(), str(out), "--format", "jax", "--head", "base", "--force"]) == 1
    assert "does not export GPT2Model" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["config.json", "decode_step.jaxexport", "forward.jaxexport"]  # kept
