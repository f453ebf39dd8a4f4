"""`--format onnx`: the prefill and decode graphs run in ONNX Runtime where twinformers cannot be imported give
the twin's logits (1e-4) and, through a 20-line greedy loop with the KV cache, the twin's 32 greedy tokens."""

import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import numpy as np  # noqa: E402
from export_isolated import run_isolated  # noqa: E402

import twinformers.pt as tpt  # noqa: E402
from helpers import assert_close, tiny_config  # noqa: E402
from twinformers.export import ExportError, export_model  # noqa: E402

NEW_TOKENS = 32
LM_CLASSES = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}
# The bound for ONNX Runtime against the twin: ORT fuses and reorders float32 ops.
ORT_ATOL = 1e-4

# The loop docs/serving.md shows, plus the logits of the prompt and of the first decode step.
SERVE = '''
import json
import numpy as np
import onnxruntime as ort

inputs = np.load("inputs.npz")
info = json.load(open("out/config.json"))["export"]
prefill = ort.InferenceSession("out/model.onnx", providers=["CPUExecutionProvider"])
ids, mask = inputs["input_ids"], inputs["attention_mask"]
outputs = prefill.run(None, {"input_ids": ids, "attention_mask": mask})
results = {"logits": outputs[0]}
if info["head"] == "causal_lm":
    decode = ort.InferenceSession("out/decode.onnx", providers=["CPUExecutionProvider"])
    tokens = []
    for step in range(int(inputs["new_tokens"])):
        token = outputs[0][:, -1].argmax(-1)[:, None]  # greedy
        tokens.append(token)
        mask = np.concatenate([mask, np.ones_like(token)], axis=1)
        feed = dict(zip(info["past"], outputs[1:]), input_ids=token, attention_mask=mask)
        outputs = decode.run(None, feed)
        if step == 0:
            results["step_logits"] = outputs[0]
    results["tokens"] = np.concatenate(tokens, axis=1)
np.savez("outputs.npz", **results)
'''


def _inputs(vocab: int) -> dict[str, np.ndarray]:
    input_ids = np.random.default_rng(0).integers(1, vocab, size=(3, 6)).astype(np.int64)
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, :2] = 0  # left padding
    input_ids[1, :2] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _serve(model, workdir):
    export_model(model, os.path.join(workdir, "out"), "onnx")
    inputs = _inputs(model.config.vocab_size)
    return inputs, run_isolated(SERVE, workdir, {**inputs, "new_tokens": np.int64(NEW_TOKENS)})


@pytest.mark.parametrize("family", sorted(LM_CLASSES))
def test_causal_lm_in_onnx_runtime(family, tmp_path):
    torch.manual_seed(0)
    # 38 + 6 positions: the decode loop runs past the tiny config's 19.
    sizes = {"max_position_embeddings": 64} if family == "gpt_neo" else {"n_positions": 64}
    model = getattr(tpt, LM_CLASSES[family])(tiny_config(family, **sizes)).eval()
    inputs, served = _serve(model, str(tmp_path))
    ids, mask = (torch.from_numpy(inputs[k]) for k in ("input_ids", "attention_mask"))
    with torch.no_grad():
        generated = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW_TOKENS,
                                   min_new_tokens=NEW_TOKENS, pad_token_id=0)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        expected = model(ids, attention_mask=mask, position_ids=positions).logits.numpy()
        # The first decode step: the prompt plus the first greedy token.
        first = generated[:, ids.shape[1]:ids.shape[1] + 1]
        step_mask = torch.cat([mask, torch.ones_like(first)], 1)
        step_positions = (step_mask.cumsum(-1) - 1).masked_fill(step_mask == 0, 1)
        step_expected = model(torch.cat([ids, first], 1), attention_mask=step_mask,
                              position_ids=step_positions).logits[:, -1:].numpy()
    assert_close(served["logits"], expected, name="prefill logits", atol=ORT_ATOL, where=inputs["attention_mask"] > 0)
    assert_close(served["step_logits"], step_expected, name="decode-step logits", atol=ORT_ATOL)
    np.testing.assert_array_equal(served["tokens"], generated[:, ids.shape[1]:].numpy())
    info = json.load(open(tmp_path / "out" / "config.json"))["export"]
    assert info["files"] == ["decode.onnx", "model.onnx"]


def test_classification_head_in_onnx_runtime(tmp_path):
    torch.manual_seed(0)
    model = tpt.GPT2ForSequenceClassification(tiny_config("gpt2", num_labels=3, pad_token_id=0)).eval()
    inputs, served = _serve(model, str(tmp_path))
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs["input_ids"]),
                         attention_mask=torch.from_numpy(inputs["attention_mask"])).logits.numpy()
    assert_close(served["logits"], expected, name="classifier logits", atol=ORT_ATOL)
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "model.onnx"]


def test_bad_input(tmp_path):
    model = tpt.GPT2LMHeadModel(tiny_config("gpt2"))
    with pytest.raises(ExportError, match="too large to embed in a ONNX file.*external_data=True"):
        export_model(model, tmp_path / "out", "onnx", external_data=False, max_embedded_bytes=1000)
    with pytest.raises(ExportError, match="does not export GPT2DoubleHeadsModel"):
        export_model(tpt.GPT2DoubleHeadsModel(tiny_config("gpt2")), tmp_path / "out", "onnx")
    assert os.listdir(tmp_path) == []
