"""`twinformers.pipeline(task, model=..., backend=...)`: one-line inference, framework-free dispatch.

Tasks and what a call returns (Hugging Face's shapes):

- "text-generation": `[{"generated_text": str}]` per prompt (one dict per returned sequence); a list of prompts
  gives a list of such lists and runs as one left-padded batch. `return_full_text=False` drops the prompt;
  every other keyword goes to `generate()` (`max_new_tokens=`, `do_sample=`, `stop_strings=`, ...).
- "text-classification": `{"label": str, "score": float}` per text (the best label; `top_k=None` gives all).
- "token-classification": per text, a list of `{"entity", "score", "index", "word", "start", "end"}` for the
  tokens whose label is not "O".
- "question-answering": `{"score", "start", "end", "answer"}` for `question=`, `context=` (or lists of them).

The backend defaults to the first installed of pt, tf, flax; the model is a directory, a Hub id or a loaded
model of that backend, and the tokenizer defaults to the model's (AutoTokenizer).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from .._backends import BACKENDS

__all__ = ["pipeline", "SUPPORTED_TASKS", "Pipeline", "TextGenerationPipeline", "TextClassificationPipeline",
           "TokenClassificationPipeline", "QuestionAnsweringPipeline"]


def default_backend() -> str:
    """The first backend (pt, tf, flax) whose framework is installed."""
    for backend, (modules, _) in BACKENDS.items():
        if all(importlib.util.find_spec(m) is not None for m in modules):
            return backend
    raise ImportError("no deep-learning framework is installed: pip install 'twinformers[pt]' (or [tf], [flax])")


class Pipeline:
    """A model, its tokenizer and the backend they run in; subclasses implement `__call__`."""

    auto_class = ""

    def __init__(self, model: Any, tokenizer: Any, backend: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.backend = backend

    def _to_backend(self, array: np.ndarray) -> Any:
        if self.backend == "pt":
            import torch

            return torch.from_numpy(np.ascontiguousarray(array)).to(self.model.device)
        return array

    @staticmethod
    def _to_numpy(value: Any) -> np.ndarray:
        if hasattr(value, "detach"):
            value = value.detach().float().cpu() if value.is_floating_point() else value.detach().cpu()
        return np.asarray(value)

    def _forward(self, ids: list[int], **inputs: Any) -> Any:
        """One unpadded row through the model (no grad in PyTorch)."""
        batch = self._to_backend(np.asarray([ids], dtype=np.int64 if self.backend == "pt" else np.int32))
        if self.backend == "pt":
            import torch

            with torch.inference_mode():
                return self.model(batch, **inputs)
        return self.model(batch, **inputs)

    def _label(self, index: int) -> str:
        id2label = getattr(self.model.config, "id2label", None) or {}
        return str(id2label.get(index, id2label.get(str(index), f"LABEL_{index}")))


class TextGenerationPipeline(Pipeline):
    auto_class = "AutoModelForCausalLM"

    def __call__(self, text_inputs: str | list[str], return_full_text: bool = True, **generate_kwargs: Any
                 ) -> list:
        single = isinstance(text_inputs, str)
        prompts = [text_inputs] if single else list(text_inputs)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"text-generation takes a string or a list of strings, got {text_inputs!r}")
        encoded = [self.tokenizer.encode(p) for p in prompts]
        for prompt, ids in zip(prompts, encoded):
            if not ids:
                raise ValueError(f"the prompt {prompt!r} encodes to no tokens")
        pad_token_id = self._pad_token_id()
        width = max(len(ids) for ids in encoded)
        input_ids = np.full((len(prompts), width), pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(prompts), width), dtype=np.int64)
        for row, ids in enumerate(encoded):  # left padding: each row generates what it would alone
            input_ids[row, width - len(ids) :] = ids
            attention_mask[row, width - len(ids) :] = 1
        generate_kwargs.setdefault("pad_token_id", pad_token_id)
        generate_kwargs.setdefault("tokenizer", self.tokenizer)
        sequences = self._to_numpy(self.model.generate(
            self._to_backend(input_ids), attention_mask=self._to_backend(attention_mask), **generate_kwargs
        ))
        if hasattr(sequences, "sequences") or sequences.dtype == object:
            raise ValueError("text-generation returns texts: do not pass return_dict_in_generate=True")
        per_prompt = sequences.shape[0] // len(prompts)
        results = []
        for row, prompt in enumerate(prompts):
            texts = []
            for sequence in sequences[row * per_prompt : (row + 1) * per_prompt]:
                text = self.tokenizer.decode(sequence[width:].tolist(), skip_special_tokens=True)
                texts.append({"generated_text": prompt + text if return_full_text else text})
            results.append(texts)
        return results[0] if single else results

    def _pad_token_id(self) -> int:
        config = self.model.generation_config
        for candidate in (config.pad_token_id, *config.eos_token_ids, self.tokenizer.pad_token_id,
                          self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0


class TextClassificationPipeline(Pipeline):
    auto_class = "AutoModelForSequenceClassification"

    def __call__(self, inputs: str | list[str], top_k: int | None = 1) -> list:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        results = []
        for text in texts:
            logits = self._to_numpy(self._forward(_encode(self.tokenizer, text)).logits)[0].astype(np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            ranked = [{"label": self._label(int(i)), "score": float(probs[i])} for i in np.argsort(-probs)]
            results.append(ranked[:top_k] if top_k is not None else ranked)
        if top_k == 1:
            results = [ranked[0] for ranked in results]
        return results


class TokenClassificationPipeline(Pipeline):
    auto_class = "AutoModelForTokenClassification"

    def __call__(self, inputs: str | list[str], ignore_labels: tuple[str, ...] = ("O",)) -> list:
        single = isinstance(inputs, str)
        results = []
        for text in [inputs] if single else list(inputs):
            ids = _encode(self.tokenizer, text)
            logits = self._to_numpy(self._forward(ids).logits)[0].astype(np.float64)  # (T, num_labels)
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            spans = char_spans(self.tokenizer, ids)
            entities = []
            for index, (token_probs, (start, end)) in enumerate(zip(probs, spans)):
                label = self._label(int(token_probs.argmax()))
                if label in ignore_labels:
                    continue
                entities.append({"entity": label, "score": float(token_probs.max()), "index": index,
                                 "word": self.tokenizer.convert_ids_to_tokens(ids[index]), "start": start, "end": end})
            results.append(entities)
        return results[0] if single else results


class QuestionAnsweringPipeline(Pipeline):
    auto_class = "AutoModelForQuestionAnswering"

    def __call__(self, question: str | list[str] | None = None, context: str | list[str] | None = None,
                 max_answer_len: int = 15, max_seq_len: int | None = None, doc_stride: int | None = None
                 ) -> dict | list[dict]:
        """The best answer span of each context, as Hugging Face's pipeline: a context longer than fits is read
        in overlapping windows (question + up to W = `max_seq_len - len(question)` context tokens, consecutive
        windows sharing `doc_stride` tokens); each window's start and end probabilities are normalised over
        its context tokens, and the best span of all windows wins.

        Args:
            max_answer_len: the longest answer, in tokens. max_seq_len: tokens per forward (default: the
                model's position table). doc_stride: tokens consecutive windows share (default
                min(W // 2, 128); less than W).
        """
        if question is None or context is None:
            raise ValueError("question-answering needs question= and context=")
        single = isinstance(question, str)
        questions = [question] if single else list(question)
        contexts = [context] * len(questions) if isinstance(context, str) else list(context)
        if len(contexts) != len(questions):
            raise ValueError(f"got {len(questions)} questions and {len(contexts)} contexts")
        positions = self.model.config.max_position_embeddings
        max_seq_len = max_seq_len or positions
        if not 0 < max_seq_len <= positions:
            raise ValueError(f"max_seq_len={max_seq_len} must be in [1, {positions}] (the model's position table)")
        results = []
        for q, c in zip(questions, contexts):
            question_ids, context_ids = _encode(self.tokenizer, q), _encode(self.tokenizer, c)
            window = max_seq_len - len(question_ids)
            if window < 1:
                raise ValueError(f"the question is {len(question_ids)} tokens, no room for the context in "
                                 f"max_seq_len={max_seq_len}")
            stride = min(window // 2, 128) if doc_stride is None else doc_stride
            if not 0 <= stride < window:
                raise ValueError(f"doc_stride={stride} must be in [0, {window}) (the context tokens per window: "
                                 f"max_seq_len={max_seq_len} minus the question's {len(question_ids)})")
            step = window - stride
            best = (-1.0, 0, 0)
            for offset in range(0, max(len(context_ids) - window, 0) + step, step):
                score, first, last = self._best_span(question_ids, context_ids[offset : offset + window],
                                                     max_answer_len)
                if score > best[0]:
                    best = (score, offset + first, offset + last)
                if offset + window >= len(context_ids):
                    break
            score, first, last = best
            spans = char_spans(self.tokenizer, context_ids)
            start, end = spans[first][0], spans[last][1]
            results.append({"score": score, "start": start, "end": end, "answer": c[start:end]})
        return results[0] if single else results

    def _best_span(self, question_ids: list[int], context_ids: list[int], max_answer_len: int
                   ) -> tuple[float, int, int]:
        """One forward of question + context: the best (probability, first, last) context-token span."""
        outputs = self._forward(question_ids + context_ids)
        offset = len(question_ids)  # the answer must lie in the context
        start_logits = self._to_numpy(outputs.start_logits)[0, offset:].astype(np.float64)
        end_logits = self._to_numpy(outputs.end_logits)[0, offset:].astype(np.float64)
        start_probs = np.exp(start_logits - start_logits.max())
        start_probs /= start_probs.sum()
        end_probs = np.exp(end_logits - end_logits.max())
        end_probs /= end_probs.sum()
        scores = np.triu(start_probs[:, None] * end_probs[None, :])  # start <= end
        scores = np.tril(scores, max_answer_len - 1)  # at most max_answer_len tokens
        first, last = np.unravel_index(int(scores.argmax()), scores.shape)
        return float(scores[first, last]), int(first), int(last)


def _encode(tokenizer: Any, text: str) -> list[int]:
    if not isinstance(text, str):
        raise ValueError(f"expected a string, got {text!r}")
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError(f"{text!r} encodes to no tokens")
    return list(ids)


def char_spans(tokenizer: Any, ids: list[int]) -> list[tuple[int, int]]:
    """(start, end) character span of each token in the decoded text (by decoding growing prefixes)."""
    spans, previous = [], 0
    for i in range(len(ids)):
        length = len(tokenizer.decode(ids[: i + 1]).rstrip("\ufffd"))
        spans.append((previous, max(length, previous)))
        previous = max(length, previous)
    return spans


SUPPORTED_TASKS: dict[str, type[Pipeline]] = {
    "text-generation": TextGenerationPipeline,
    "text-classification": TextClassificationPipeline,
    "sentiment-analysis": TextClassificationPipeline,
    "token-classification": TokenClassificationPipeline,
    "ner": TokenClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
}


def pipeline(task: str, model: Any = None, backend: str | None = None, tokenizer: Any = None,
             **model_kwargs: Any) -> Pipeline:
    """Build the pipeline for `task`.

    Args:
        task: "text-generation", "text-classification" ("sentiment-analysis"), "token-classification" ("ner")
            or "question-answering".
        model: a checkpoint directory, a Hub id, or a loaded model of `backend`; default: the tiny GPT-2 embedded
            in twinformers (text-generation only).
        backend: "pt", "tf" or "flax"; default: the first installed.
        tokenizer: a tokenizer or where to load one from; default: the model's.
        **model_kwargs: passed to `from_pretrained` (`revision=`, `local_files_only=`, `dtype=`, ...).
    """
    if task not in SUPPORTED_TASKS:
        raise ValueError(f"unknown pipeline task {task!r}; supported: {', '.join(sorted(SUPPORTED_TASKS))}")
    cls = SUPPORTED_TASKS[task]
    if backend is None:
        backend = default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if model is None:
        if cls is not TextGenerationPipeline:
            raise ValueError(f"the {task!r} pipeline needs model= (a checkpoint with that head)")
        from ..demo.embedded import embedded_model_path

        model = embedded_model_path()
    source = model if isinstance(model, str) else getattr(model.config, "name_or_path", None)
    if isinstance(model, str):
        module = importlib.import_module(f"twinformers.{backend}")
        model = getattr(module, cls.auto_class).from_pretrained(model, **model_kwargs)
    if tokenizer is None or isinstance(tokenizer, str):
        if tokenizer is None and not source:
            raise ValueError("pass tokenizer=: the model was not loaded from a directory the tokenizer can come from")
        from ..tokenization.auto import AutoTokenizer

        hub = {k: model_kwargs[k] for k in ("revision", "local_files_only") if k in model_kwargs}
        tokenizer = AutoTokenizer.from_pretrained(tokenizer or source, **hub)
    return cls(model, tokenizer, backend)
