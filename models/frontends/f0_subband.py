"""F0 subband front end (docs/features.md): low-frequency log-magnitude STFT, (1, 45, 600) per utterance."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.fft
import torch
from scipy.signal.windows import blackman

from models.frontends.base import FrontEnd, check_waves, register_frontend
from utils.errors import UserError

TILINGS = ("mirror", "repeat")
METHODS = ("sliding", "dft", "fft")
#: The symmetric Blackman window as sum_c BLACKMAN[c] * exp(2j*pi*c*n/(n_fft-1)), c = -2..2.
BLACKMAN = np.array([0.04, -0.25, 0.42, -0.25, 0.04])


def tile_frames(spec: np.ndarray, n_frames: int, tiling: str = "mirror") -> np.ndarray:
    """Extend a (bins, t) spectrogram along time to exactly ``n_frames`` frames (cut if longer).

    ``mirror``: S, S reversed in time, S, ... (the code released with the paper); ``repeat``: S, S, S, ...
    """
    if tiling not in TILINGS:
        raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
    t = spec.shape[1]
    if t >= n_frames:
        return spec[:, :n_frames]
    period = np.concatenate([spec, spec[:, ::-1]], axis=1) if tiling == "mirror" else spec
    reps = -(-n_frames // period.shape[1])
    return np.tile(period, (1, reps))[:, :n_frames]


@register_frontend("f0")
class F0SubbandFrontEnd(FrontEnd):
    """Low-frequency log-magnitude STFT (docs/features.md): (1, 45, 600) float32 per utterance.

    Keep the first 80,000 samples, pre-emphasis 0.97, symmetric Blackman window, n_fft = win = 1728,
    hop 130, centred frames with n_fft/2 zeros at both ends, ln(|X| + e^-80), bins 0-44, frames 0-599;
    shorter clips are tiled in time (mirror by default). Everything is float64 inside, float32 out;
    the result matches the float64 reference vectors to < 1e-6.

    ``method`` (all three agree to ~1e-9 before rounding to float32; tested on the reference vectors):

    - "sliding" (default): the Blackman window is a sum of five complex exponentials, so each kept bin
      is a weighted sum of five rectangular-window DFTs, and those are sums of partial DFTs of
      hop-sized blocks that the ~13 overlapping frames share. One (blocks, 130) @ (130, 450) product
      per batch instead of one (frames, 1728) @ (1728, 90): about half the flops and no
      (frames, 1728) framing copy. Only local 13-block sums are taken (no running prefix sums), so
      digital silence still gives exactly ln(e^-80) = -80.
    - "dft": the 45 bins as one (90, 1728) windowed-DFT matrix product over all frames, as docs/features.md
      suggests; the plainest statement of the feature.
    - "fft": a real FFT per clip, first 45 bins kept before the log.

    bench/bench_preprocess.py measures all three against a per-file full STFT.
    """

    name = "f0"
    store_dtype = np.float32
    derived_settings = frozenset({"window", "log"})

    @classmethod
    def store_tag(cls, settings: Mapping[str, Any]) -> str:
        """``f0`` (mirror tiling, 600 frames), ``f0-repeat``, ``f0-200frames``: the tags stores always had."""
        tiling = settings.get("tiling", "mirror")
        frames = int(settings.get("n_frames", 600))
        suffix = ("" if tiling == "mirror" else f"-{tiling}") + ("" if frames == 600 else f"-{frames}frames")
        return "f0" + suffix

    def __init__(
        self,
        tiling: str = "mirror",
        max_samples: int = 80000,
        pre_emphasis: float = 0.97,
        n_fft: int = 1728,
        hop: int = 130,
        n_bins: int = 45,
        n_frames: int = 600,
        method: str = "sliding",
        batch_size: int | None = None,
        workers: int = 1,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise UserError(f"f0 front end: method must be one of {METHODS}, got {method!r}")
        if tiling not in TILINGS:
            raise UserError(f"f0 front end: tiling must be one of {TILINGS}, got {tiling!r}")
        if not 0 < n_bins <= n_fft // 2 + 1:
            raise UserError(f"f0 front end: n_bins must be in 1..{n_fft // 2 + 1}, got {n_bins}")
        self.tiling = tiling
        self.n_samples = int(max_samples)
        self.pre_emphasis = float(pre_emphasis)
        self.n_fft = int(n_fft)
        self.hop = int(hop)
        self.n_bins = int(n_bins)
        self.n_frames = int(n_frames)
        self.method = method
        # Clips per numpy call. "dft": 8, one large matrix product; "sliding": 1, its intermediate
        # arrays then stay in cache (batch 8 ran ~25 % slower, bench/bench_preprocess.py).
        self.batch_size = max(1, int(batch_size or (8 if method == "dft" else 1)))
        # "fft": threads over the frames of a clip (-1 = all cores; the numbers do not depend on it).
        # Default 1: once scipy's FFT thread pool exists, the rest of the process ran ~30 % slower here.
        self.workers = int(workers)
        # "sliding": clips run in parallel threads with single-threaded BLAS (numpy releases the GIL);
        # 2.3x the per-file STFT against 1.5-2.1x with BLAS threads inside each small product, here.
        # None = torch's thread count, i.e. this process's share of the cores under torchrun.
        self.threads = max(1, int(threads or torch.get_num_threads()))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self.feature_shape = (1, self.n_bins, self.n_frames)
        self._window = blackman(self.n_fft, sym=True)
        self._dft_t = self._dft_matrix() if method == "dft" else None
        if method == "sliding":
            if self.hop > self.n_fft:
                raise UserError(f"f0 front end: 'sliding' needs hop <= n_fft ({self.hop} > {self.n_fft})")
            self._sliding_tables()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for DataLoader workers: the thread pool is not copied (each process makes its own)."""
        return {**super().__getstate__(), "_pool": None}

    def _dft_matrix(self) -> np.ndarray:
        """(2·n_bins, n_fft) float64: windowed cos rows, then -sin rows, so M @ frame = [Re X; Im X]."""
        n = np.arange(self.n_fft)
        k = np.arange(self.n_bins)
        # Reduce k·n modulo n_fft in integers first: exact phases instead of large float arguments.
        phase = 2.0 * np.pi * ((np.outer(k, n) % self.n_fft) / self.n_fft)
        return np.concatenate([self._window * np.cos(phase), -self._window * np.sin(phase)])

    def _sliding_tables(self) -> None:
        """Constant tables of the "sliding" method (see the class docstring for the derivation).

        Frame m starts at block m (hop-sized blocks of the padded clip) and covers ``q_full`` whole
        blocks plus the first ``rest`` samples of block m + q_full. With phi = k/n_fft - c/(n_fft - 1)
        (bin k, c = -2..2) and P_j(phi) the DFT at phi of block j, phased by e^{-2i pi phi j hop}:
            X_k(m) = e^{2i pi k m hop/n_fft} * sum_c a_c e^{-2i pi c m hop/(n_fft-1)} * sum_j P_j(phi).
        The leading factor has modulus 1 and is dropped, since only |X| is kept. Phases are reduced
        modulo 1 in integers before the float conversion.
        """
        n, h = self.n_fft, self.hop
        self._q_full, self._rest = divmod(n, h)
        k = np.repeat(np.arange(self.n_bins), 5)[None, :]  # columns: (bin, c) with c fastest
        c = np.tile(np.arange(-2, 3), self.n_bins)[None, :]

        def cycles(t: np.ndarray) -> np.ndarray:  # phi * t modulo 1, for integer sample offsets t
            return ((k * t) % n) / n - ((c * t) % (n - 1)) / (n - 1)

        r = np.arange(h)[:, None]
        within = np.empty((h, 2 * k.shape[1]))  # interleaved (cos, -sin): the product views as complex
        within[:, 0::2] = np.cos(2 * np.pi * cycles(r))
        within[:, 1::2] = -np.sin(2 * np.pi * cycles(r))
        self._block_dft = within
        self._rest_dft = np.ascontiguousarray(within[: self._rest])
        n_blocks = self.n_frames + self._q_full + 1
        self._block_phase = np.exp(-2j * np.pi * cycles(np.arange(n_blocks)[:, None] * h))
        m = np.arange(self.n_frames)[:, None] * h
        self._frame_weight = BLACKMAN[None, :] * np.exp(
            -2j * np.pi * ((np.arange(-2, 3)[None, :] * m) % (n - 1)) / (n - 1))

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable parameters; `build_frontend` of this dict gives an identical front end."""
        return {
            "name": self.name,
            "tiling": self.tiling,
            "max_samples": self.n_samples,
            "pre_emphasis": self.pre_emphasis,
            "n_fft": self.n_fft,
            "hop": self.hop,
            "window": "blackman-symmetric",
            "n_bins": self.n_bins,
            "n_frames": self.n_frames,
            "log": "ln(|X| + e^-80), float64",
            "method": self.method,
        }

    def n_stft_frames(self, n_samples: int) -> int:
        """Number of centred STFT frames for a clip of ``n_samples`` (after the 80,000-sample cut)."""
        n = min(n_samples, self.n_samples)
        return 1 + n // self.hop  # the padded length n + n_fft, minus n_fft, over the hop

    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Waves (any lengths, 16 kHz) -> (B, 1, n_bins, n_frames) float32 log-magnitudes."""
        waves = check_waves(waves)
        out = np.empty((len(waves), *self.feature_shape), dtype=np.float32)
        starts = range(0, len(waves), self.batch_size)

        def run(start: int) -> None:
            chunk = waves[start : start + self.batch_size]
            out[start : start + len(chunk), 0] = self._extract_chunk(chunk)

        if self.method != "sliding" or self.threads == 1 or len(starts) == 1:
            for start in starts:
                run(start)
            return out
        if self._pool is None or self._pool_pid != os.getpid():
            # a forked DataLoader worker inherits the pool object but not its threads: make its own
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="f0")
            self._pool_pid = os.getpid()
        with _single_threaded_blas():
            list(self._pool.map(run, starts))
        return out

    def _padded(self, wave: np.ndarray, extra: int) -> tuple[np.ndarray, int]:
        """(buffer, t): the pre-emphasised clip (first ``n_samples``) in float64 after n_fft/2 zeros, in a
        zero buffer that reaches ``extra`` samples past the start of the last kept frame (cut if the clip
        is longer); t = number of kept frames."""
        x = wave[: self.n_samples].astype(np.float64)
        t = min(self.n_stft_frames(len(x)), self.n_frames)  # later frames are never kept
        pad = self.n_fft // 2
        buf = np.zeros((t - 1) * self.hop + extra)
        used = min(len(x), len(buf) - pad)
        buf[pad] = x[0]
        buf[pad + 1 : pad + used] = x[1:used] - self.pre_emphasis * x[: used - 1]
        return buf, t

    def _frames(self, wave: np.ndarray) -> np.ndarray:
        """Pre-emphasised, centred, zero-padded float64 frames of one clip: a (t, n_fft) strided view."""
        buf, t = self._padded(wave, self.n_fft)
        return np.lib.stride_tricks.sliding_window_view(buf, self.n_fft)[:: self.hop][:t]

    def _fft_logmag(self, wave: np.ndarray) -> np.ndarray:
        """One clip -> (n_bins, t) float64 log-magnitudes via a full real FFT of each frame."""
        windowed = self._frames(wave) * self._window
        spec = scipy.fft.rfft(windowed, axis=1, overwrite_x=True, workers=self.workers)[:, : self.n_bins]
        return np.log(np.hypot(spec.real, spec.imag) + np.exp(-80.0)).T

    def _sliding_logmag(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Batch of clips -> list of (n_bins, t_i) float64 log-magnitudes, "sliding" method."""
        h, q_full = self.hop, self._q_full
        counts, blocks = [], []
        for wave in waves:
            buf, t = self._padded(wave, (q_full + 1) * h)  # blocks 0 .. t-1+q_full hold every kept frame
            counts.append(t)
            blocks.append(buf.reshape(-1, h))
        a = np.concatenate(blocks)  # (total blocks, hop): clips back to back
        part = (a @ self._block_dft).view(np.complex128)  # (total blocks, 5·bins) partial DFTs
        rest = (a[:, : self._rest] @ self._rest_dft).view(np.complex128) if self._rest else None
        start = 0
        for t in counts:  # absolute phase of each block within its own clip
            stop = start + t + q_full
            part[start:stop] *= self._block_phase[: t + q_full]
            if rest is not None:
                rest[start:stop] *= self._block_phase[: t + q_full]
            start = stop
        frames = _window_sum(part, q_full)  # row m: sum of blocks m .. m+q_full-1
        if rest is not None:
            frames = frames[: len(a) - q_full] + rest[q_full:]
        out, start = [], 0
        for t in counts:  # rows of frames that straddle two clips are never read
            s = frames[start : start + t].reshape(t, self.n_bins, 5)
            x = np.einsum("mkc,mc->mk", s, self._frame_weight[:t])
            out.append(np.log(np.abs(x) + np.exp(-80.0)).T)
            start += t + q_full
        return out

    def _extract_chunk(self, waves: list[np.ndarray]) -> np.ndarray:
        """Batch of waves -> (B, n_bins, n_frames) float32."""
        if self.method == "sliding":
            return np.stack([tile_frames(s, self.n_frames, self.tiling) for s in self._sliding_logmag(waves)])
        if self.method == "fft":
            # One clip at a time keeps the (frames, n_fft) arrays cache-sized; batching them was slower.
            return np.stack([tile_frames(self._fft_logmag(w), self.n_frames, self.tiling) for w in waves])
        views = [self._frames(w) for w in waves]
        # One matrix product for the whole batch; (2·bins, n_fft) @ (n_fft, frames) is the faster
        # orientation for OpenBLAS with so few output columns.
        frames = np.concatenate(views)  # (total frames, n_fft): the copy numpy would make anyway
        spec = self._dft_t @ frames.T  # (2·bins, total frames) = [Re; Im]
        logmag = np.log(np.hypot(spec[: self.n_bins], spec[self.n_bins :]) + np.exp(-80.0))
        bounds = np.cumsum([len(v) for v in views])[:-1]
        parts = np.split(logmag, bounds, axis=1)
        return np.stack([tile_frames(part, self.n_frames, self.tiling) for part in parts])


_blas_controller = None


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit numpy's BLAS to one thread while the block runs (threadpoolctl)."""
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def _window_sum(x: np.ndarray, width: int) -> np.ndarray:
    """Sums of ``width`` consecutive rows, out[i] = x[i] + ... + x[i + width - 1], built by doubling.

    Only local sums (no running prefix sum): rows that are exactly zero stay exactly zero.
    """
    n_out = len(x) - width + 1
    out, offset, power, size = None, 0, x, 1  # power[i] = x[i] + ... + x[i + size - 1]
    while True:
        if width & size:
            piece = power[offset : offset + n_out]
            out = piece if out is None else out + piece
            offset += size
        if size * 2 > width:
            return out
        power = power[:-size] + power[size:]
        size *= 2
