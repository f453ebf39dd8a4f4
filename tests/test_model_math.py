import numpy as np
import pytest

from twinformers.model_math import MASK_VALUE, causal_mask, positions_from_mask, rotary_tables


def test_mask_value_is_float32_min():
    assert MASK_VALUE == np.finfo(np.float32).min


def test_causal_mask_square():
    mask = causal_mask(4, 4)
    np.testing.assert_array_equal(mask, np.tril(np.ones((4, 4), bool)))


def test_causal_mask_with_past():
    # 2 new queries after 3 cached positions: they sit at positions 3 and 4.
    mask = causal_mask(2, 5)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_local_window_matches_brute_force():
    window = 3
    mask = causal_mask(6, 6, window=window)
    for i in range(6):
        for j in range(6):
            assert mask[i, j] == (j <= i and i - j < window)
    # HF GPT-Neo: bias = tril(ones) XOR tril(ones, -window)
    ones = np.tril(np.ones((6, 6), bool))
    np.testing.assert_array_equal(mask, ones ^ np.tril(ones, -window))


def test_causal_mask_rejects_more_queries_than_keys():
    with pytest.raises(ValueError, match="query_len=3 cannot exceed key_len=2"):
        causal_mask(3, 2)


def test_rotary_tables_match_the_formula():
    sin, cos = rotary_tables(7, 4)
    assert sin.shape == cos.shape == (7, 2) and sin.dtype == np.float32
    positions = np.arange(7)[:, None]
    freqs = 10000.0 ** (-np.arange(0, 4, 2) / 4)[None, :]
    np.testing.assert_allclose(sin, np.sin(positions * freqs), atol=1e-6)
    np.testing.assert_allclose(cos, np.cos(positions * freqs), atol=1e-6)


def test_positions_from_mask_left_padding():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(positions_from_mask(mask), [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(positions_from_mask(mask, past_length=4), [[2], [4]])
