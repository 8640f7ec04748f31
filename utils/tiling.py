"""Length fixing of waveforms by tiling (numpy only; used by the data layer and the front ends)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fix_length(x: np.ndarray, n: int) -> np.ndarray:
    """Return ``x`` (samples,) cut or tiled to exactly ``n`` samples.

    Longer input keeps its first ``n`` samples; shorter input is repeated whole (x, x, x, ...) and cut.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"fix_length expects a 1-D waveform, got shape {x.shape}")
    if n <= 0:
        raise ValueError(f"fix_length needs n > 0, got {n}")
    if x.shape[0] == 0:
        raise ValueError("fix_length cannot tile an empty waveform")
    if x.shape[0] >= n:
        return x[:n]
    reps = -(-n // x.shape[0])
    return np.tile(x, reps)[:n]


def fix_length_batch(waves: Sequence[np.ndarray], n: int, dtype: type = np.float32) -> np.ndarray:
    """Stack waveforms of any lengths into one (B, n) array, each fixed with `fix_length`."""
    out = np.empty((len(waves), n), dtype=dtype)
    for i, wave in enumerate(waves):
        out[i] = fix_length(wave, n)
    return out
