"""Checkpoint files on disk, framework-free: every Hugging Face weight format read lazily and written
atomically.

- `files`: file names, resolving local paths and Hub ids, atomic writes, dtypes, the reader base class.
- `safetensors`: `model.safetensors` (memory-mapped reader, streaming writer).
- `sharding`: sharded checkpoints (`*.index.json`), shard planning and index files.
- `torch_bin`, `keras_h5`, `flax_msgpack`: `pytorch_model.bin`, `tf_model.h5`, `flax_model.msgpack`.
- `canonical`: any checkpoint as one mapping from canonical (PyTorch) key to array (`open_checkpoint`).
- `loading`: Hugging Face's rules for matching a checkpoint to a model (missing, unexpected, mismatched keys).
- `quantized`: weight-only int8 (`quantize("int8")`): per-channel scales and the checkpoint tensor names.
"""
