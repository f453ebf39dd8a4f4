"""twinformers.pipeline for the heads other than generation (text-generation is tested per backend and across
backends in the generation tests): output shapes as Hugging Face's, values from the model's own logits."""

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import twinformers  # noqa: E402
from twinformers.demo.embedded import embedded_model_path  # noqa: E402

LABELS = {0: "NEG", 1: "NEU", 2: "POS"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Randomly initialised heads on the embedded GPT-2's config, saved with its tokenizer."""
    from twinformers import GPT2Config
    from twinformers.pt import GPT2ForQuestionAnswering, GPT2ForSequenceClassification, GPT2ForTokenClassification

    config = GPT2Config.from_pretrained(embedded_model_path())
    config.id2label, config.label2id = LABELS, {v: k for k, v in LABELS.items()}
    out = {}
    for task, cls in (("text-classification", GPT2ForSequenceClassification),
                      ("token-classification", GPT2ForTokenClassification),
                      ("question-answering", GPT2ForQuestionAnswering)):
        torch.manual_seed(0)
        directory = tmp_path_factory.mktemp(task)
        cls(config).save_pretrained(directory)
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(f"{embedded_model_path()}/{name}", directory / name)
        out[task] = str(directory)
    return out


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_text_classification(checkpoints):
    classifier = twinformers.pipeline("text-classification", model=checkpoints["text-classification"], backend="pt")
    texts = ["a fine day", "nothing works"]
    results = classifier(texts)
    for text, result in zip(texts, results):
        ids = torch.tensor([classifier.tokenizer.encode(text)])
        probs = softmax(classifier.model(ids).logits.detach().numpy()[0])
        assert result == {"label": LABELS[int(probs.argmax())], "score": pytest.approx(float(probs.max()), abs=1e-6)}
    every = classifier("a fine day", top_k=None)[0]
    assert sorted(r["label"] for r in every) == sorted(LABELS.values())
    assert sum(r["score"] for r in every) == pytest.approx(1.0, abs=1e-6)


def test_token_classification(checkpoints):
    tagger = twinformers.pipeline("ner", model=checkpoints["token-classification"], backend="pt")
    text = "Paris is in France"
    entities = tagger(text, ignore_labels=())
    ids = tagger.tokenizer.encode(text)
    probs = softmax(tagger.model(torch.tensor([ids])).logits.detach().numpy()[0])
    assert [e["index"] for e in entities] == list(range(len(ids)))
    assert [e["entity"] for e in entities] == [LABELS[int(i)] for i in probs.argmax(-1)]
    assert "".join(text[e["start"] : e["end"]] for e in entities) == text
    kept = tagger(text, ignore_labels=("NEG",))
    assert all(e["entity"] != "NEG" for e in kept) and len(kept) == sum(e["entity"] != "NEG" for e in entities)


def test_question_answering(checkpoints):
    qa = twinformers.pipeline("question-answering", model=checkpoints["question-answering"], backend="pt")
    context = "The cat sat on the mat in the old house."
    result = qa(question="Where did the cat sit?", context=context)
    assert set(result) == {"score", "start", "end", "answer"}
    assert result["answer"] == context[result["start"] : result["end"]] and result["answer"]
    assert 0 < result["score"] <= 1
    assert qa(question=["a?", "b?"], context=context)[0] == qa(question="a?", context=context)


def test_question_answering_reads_a_long_context_in_overlapping_windows(checkpoints):
    """max_seq_len / doc_stride: the answer is the best span over every window (question + 20 context tokens,
    windows sharing 6), each window's probabilities from the model's own logits; a context longer than the
    position table works with the defaults; a stride as long as the window is a clear error."""
    qa = twinformers.pipeline("question-answering", model=checkpoints["question-answering"], backend="pt")
    question = "Where did the cat sit?"
    context = " ".join(["The cat sat on the mat in the old house."] * 6)
    question_ids, context_ids = qa.tokenizer.encode(question), qa.tokenizer.encode(context)
    window, stride = 20, 6
    best = (-1.0, 0, 0)
    for offset in range(0, len(context_ids), window - stride):  # every window, by hand
        chunk = context_ids[offset : offset + window]
        outputs = qa.model(torch.tensor([question_ids + chunk]))
        start = softmax(outputs.start_logits.detach().numpy()[0, len(question_ids):])
        end = softmax(outputs.end_logits.detach().numpy()[0, len(question_ids):])
        for i in range(len(chunk)):
            for j in range(i, min(i + 15, len(chunk))):
                if start[i] * end[j] > best[0]:
                    best = (start[i] * end[j], offset + i, offset + j)
        if offset + window >= len(context_ids):
            break
    assert len(context_ids) > 2 * window
    result = qa(question=question, context=context, max_seq_len=len(question_ids) + window, doc_stride=stride)
    assert result["score"] == pytest.approx(best[0], abs=1e-6)
    assert result["answer"] == qa.tokenizer.decode(context_ids[best[1] : best[2] + 1])
    assert result["answer"] == context[result["start"] : result["end"]]
    one_window = qa(question=question, context=context, max_seq_len=len(question_ids) + len(context_ids))
    assert one_window == qa(question=question, context=context)  # the defaults fit it in one window too
    long_context = " ".join(["The cat sat on the mat in the old house."] * 20)
    assert len(qa.tokenizer.encode(long_context)) > qa.model.config.max_position_embeddings
    answer = qa(question=question, context=long_context)
    assert answer["answer"] == long_context[answer["start"] : answer["end"]] and answer["answer"]
    with pytest.raises(ValueError, match=r"doc_stride=20 must be in \[0, 20\)"):
        qa(question=question, context=context, max_seq_len=len(question_ids) + window, doc_stride=20)
    with pytest.raises(ValueError, match=r"max_seq_len=1000 must be in \[1, 128\]"):
        qa(question=question, context=context, max_seq_len=1000)
