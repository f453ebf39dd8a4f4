"""Mask, position and rotary math, written once in NumPy.

Backends turn these tables into constants or buffers and apply them; they never re-derive them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MASK_VALUE", "causal_mask", "rotary_tables", "positions_from_mask"]

# The one masking constant, applied with where() in every backend (never added to scores).
MASK_VALUE = float(np.finfo(np.float32).min)


def causal_mask(query_len: int, key_len: int, window: int | None = None) -> np.ndarray:
    """Boolean (T, S) mask, True = may attend.

    The T queries are the last T of the S key positions, so query i sits at absolute position
    `S - T + i` and sees keys `j <= S - T + i`. With `window` (GPT-Neo's local attention) it sees only
    the `window` most recent positions, itself included: `S - T + i - j < window`.

    Args:
        query_len: T. key_len: S (>= T). window: local attention width, or None for global attention.
    """
    if query_len > key_len:
        raise ValueError(f"query_len={query_len} cannot exceed key_len={key_len}")
    query_pos = np.arange(key_len - query_len, key_len)[:, None]  # (T, 1)
    key_pos = np.arange(key_len)[None, :]  # (1, S)
    distance = query_pos - key_pos  # (T, S)
    allowed = distance >= 0
    if window is not None:
        allowed &= distance < window
    return allowed


def rotary_tables(num_positions: int, rotary_dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """GPT-J's rotary sin/cos tables, each float32 (num_positions, rotary_dim // 2).

    Frequency k is `base ** (-2k / rotary_dim)`; position p rotates pair k by angle `p * freq_k`. Angles
    are formed in float32 as Hugging Face's `create_sinusoidal_positions` does; sin/cos are evaluated in
    float64 and rounded once, so every backend shares one correctly rounded table.
    """
    exponents = (np.arange(0, rotary_dim, 2, dtype=np.int64) / rotary_dim).astype(np.float32)
    inv_freq = np.float32(1.0) / (np.float32(base) ** exponents)  # (R/2,)
    angles = np.arange(num_positions, dtype=np.float32)[:, None] * inv_freq[None, :]  # (P, R/2)
    angles = angles.astype(np.float64)
    return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


def positions_from_mask(attention_mask: np.ndarray, past_length: int = 0) -> np.ndarray:
    """Position ids that skip padding: `cumsum(mask) - 1`, with padded slots set to 1 (HF `generate`).

    Args:
        attention_mask: (B, S) 0/1 array over past and current tokens.
        past_length: how many leading columns belong to the cache; the result covers the rest.
    Returns:
        (B, S - past_length) int64 positions.
    """
    mask = np.asarray(attention_mask).astype(np.int64)
    positions = np.cumsum(mask, axis=-1) - 1
    positions = np.where(mask == 0, 1, positions)
    return positions[:, past_length:]
