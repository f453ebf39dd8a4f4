"""`--format saved_model`: SavedModels loaded by `tf.saved_model.load` where twinformers cannot be imported —
`serving_default` gives the twin's logits (causal LM of every family, one classification head) and `generate`
(text → text) equals `tokenizer.decode(model.generate(...))` of the twin, prompt by prompt."""

import os

import pytest

tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402
from export_isolated import run_isolated  # noqa: E402
from tf_testing import make_model  # noqa: E402

import twinformers.tf as tft  # noqa: E402
from helpers import assert_close  # noqa: E402
from twinformers.demo.embedded import embedded_model_path  # noqa: E402
from twinformers.export import ExportError, export_model  # noqa: E402
from twinformers.tokenization.auto import AutoTokenizer  # noqa: E402

NEW_TOKENS = 12
PROMPTS = ["Hello world", "def main():\n    return", "The café is open"]
# Every SavedModel under ./models, each with its signatures, run with TensorFlow alone.
SERVE = '''
import os
import numpy as np
import tensorflow as tf

inputs = np.load("inputs.npz")
results = {}
for name in sorted(os.listdir("models")):
    loaded = tf.saved_model.load(os.path.join("models", name))
    serve = loaded.signatures["serving_default"]
    results[name] = serve(input_ids=tf.constant(inputs["input_ids"]),
                          attention_mask=tf.constant(inputs["attention_mask"]))["logits"].numpy()
    if "generate" in loaded.signatures:
        texts = loaded.signatures["generate"](text=tf.constant(inputs["prompts"]))["text"].numpy()
        results[name + ".text"] = np.array([t.decode("utf-8") for t in texts])
np.savez("outputs.npz", **results)
'''


def test_saved_models_served_without_twinformers(tmp_path):
    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    embedded = tft.GPT2LMHeadModel.from_pretrained(path)
    models = {
        "embedded_gpt2": embedded,
        "gptj": make_model("GPTJForCausalLM"),
        "gpt_neo": make_model("GPTNeoForCausalLM"),
        "gpt2_seq_cls": make_model("GPT2ForSequenceClassification"),
    }
    for name, model in models.items():
        options = {"tokenizer": tokenizer, "max_new_tokens": NEW_TOKENS, "max_prompt_length": 16} \
            if name == "embedded_gpt2" else {}
        export_model(model, tmp_path / "models" / name, "saved_model", **options)
    input_ids = np.random.default_rng(0).integers(1, 97, size=(3, 7)).astype(np.int32)
    attention_mask = np.ones_like(input_ids)
    attention_mask[0, 5:] = 0  # right padding (absolute positions)
    served = run_isolated(SERVE, str(tmp_path), {"input_ids": input_ids, "attention_mask": attention_mask,
                                                  "prompts": np.array(PROMPTS)}, timeout=600)

    for name, model in models.items():
        expected = model(input_ids=input_ids, attention_mask=attention_mask).logits.numpy()
        valid = attention_mask.astype(bool) if expected.ndim == 3 else None
        assert_close(served[name], expected, name=f"{name} logits", where=valid)
    for prompt, text in zip(PROMPTS, served["embedded_gpt2.text"]):
        ids = np.array([tokenizer.encode(prompt)], np.int32)
        generated = embedded.generate(ids, do_sample=False, max_new_tokens=NEW_TOKENS,
                                      pad_token_id=tokenizer.eos_token_id)
        assert text == tokenizer.decode(np.asarray(generated)[0].tolist())


def test_bad_input(tmp_path):
    model = make_model("GPT2ForQuestionAnswering")
    with pytest.raises(ExportError, match="does not export GPT2ForQuestionAnswering"):
        export_model(model, tmp_path / "qa", "saved_model")
    classifier = make_model("GPT2ForSequenceClassification")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    with pytest.raises(ValueError, match="generate signature needs a causal LM head"):
        export_model(classifier, tmp_path / "cls", "saved_model", tokenizer=tokenizer)
    assert os.listdir(tmp_path) == []
