"""Moving weights between frameworks.

- `tables`: canonical (PyTorch) names ↔ TensorFlow names ↔ Flax paths, per family and head, with the layout
  transforms.
- `converter`: the streaming any-format → any-format converter behind `twinformers convert` (and `--verify`).
"""
