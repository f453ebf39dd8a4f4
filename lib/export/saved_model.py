"""`--format saved_model`: a TensorFlow SavedModel of a TensorFlow twin, served by TF Serving or
`tf.saved_model.load` with only TensorFlow installed.

Signatures:
    serving_default  `input_ids`, `attention_mask` (int32, (B, T)) → `logits` (the head's logits).
    generate         (causal LM with a tokenizer) `text` (tf.string, (B,)) → `text` (tf.string, (B,)): each prompt
                     plus its greedy continuation of `max_new_tokens` tokens (up to and including an end-of-text
                     token), tokenized in-graph by `TFGPT2Tokenizer`, decoded by the twin's XLA decode loop and
                     detokenized in-graph (invalid UTF-8 becomes U+FFFD, as `decode` does).
Prompts are left-padded to `max_prompt_length` tokens (default: the position table minus `max_new_tokens`): the
decode loop is compiled for that one length; a longer prompt is an InvalidArgumentError naming the limit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from . import head_kind, staged_output

__all__ = ["export"]

_SUPPORTED = ("causal_lm", "sequence_classification", "token_classification")


def export(model: Any, out: str | os.PathLike, force: bool = False, tokenizer: Any = None,
           max_new_tokens: int = 32, max_prompt_length: int | None = None) -> None:
    """Write a SavedModel of a TensorFlow twin to the directory `out` (see the module docstring).

    Args:
        model: a TensorFlow causal LM, sequence or token classification twin.
        out: output directory; staged next to it, then renamed.
        force: replace an existing `out`.
        tokenizer: a GPT2Tokenizer / GPT2TokenizerFast / TFGPT2Tokenizer for the `generate` signature (causal LM
            only); None writes `serving_default` alone.
        max_new_tokens: tokens `generate` appends to each prompt.
        max_prompt_length: the prompt length `generate` is compiled for.
    """
    kind = head_kind(model, _SUPPORTED, "saved_model")
    module = tf.Module()
    # Only the variables are tracked (as Keras' own ExportArchive does): tracking the Keras model itself would make
    # the saver trace the model's other functions with made-up inputs.
    module.model_variables = list(model.variables)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                                  tf.TensorSpec([None, None], tf.int32, name="attention_mask")])
    def serving_default(input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": model(input_ids=input_ids, attention_mask=attention_mask).logits}

    signatures = {"serving_default": serving_default}
    if tokenizer is not None:
        if kind != "causal_lm":
            raise ValueError(f"a generate signature needs a causal LM head, not {type(model).__name__}")
        signatures["generate"] = _generate_signature(model, _tf_tokenizer(tokenizer), tokenizer, max_new_tokens,
                                                     max_prompt_length)
    with staged_output(out, force) as stage:
        tf.saved_model.save(module, stage, signatures=signatures)


def _tf_tokenizer(tokenizer: Any) -> Any:
    from ..tf.tokenizer import TFGPT2Tokenizer

    return tokenizer if isinstance(tokenizer, TFGPT2Tokenizer) else TFGPT2Tokenizer.from_tokenizer(tokenizer)


def _token_bytes(tf_tokenizer: Any, vocab_size: int) -> np.ndarray:
    """(V,) object array: the raw bytes each token id stands for (b"" for ids the tokenizer does not have)."""
    from ..tokenization.gpt2 import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    table = np.full(vocab_size, b"", dtype=object)
    for token, index in tf_tokenizer._vocab_items:
        if index < vocab_size:
            table[index] = bytes(byte_of[char] for char in token)
    for added in tf_tokenizer._added_tokens:
        if added["id"] < vocab_size:
            table[added["id"]] = added["content"].encode("utf-8")
    return table


def _generate_signature(model: Any, tf_tokenizer: Any, source: Any, max_new_tokens: int,
                        max_prompt_length: int | None) -> Any:
    from ..generation.utils import prepare_generation

    positions = model.config.max_position_embeddings
    prompt_length = positions - max_new_tokens if max_prompt_length is None else max_prompt_length
    if not 0 < max_new_tokens < positions or not 0 < prompt_length <= positions - max_new_tokens:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} and max_prompt_length={prompt_length} must be positive and fit the "
            f"position table ({positions})"
        )
    # The settings of a greedy `generate` call (the prompt shape itself is traced symbolically below).
    plan = prepare_generation(model.config, model.generation_config, np.ones((1, prompt_length), np.int64),
                              do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                              pad_token_id=_pad_id(model, source))
    prefill, step, cond = model._decoder(plan, prompt_length)
    loop = tf.function(
        lambda input_ids, prompt_mask, position_ids, rng: tf.while_loop(
            cond, lambda state: (step(state),), (prefill(input_ids, prompt_mask, position_ids, rng),))[0],
        jit_compile=True,
    )
    token_bytes = tf.constant(_token_bytes(tf_tokenizer, model.config.vocab_size), tf.string)
    eos = tf.constant(plan.eos_token_ids or [-1], tf.int32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def generate(text: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = tf.cast(tf_tokenizer.tokenize(text), tf.int32)  # (B, None) ragged
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        check = tf.debugging.assert_less_equal(
            lengths, prompt_length, message=f"a prompt is longer than the {prompt_length} tokens this SavedModel "
                                            "was exported for (max_prompt_length)")
        with tf.control_dependencies([check]):
            dense = ids.to_tensor(default_value=plan.pad_token_id, shape=[None, prompt_length])
        # Left padding: row i shifted right by its padding, so every prompt ends at the last column.
        shift = prompt_length - lengths
        columns = (tf.range(prompt_length)[None, :] - shift[:, None]) % prompt_length
        input_ids = tf.gather(dense, columns, batch_dims=1)
        prompt_mask = tf.cast(tf.range(prompt_length)[None, :] >= shift[:, None], tf.int32)
        position_ids = tf.where(prompt_mask == 0, 1, tf.cumsum(prompt_mask, axis=-1) - 1)
        state = loop(input_ids, prompt_mask, position_ids, tf.zeros((2,), tf.int32))
        sequences = state.sequences[:, :state.cur_len]
        new = sequences[:, prompt_length:]
        is_eos = tf.reduce_any(new[:, :, None] == eos[None, None, :], axis=-1)
        # New tokens up to and including the first end-of-text token; then the row is finished (padding).
        new_keep = tf.cumsum(tf.cast(is_eos, tf.int32), axis=1, exclusive=True) == 0
        keep = tf.concat([prompt_mask > 0, new_keep], axis=1)
        tokens = tf.ragged.boolean_mask(sequences, keep)
        pieces = tf.gather(token_bytes, tokens)
        joined = tf.strings.reduce_join(pieces, axis=1)
        return {"text": tf.strings.unicode_transcode(joined, "UTF-8", "UTF-8", errors="replace")}

    return generate


def _pad_id(model: Any, tokenizer: Any) -> int:
    """The id finished rows are padded with: the model's pad token, else its end-of-text token, else 0."""
    config = model.generation_config
    for candidate in (config.pad_token_id, getattr(tokenizer, "pad_token_id", None)):
        if candidate is not None:
            return int(candidate)
    eos = config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    return 0 if eos is None else int(eos)
