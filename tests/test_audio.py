"""data/audio.py: reading any audio file as 16 kHz mono float32, length fixing.

Bad files (missing, empty, truncated, NaN, ...) are in test_reliability.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from data.audio import SAMPLE_RATE, fix_length, fix_length_batch, load_audio


def _sine(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_16k_flac_round_trip_and_short_clip(tmp_path):
    x = _sine(220.0, SAMPLE_RATE, 0.2)  # 0.2 s: shorter than any model window, still fine to load
    path = tmp_path / "short.flac"
    sf.write(path, x, SAMPLE_RATE)  # 16-bit FLAC
    y = load_audio(path)
    assert y.dtype == np.float32 and y.shape == (3200,)
    np.testing.assert_allclose(y, x, atol=1.0 / 32768)


def test_int16_wav_is_scaled_to_plus_minus_one(tmp_path):
    path = tmp_path / "pcm.wav"
    sf.write(path, np.array([0, 16384, -32768, 32767], dtype=np.int16), SAMPLE_RATE)
    np.testing.assert_array_equal(load_audio(path), np.array([0, 0.5, -1, 32767 / 32768], dtype=np.float32))


def test_8k_stereo_is_downmixed_and_resampled(tmp_path):
    left = _sine(440.0, 8000, 1.0)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # mean over channels = left / 2
    path = tmp_path / "stereo8k.wav"
    sf.write(path, stereo, 8000, subtype="FLOAT")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.shape == (16000,)
    expected = 0.5 * _sine(440.0, SAMPLE_RATE, 1.0)
    # Away from the edges (filter transients) the resampled tone is the 16 kHz tone.
    np.testing.assert_allclose(y[500:-500], expected[500:-500], atol=2e-3)
    assert np.abs(y).max() == pytest.approx(0.25, abs=0.01)


def test_other_target_rate(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _sine(100.0, SAMPLE_RATE, 0.5), SAMPLE_RATE, subtype="FLOAT")
    assert load_audio(path, sample_rate=8000).shape == (4000,)


def test_fix_length_tiles_whole_clip_and_cuts():
    x = np.array([1, 2, 3], dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 8), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(fix_length(x, 2), [1, 2])
    np.testing.assert_array_equal(fix_length(x, 3), [1, 2, 3])
    np.testing.assert_array_equal(fix_length(np.array([5.0]), 4), [5, 5, 5, 5])
    assert fix_length(x, 8).dtype == np.float32


def test_fix_length_64600_from_short_clip():
    x = np.arange(3200, dtype=np.float32)  # 0.2 s
    y = fix_length(x, 64600)
    assert y.shape == (64600,)
    assert y[3200] == 0 and y[64599] == 64599 % 3200


def test_fix_length_batch_and_bad_input():
    batch = fix_length_batch([np.array([1.0, 2.0]), np.arange(5.0)], 4)
    np.testing.assert_array_equal(batch, [[1, 2, 1, 2], [0, 1, 2, 3]])
    assert batch.dtype == np.float32
    with pytest.raises(ValueError):
        fix_length(np.zeros(0), 4)
    with pytest.raises(ValueError):
        fix_length(np.zeros((2, 2)), 4)
