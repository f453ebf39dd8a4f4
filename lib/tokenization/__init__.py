"""Tokenizers, framework-free: the shared base (`base`), the pure-Python byte-level BPE `GPT2Tokenizer` (`gpt2`),
`GPT2TokenizerFast` over the `tokenizers` library (`gpt2_fast`) and `AutoTokenizer` (`auto`). The in-graph
TensorFlow tokenizer lives with its backend (`twinformers.tf.tokenizer`).
"""
