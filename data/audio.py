"""Audio I/O: any soundfile-readable file -> float32 mono at 16 kHz, and length fixing by tiling.

No torch here on purpose: the store and the protocol tools import this module without the model stack.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from utils.errors import UserError
from utils.tiling import fix_length, fix_length_batch

SAMPLE_RATE = 16000
#: soxr quality for resampling; "VHQ" keeps the pass band flat up to ~0.91 Nyquist.
RESAMPLE_QUALITY = "VHQ"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file (FLAC, WAV, ...) as float32 mono samples at ``sample_rate`` Hz, shape (n,).

    Channels are averaged; other rates are resampled with soxr. Missing, unreadable, truncated, empty
    or non-finite files raise `UserError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: audio file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected an audio file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: audio file is empty (0 bytes)")
    try:
        with sf.SoundFile(path) as f:
            native_rate = f.samplerate
            expected = f.frames
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise UserError(f"{path}: cannot read audio ({_first_line(exc)})") from exc
    # libsndfile may stop early without an error on a cut-off PCM file; the header knows the length.
    if 0 < expected and data.shape[0] < expected:
        raise UserError(f"{path}: audio is truncated (header says {expected} samples, read {data.shape[0]})")
    if data.shape[0] == 0:
        raise UserError(f"{path}: audio has no samples (zero length)")
    if not np.isfinite(data).all():
        raise UserError(f"{path}: audio contains NaN or infinite samples")
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if native_rate != sample_rate:
        wave = soxr.resample(wave, native_rate, sample_rate, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(wave, dtype=np.float32)


__all__ = ["SAMPLE_RATE", "fix_length", "fix_length_batch", "load_audio"]
