"""RawBoost (docs/augmentation.md): linear and non-linear convolutive noise (LnL), impulsive signal-dependent
noise (ISD) and stationary signal-independent coloured noise (SSI), combined as ``algo`` 0-8.

Reproduces the published code's outputs (``../shared/testvectors/rawboost/``) to floating-point rounding
when given ``np.random.RandomState(seed)``: every random draw is made in the published order with the
published distributions (scalar draws where the original drew shape-(1,) arrays; same values).

Faster than the published code, same numbers:
- the band-stop FIRs are built here with the arithmetic of ``scipy.signal.firwin(..., window="hamming")``
  (bit-identical) minus its per-call checks, and the notch gain comes from one 1024-point real FFT (the
  512 points ``scipy.signal.freqz`` evaluates by default);
- the FIR filtering is an overlap-add FFT convolution instead of ``lfilter``; LnL's N_f filters are
  centred on a common length so that all N_f branches sum in the frequency domain (one inverse FFT).

Everything is float64 (docs/augmentation.md); inputs of other dtypes are converted.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal

ALGOS = tuple(range(9))
#: Published algorithm names, for messages and records.
ALGO_NAMES = {
    0: "none",
    1: "LnL",
    2: "ISD",
    3: "SSI",
    4: "LnL>ISD>SSI",
    5: "LnL>ISD",
    6: "LnL>SSI",
    7: "ISD>SSI",
    8: "LnL+ISD",
}
#: Number of frequency points of scipy.signal.freqz's default ``worN``, used for the notch gain.
FREQZ_POINTS = 512


@dataclass(frozen=True)
class RawBoostParams:
    """The published parameters and defaults (docs/augmentation.md), names as in the published code."""

    N_f: int = 5
    nBands: int = 5
    minF: float = 20
    maxF: float = 8000
    minBW: float = 100
    maxBW: float = 1000
    minCoeff: int = 10
    maxCoeff: int = 100
    minG: float = 0
    maxG: float = 0
    minBiasLinNonLin: float = 5
    maxBiasLinNonLin: float = 20
    P: float = 10
    g_sd: float = 2
    SNRmin: float = 10
    SNRmax: float = 40
    fs: int = 16000

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def settings(self) -> dict[str, Any]:
        return asdict(self)


#: The published defaults.
DEFAULTS = RawBoostParams()


@functools.lru_cache(maxsize=128)
def _firwin_parts(numtaps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """For ``numtaps`` (odd) taps: offsets m from the centre, sinc(m) (the delta, with firwin's 1e-17
    rounding), scipy's symmetric Hamming window, and the centre index."""
    m = np.arange(numtaps) - 0.5 * (numtaps - 1)
    return m, np.sinc(m), scipy.signal.get_window("hamming", numtaps, fftbins=False), numtaps // 2


def _scaled_sinc(a: float, m: np.ndarray, centre: int) -> np.ndarray:
    """a·sinc(a·m), computed as numpy's sinc does (same rounding), without its per-call overhead."""
    t = np.pi * (a * m)
    t[centre] = np.pi * 1.0e-20
    return a * (np.sin(t) / t)


def bandstop_fir(numtaps: int, f1: float, f2: float, fs: float) -> np.ndarray:
    """Hamming-windowed band-stop FIR (numtaps,) stopping [f1, f2] Hz, unit gain at DC: exactly
    ``scipy.signal.firwin(numtaps, [f1, f2], window="hamming", fs=fs)`` for odd numtaps (same operations
    in the same order: when f1 is near 0 the DC normalisation amplifies any rounding difference ~1e7×).
    """
    m, delta, win, centre = _firwin_parts(numtaps)
    lo, hi = f1 / (0.5 * fs), f2 / (0.5 * fs)
    h = _scaled_sinc(lo, m, centre)  # pass band [0, lo]
    h += delta  # pass band [hi, 1]: sinc(m) − hi·sinc(hi·m)
    h -= _scaled_sinc(hi, m, centre)
    h *= win
    return h / np.sum(h)


def notch_coeffs(rng: np.random.RandomState, p: RawBoostParams, min_g: float, max_g: float) -> np.ndarray:
    """A cascade of ``p.nBands`` random band-stop FIRs scaled to peak gain 10^(G/20), G ~ U[min_g, max_g).

    Returns b of length Σc − (nBands − 1) (odd). Draws per band fc, bw, c, then G (published order).
    """
    b = np.ones(1)
    for _ in range(p.nBands):
        fc = rng.uniform(p.minF, p.maxF)
        bw = rng.uniform(p.minBW, p.maxBW)
        c = int(rng.uniform(p.minCoeff, p.maxCoeff))
        if c % 2 == 0:
            c += 1
        f1 = fc - bw / 2
        f2 = fc + bw / 2
        if f1 <= 0:
            f1 = 1 / 1000
        if f2 >= p.fs / 2:
            f2 = p.fs / 2 - 1 / 1000
        b = np.convolve(bandstop_fir(c, f1, f2, p.fs), b)
    gain = rng.uniform(min_g, max_g)
    peak = np.abs(np.fft.rfft(b, 2 * FREQZ_POINTS)[:FREQZ_POINTS]).max()
    return 10 ** (gain / 20) * b / peak


def _block_len(n_taps: int) -> int:
    """FFT length for overlap-add with ``n_taps`` taps: a power of two >= 8·(n_taps−1), at least 1024.
    Short FFTs stay in cache and cost fewer operations per sample than one FFT of the whole clip."""
    return max(1024, 1 << (8 * (n_taps - 1)).bit_length())


def _fir_bank(signals: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Σ_k FIR(signals[k], bank[k]) with the published FIR alignment (see `fir_filter`).

    ``signals`` (K, L), ``bank`` (K, M) with M odd -> (L,). Overlap-add FFT convolution; the K products
    are summed in the frequency domain, so there is one inverse FFT per block.
    """
    n_sig, length = signals.shape
    taps = bank.shape[1]
    nfft = _block_len(taps)
    step = nfft - taps + 1
    n_blocks = -(-(length + taps - 1) // step)
    flat = np.zeros((n_sig, n_blocks * step))
    flat[:, :length] = signals
    blocks = np.zeros((n_sig, n_blocks, nfft))  # zero-padded here: scipy's own padding is a slow copy
    blocks[:, :, :step] = flat.reshape(n_sig, n_blocks, step)
    spectra = scipy.fft.rfft(blocks, axis=-1)
    spectra *= scipy.fft.rfft(bank, nfft, axis=-1)[:, None, :]
    pieces = scipy.fft.irfft(spectra.sum(axis=0) if n_sig > 1 else spectra[0], nfft, axis=-1)
    full = np.zeros((n_blocks + 1) * step)
    full[: n_blocks * step] = pieces[:, :step].reshape(-1)
    full[step:].reshape(n_blocks, step)[:, : taps - 1] += pieces[:, step:]
    s = (taps + 1) // 2
    return full[s : s + length]


def fir_filter(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Published ``filterFIR``: y[k] = Σ_m b[m]·x[k+s−m], s = ⌊(len(b)+1)/2⌋, k < L (docs/augmentation.md:
    length kept, one sample ahead of zero phase). Shapes (L,), (M,) with M odd -> (L,)."""
    return _fir_bank(x[None, :], b[None, :])


def _normalise_if_over(y: np.ndarray) -> np.ndarray:
    peak = np.abs(y).max()
    return y / peak if peak > 1 else y


def lnl(x: np.ndarray, rng: np.random.RandomState, p: RawBoostParams = DEFAULTS) -> np.ndarray:
    """Linear and non-linear convolutive noise: y = Σ_i FIR(x^i, b_i), zero mean, peak ≤ 1. (L,) -> (L,)."""
    filters = []
    for i in range(p.N_f):
        if i == 0:
            filters.append(notch_coeffs(rng, p, p.minG, p.maxG))
        else:
            filters.append(notch_coeffs(rng, p, p.minG - p.minBiasLinNonLin, p.maxG - p.maxBiasLinNonLin))
    # Centre every filter in a common odd length: FIR's one-sample-ahead offset is then the same for
    # all, and the branches add up in the frequency domain.
    longest = max(b.shape[0] for b in filters)
    bank = np.zeros((p.N_f, longest))
    for i, b in enumerate(filters):
        start = (longest - b.shape[0]) // 2
        bank[i, start : start + b.shape[0]] = b
    powers = np.empty((p.N_f, x.shape[0]))
    powers[0] = x
    for i in range(1, p.N_f):  # repeated products: np.power with an integer array is ~10x slower
        np.multiply(powers[i - 1], x, out=powers[i])
    y = _fir_bank(powers, bank)
    y = y - np.mean(y)
    return _normalise_if_over(y)


def isd(x: np.ndarray, rng: np.random.RandomState, p: RawBoostParams = DEFAULTS) -> np.ndarray:
    """Impulsive signal-dependent noise on ⌊L·β/100⌋ random samples, β ~ U[0, P); peak ≤ 1 (scaled down
    only when over). (L,) -> (L,)."""
    beta = rng.uniform(0, p.P)
    length = x.shape[0]
    n = int(length * (beta / 100))
    pos = rng.permutation(length)[:n]
    u1 = rng.rand(n)
    u2 = rng.rand(n)
    y = x.copy()
    y[pos] = x[pos] + p.g_sd * x[pos] * ((2 * u1 - 1) * (2 * u2 - 1))
    return _normalise_if_over(y)


def ssi(x: np.ndarray, rng: np.random.RandomState, p: RawBoostParams = DEFAULTS) -> np.ndarray:
    """Stationary signal-independent coloured noise added at SNR ~ U[SNRmin, SNRmax) dB; not
    renormalised, so |y| may exceed 1. (L,) -> (L,)."""
    noise = rng.normal(0, 1, x.shape[0])
    b = notch_coeffs(rng, p, p.minG, p.maxG)
    noise = fir_filter(noise, b)
    noise = noise / np.abs(noise).max()
    snr = rng.uniform(p.SNRmin, p.SNRmax)
    noise = noise / np.linalg.norm(noise, 2) * np.linalg.norm(x, 2) / 10.0 ** (0.05 * snr)
    return x + noise


#: The stages of each algo, applied in series (algo 8 is the parallel LnL + ISD, handled apart).
_SERIES = {
    0: (),
    1: (lnl,),
    2: (isd,),
    3: (ssi,),
    4: (lnl, isd, ssi),
    5: (lnl, isd),
    6: (lnl, ssi),
    7: (isd, ssi),
}


def apply_rawboost(
    x: np.ndarray, algo: int, rng: np.random.RandomState, params: RawBoostParams = DEFAULTS
) -> np.ndarray:
    """Apply RawBoost ``algo`` (0-8, docs/augmentation.md) to a waveform (L,) at ``params.fs`` Hz.

    Returns float64 (L,). Draws from ``rng`` in the published order, so
    ``apply_rawboost(x, a, np.random.RandomState(s))`` equals the published code after ``np.random.seed(s)``.
    """
    if algo not in ALGOS:
        raise ValueError(f"RawBoost algo must be one of 0-8, got {algo!r}")
    y = np.asarray(x, dtype=np.float64)
    if algo == 8:
        both = lnl(y, rng, params) + isd(y, rng, params)
        return _normalise_if_over(both)
    for stage in _SERIES[algo]:
        y = stage(y, rng, params)
    return y if y is not x else y.copy()
