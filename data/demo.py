"""Generated demo corpus in the ASVspoof 2019 LA layout (SPEC §1). THE AUDIO IS SYNTHETIC.

``python -m data.demo --out DIR`` writes, deterministically for a seed, a small corpus that every
script of the toolkit can run on without the real data set:

    DIR/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt
    DIR/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt
    DIR/ASVspoof2019_LA_{train,dev,eval}/flac/<utt_id>.flac      (16 kHz mono, PCM_16)
    DIR/demo_manifest.json                                        (seed, counts, attacks)

Bona fide audio is a source-filter "speech" synthesiser: a band-limited glottal pulse train whose F0
follows a phrase contour with accents, slow drift, flutter and per-period jitter and shimmer, shaped by
moving vowel formants, with fricative noise bursts and pauses. Each synthetic speaker has its own F0
range, vocal-tract length, jitter, breathiness and speaking rate. Spoofs imitate the artefacts of real
attacks (Griffin-Lim phase, LPC vocoders with robotic or jitter-free F0, over-smoothed envelopes,
narrow-band codecs, phase-vocoder voice conversion, unit concatenation). As in 2019 LA, train and dev
share attacks A01-A06 while eval uses A07-A13 only: other algorithms, or known families with other
parameters. Speakers are disjoint across partitions, ~30 % of each partition is bona fide.

Only numpy, scipy and soundfile are used; utterances are rendered in a process pool, each from its own
seed, so the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, lfilter, resample_poly, sosfilt

from utils.errors import UserError, run_cli
from utils.io import atomic_write_text

SAMPLE_RATE = 16000
#: Bump when the generated audio changes, so that an old corpus is regenerated rather than reused.
GENERATOR_VERSION = 3
MANIFEST_NAME = "demo_manifest.json"
PARTITIONS = ("train", "dev", "eval")
PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"
ASV_DIR = "ASVspoof2019_LA_asv_scores"
PROTOCOL_FILES = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
ASV_FILES = {
    "dev": "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt",
    "eval": "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt",
}
DEFAULT_COUNTS = {"train": 200, "dev": 200, "eval": 400}
DEFAULT_BONAFIDE_FRACTION = 0.3
MIN_SECONDS, MAX_SECONDS = 1.0, 5.0


@dataclass(frozen=True)
class Attack:
    """A spoofing attack of the demo corpus; ``asv_mean`` is the mean ASV score of its trials."""

    id: str
    description: str
    asv_mean: float


ATTACKS: dict[str, Attack] = {
    a.id: a
    for a in (
        Attack("A01", "Griffin-Lim resynthesis (n_fft 512, 16 iterations)", 8.0),
        Attack("A02", "LPC vocoder, pulse train at a constant F0 (robotic)", -2.0),
        Attack("A03", "parametric synthesis with a perfectly regular F0 (no jitter, shimmer, drift)", 28.0),
        Attack("A04", "statistical-parametric TTS: over-smoothed formants, reduced jitter", 20.0),
        Attack("A05", "narrow-band codec: 300-3400 Hz, 8 kHz, 8-bit mu-law", 5.0),
        Attack("A06", "voice conversion by phase-vocoder pitch and formant shift (x6/5)", -6.0),
        Attack("A07", "Griffin-Lim resynthesis (n_fft 1024, 8 iterations) + 7 kHz low-pass", 30.0),
        Attack("A08", "LPC vocoder, mixed pulse/noise excitation on a jitter-free smoothed F0", 18.0),
        Attack("A09", "parametric synthesis with a stair-step F0 (held per 20 ms frame)", 24.0),
        Attack("A10", "codec: 200-3600 Hz, 12-bit mu-law, spectra quantised in 3 dB steps", 10.0),
        Attack("A11", "unit selection: natural units concatenated with level and F0 jumps", 34.0),
        Attack("A12", "over-smoothed TTS with a regular F0 through a Griffin-Lim vocoder", 22.0),
        Attack("A13", "voice conversion by phase-vocoder pitch and formant shift (x7/8)", -4.0),
    )
}
TRAIN_DEV_ATTACKS = ("A01", "A02", "A03", "A04", "A05", "A06")
EVAL_ATTACKS = ("A07", "A08", "A09", "A10", "A11", "A12", "A13")
PARTITION_ATTACKS = {"train": TRAIN_DEV_ATTACKS, "dev": TRAIN_DEV_ATTACKS, "eval": EVAL_ATTACKS}

# Synthetic speakers per partition and the first speaker number (as in 2019 LA: eval speakers
# LA_0001.., dev LA_0069.., train LA_0079..; none shared between partitions).
_SPEAKERS = {"train": (8, 79), "dev": (6, 69), "eval": (10, 1)}
_UTT_PREFIX = {"train": "LA_T_", "dev": "LA_D_", "eval": "LA_E_"}

# STFT grid shared by the synthesiser and most attacks: 32 ms frames every 8 ms.
_N_FFT = 512
_HOP = 128
_FREQS = np.fft.rfftfreq(_N_FFT, 1.0 / SAMPLE_RATE)

# Adult male vowel formants F1-F3 (Hz, Peterson & Barney); speakers scale them by vocal-tract length.
_VOWELS = np.array(
    [
        [730, 1090, 2440],
        [270, 2290, 3010],
        [300, 870, 2240],
        [530, 1840, 2480],
        [570, 840, 2410],
        [660, 1720, 2410],
        [490, 1350, 1690],
        [500, 1500, 2500],
    ],
    dtype=np.float64,
)
_UPPER_FORMANTS = np.array([3500.0, 4500.0])
_BASE_BANDWIDTHS = np.array([70.0, 100.0, 130.0, 200.0, 300.0])


# --------------------------------------------------------------------------- speakers and plans


@dataclass(frozen=True)
class Speaker:
    """Voice traits of one synthetic speaker."""

    id: str
    f0_median: float  # Hz
    intonation: float  # semitones, std of the accent contour
    jitter: float  # std of each glottal pulse position, as a fraction of the period
    shimmer: float  # std of the log amplitude of each glottal pulse
    formant_scale: float  # vocal-tract length factor applied to the vowel formants
    tilt: float  # pole of the glottal spectral tilt (closer to 1 = darker voice)
    breathiness: float  # aspiration noise relative to voicing
    syllable_s: float  # mean vowel duration, seconds


def _make_speaker(speaker_id: str, rng: np.random.Generator) -> Speaker:
    female = rng.random() < 0.5
    return Speaker(
        id=speaker_id,
        f0_median=float(rng.uniform(165, 245) if female else rng.uniform(88, 140)),
        intonation=float(rng.uniform(1.5, 3.5)),
        jitter=float(rng.uniform(0.004, 0.012)),
        shimmer=float(rng.uniform(0.04, 0.10)),
        formant_scale=float(rng.uniform(1.08, 1.2) if female else rng.uniform(0.92, 1.03)),
        tilt=float(rng.uniform(0.88, 0.96)),
        breathiness=float(rng.uniform(0.02, 0.08)),
        syllable_s=float(rng.uniform(0.14, 0.24)),
    )


@dataclass
class _Plan:
    """What is said and how: frame-rate tracks on the `_HOP` grid (frame f is centred on sample f*_HOP)."""

    n: int  # samples
    voiced: np.ndarray  # (frames,) voicing amplitude
    unvoiced: np.ndarray  # (frames,) fricative amplitude
    fric_hz: np.ndarray  # (frames,) fricative centre frequency
    formants: np.ndarray  # (frames, 5) Hz
    bandwidths: np.ndarray  # (frames, 5) Hz
    f0_contour: np.ndarray  # (frames,) semitones re the speaker median: declination + accents
    f0_micro: np.ndarray  # (frames,) semitones: slow drift + flutter, absent in "too regular" voices


def _n_frames(n: int) -> int:
    return n // _HOP + 1


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 with edge padding (keeps the length)."""
    if width <= 1:
        return x
    kernel = np.ones(width) / width
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    return np.apply_along_axis(np.convolve, 0, xp, kernel, mode="valid")


def _make_plan(spk: Speaker, n: int, rng: np.random.Generator) -> _Plan:
    """Random syllables (optional fricative onset + vowel), pauses and a prosody for ``n`` samples."""
    frames = _n_frames(n)
    fs_frames = SAMPLE_RATE / _HOP
    voiced = np.zeros(frames)
    unvoiced = np.zeros(frames)
    fric_hz = np.full(frames, 4000.0)
    centres: list[float] = []
    targets: list[np.ndarray] = []
    accents: list[float] = []
    end = n / SAMPLE_RATE - rng.uniform(0.05, 0.25)
    pos = rng.uniform(0.05, 0.3)
    while pos < end - 0.08:
        if rng.random() < 0.12 and centres:
            pos += rng.uniform(0.1, 0.35)
            continue
        if rng.random() < 0.55:
            dur = rng.uniform(0.04, 0.12)
            a, b = int(pos * fs_frames), int(min(pos + dur, end) * fs_frames) + 1
            unvoiced[a:b] = rng.uniform(0.05, 0.2) * np.hanning(b - a + 2)[1:-1]
            fric_hz[a:b] = rng.uniform(2500, 6500)
            pos += dur
        dur = min(spk.syllable_s * np.exp(rng.normal(0, 0.3)), end - pos)
        if dur < 0.04:
            break
        a, b = int(pos * fs_frames), int((pos + dur) * fs_frames) + 1
        voiced[a:b] = rng.uniform(0.5, 1.0) * np.sqrt(np.hanning(b - a + 2)[1:-1])
        centres.append((pos + dur / 2) * fs_frames)
        f123 = _VOWELS[rng.integers(len(_VOWELS))] * (1 + rng.normal(0, 0.04, 3))
        targets.append(np.concatenate([f123, _UPPER_FORMANTS]) * spk.formant_scale)
        accents.append(rng.normal(0, spk.intonation))
        pos += dur
    if not centres:  # a very short utterance still gets one vowel
        a, b = frames // 4, 3 * frames // 4
        voiced[a:b] = np.sqrt(np.hanning(b - a))
        centres, targets, accents = (
            [frames / 2],
            [np.r_[_VOWELS[0], _UPPER_FORMANTS] * spk.formant_scale],
            [0.0],
        )
    idx = np.arange(frames)
    c = np.asarray(centres)
    # Linear interpolation between vowel centres is a crude but smooth coarticulation.
    formants = np.stack([np.interp(idx, c, t) for t in np.asarray(targets).T], axis=1)
    bandwidths = np.broadcast_to(_BASE_BANDWIDTHS * rng.uniform(0.8, 1.3), formants.shape).copy()
    declination = np.linspace(rng.uniform(0.5, 2.0), -rng.uniform(1.0, 3.0), frames)
    f0_contour = declination + _smooth(np.interp(idx, c, np.asarray(accents)), 12)
    drift = lfilter([0.05], [1, -0.95], rng.normal(0, 1, frames)) * 1.1  # ~0.35 st, 0.2 s memory
    flutter = lfilter(
        *butter(2, [4 / (fs_frames / 2), 9 / (fs_frames / 2)], "band"), rng.normal(0, 0.6, frames)
    )
    return _Plan(n, voiced, unvoiced, fric_hz, formants, bandwidths, f0_contour, drift + flutter)


# --------------------------------------------------------------------------- signal helpers


def _stft(x: np.ndarray, n_fft: int = _N_FFT, hop: int = _HOP) -> np.ndarray:
    """Centred STFT with a sqrt-Hann window: (samples,) -> (frames, n_fft//2+1), frame f at sample f*hop."""
    n_frames = len(x) // hop + 1
    xp = np.pad(x, (n_fft // 2, n_frames * hop + n_fft // 2 - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames]
    return np.fft.rfft(frames * _sqrt_hann(n_fft), axis=1)


def _istft(spec: np.ndarray, n: int, n_fft: int = _N_FFT, hop: int = _HOP) -> np.ndarray:
    """Inverse of `_stft` (weighted overlap-add), cut to ``n`` samples; needs n_fft = 4*hop."""
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * _sqrt_hann(n_fft)
    n_frames, q = frames.shape[0], n_fft // hop
    blocks = np.zeros((n_frames + q - 1, hop))
    parts = frames.reshape(n_frames, q, hop)
    for j in range(q):
        blocks[j : j + n_frames] += parts[:, j]
    # A periodic Hann window at 75 % overlap sums to 2.
    out = blocks.reshape(-1)[n_fft // 2 : n_fft // 2 + n] / 2.0
    return np.pad(out, (0, n - len(out)))


def _sqrt_hann(n_fft: int) -> np.ndarray:
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))


def _formant_peaks(freqs_hz: np.ndarray, bandwidths_hz: np.ndarray) -> np.ndarray:
    """Magnitude on `_FREQS` of a product of resonance peaks: (frames, k) -> (frames, bins).

    Each peak is 1 + A / (1 + ((f - F) / (B/2))^2) with height A = F/(1.5 B) (clipped to 1..6), i.e. a
    resonance without the -12 dB/octave roll-off of a DC-normalised 2-pole filter: cascading five of
    those would leave nothing above 4 kHz; the source tilt alone sets the slope here.
    """
    f, b = freqs_hz[..., None], bandwidths_hz[..., None]
    height = np.clip(f / (1.5 * b), 1.0, 6.0)
    return np.prod(1.0 + height / (1.0 + ((_FREQS - f) / (b / 2)) ** 2), axis=-2)


def _tilt(pole: float) -> np.ndarray:
    """Glottal spectral tilt (two real poles) times a mild lip-radiation zero on `_FREQS`; unit gain at DC."""
    z = np.exp(-2j * np.pi * _FREQS / SAMPLE_RATE)
    return (1 - pole) ** 2 / np.abs(1 - pole * z) ** 2 * np.abs(1 - 0.7 * z) / 0.3


def _pulse_train(f0: np.ndarray, jitter: float, shimmer: float, rng: np.random.Generator) -> np.ndarray:
    """Band-limited glottal impulses for an F0 track (Hz per sample): (n,) -> (n,).

    ``jitter`` moves each pulse (std, fraction of its period); ``shimmer`` scales it (std of log amplitude).
    """
    n = len(f0)
    cycles = np.cumsum(f0) / SAMPLE_RATE
    k = np.flatnonzero(np.floor(cycles[1:]) > np.floor(cycles[:-1]))
    frac = (np.floor(cycles[k + 1]) - cycles[k]) / (cycles[k + 1] - cycles[k])
    t = k + frac + rng.normal(0, 1, len(k)) * jitter * SAMPLE_RATE / f0[k]
    amp = np.exp(rng.normal(0, 1, len(k)) * shimmer)
    # Windowed-sinc impulses at fractional positions keep sub-sample jitter (and its absence) exact.
    offsets = np.arange(-8, 9)
    idx = np.floor(t).astype(np.int64)[:, None] + offsets
    d = idx - t[:, None]
    kernel = np.sinc(d) * (0.5 + 0.5 * np.cos(np.pi * np.clip(d / 9, -1, 1)))
    ok = (idx >= 0) & (idx < n)
    out = np.zeros(n)
    np.add.at(out, idx[ok], (amp[:, None] * kernel)[ok])
    return out


def _f0_track(spk: Speaker, plan: _Plan, micro: float = 1.0, hold_frames: int = 0) -> np.ndarray:
    """F0 in Hz per sample; ``micro`` scales drift and flutter, ``hold_frames`` > 0 makes a stair-step F0."""
    semitones = plan.f0_contour + micro * plan.f0_micro
    if hold_frames > 0:
        semitones = np.repeat(semitones[::hold_frames], hold_frames)[: len(semitones)]
    f0_frames = spk.f0_median * 2.0 ** (semitones / 12.0)
    if hold_frames > 0:
        return np.repeat(f0_frames, _HOP)[: plan.n]
    return np.interp(np.arange(plan.n), np.arange(len(f0_frames)) * _HOP, f0_frames)


def _unit_power(spec: np.ndarray) -> np.ndarray:
    """Scale every frame of a spectrogram to unit mean power (silent frames stay silent)."""
    power = np.mean(np.abs(spec) ** 2, axis=1, keepdims=True)
    return spec / np.sqrt(power + 1e-12)


def _render(
    spk: Speaker,
    plan: _Plan,
    rng: np.random.Generator,
    *,
    micro: float = 1.0,
    hold_frames: int = 0,
    bandwidth_scale: float = 1.0,
    formant_smoothing: int = 1,
) -> np.ndarray:
    """Source-filter synthesis of a plan: (n,) float64 samples.

    ``micro`` scales every micro-prosodic variation (drift, flutter, jitter, shimmer): 1 is natural,
    0 a perfectly regular voice. ``bandwidth_scale`` and ``formant_smoothing`` (frames) over-smooth the
    spectral envelope as statistical-parametric TTS does.
    """
    f0 = _f0_track(spk, plan, micro, hold_frames)
    pulses = _unit_power(_stft(_pulse_train(f0, micro * spk.jitter, micro * spk.shimmer, rng)))
    noise = _unit_power(_stft(rng.normal(0, 1, plan.n)))
    formants = _smooth(plan.formants, formant_smoothing)
    vocal = _formant_peaks(formants, plan.bandwidths * bandwidth_scale) * _tilt(spk.tilt)
    vocal /= np.sqrt(np.mean(vocal**2, axis=1, keepdims=True))
    # Fricatives: a broad resonance above a steep (8th-order) high-pass at 60 % of its centre.
    highpass = 1.0 / np.sqrt(1.0 + (0.6 * plan.fric_hz[:, None] / np.maximum(_FREQS, 1.0)) ** 8)
    fric = _formant_peaks(plan.fric_hz[:, None], 0.5 * plan.fric_hz[:, None]) * highpass
    fric /= np.sqrt(np.mean(fric**2, axis=1, keepdims=True))
    v, u = plan.voiced[:, None], plan.unvoiced[:, None]
    spec = pulses * vocal * v + noise * (fric * u + vocal * v * spk.breathiness)
    return _istft(spec, plan.n)


def _lpc_envelope(x: np.ndarray, order: int = 18) -> np.ndarray:
    """Per-frame LPC spectral envelope gain/|A| on the `_FREQS` grid: (n,) -> (frames, bins).

    Autocorrelation method with a vectorised Levinson-Durbin recursion over all frames.
    """
    power = np.abs(_stft(x)) ** 2
    acf = np.fft.irfft(power, n=_N_FFT, axis=1)[:, : order + 1]
    acf[:, 0] *= 1.0 + 1e-6  # white-noise correction keeps the recursion stable on near-silent frames
    acf[:, 0] += 1e-12
    a = np.zeros((len(acf), order + 1))
    a[:, 0] = 1.0
    err = acf[:, 0].copy()
    for i in range(1, order + 1):
        k = -np.sum(a[:, :i] * acf[:, i:0:-1], axis=1) / err
        a[:, 1 : i + 1] = a[:, 1 : i + 1] + k[:, None] * a[:, i - 1 :: -1][:, :i]
        err *= 1.0 - k**2
    inverse = np.abs(np.fft.rfft(a, n=_N_FFT, axis=1))
    return np.sqrt(err)[:, None] / inverse


def _lpc_vocoder(
    x: np.ndarray, plan: _Plan, rng: np.random.Generator, f0: np.ndarray, noise_mix: float
) -> np.ndarray:
    """Resynthesise ``x`` from its LPC envelope with a new, jitter-free pulse/noise excitation."""
    pulses = _unit_power(_stft(_pulse_train(f0, 0.0, 0.0, rng)))
    noise = _unit_power(_stft(rng.normal(0, 1, len(x))))
    voicing = (plan.voiced > plan.unvoiced)[:, None]
    excitation = np.where(voicing, np.sqrt(1 - noise_mix**2) * pulses + noise_mix * noise, noise)
    return _istft(excitation * _lpc_envelope(x), len(x))


def _griffin_lim(x: np.ndarray, rng: np.random.Generator, n_fft: int, n_iter: int) -> np.ndarray:
    """Keep the STFT magnitude of ``x``, rebuild the phase from random with Griffin-Lim."""
    hop = n_fft // 4
    mag = np.abs(_stft(x, n_fft, hop))
    phase = np.exp(2j * np.pi * rng.random(mag.shape))
    for _ in range(n_iter):
        y = _istft(mag * phase, len(x), n_fft, hop)
        phase = np.exp(1j * np.angle(_stft(y, n_fft, hop)))
    return _istft(mag * phase, len(x), n_fft, hop)


def _mu_law(x: np.ndarray, bits: int) -> np.ndarray:
    """Companded quantisation to ``bits`` bits (mu-law, mu = 255), for |x| <= 1."""
    mu = 255.0
    levels = 2 ** (bits - 1)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    y = np.round(y * levels) / levels
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def _codec(x: np.ndarray, low_hz: float, high_hz: float, bits: int, db_step: float = 0.0) -> np.ndarray:
    """Band-limit to [low, high] Hz, pass through 8 kHz and mu-law; optionally quantise STFT dB magnitudes."""
    x = x / (np.max(np.abs(x)) + 1e-12) * 0.9
    sos = butter(6, [low_hz, high_hz], "bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = resample_poly(sosfilt(sos, x), 1, 2)
    y = resample_poly(_mu_law(narrow, bits), 2, 1)[: len(x)]
    if db_step > 0:
        spec = _stft(y)
        db = 20 * np.log10(np.abs(spec) + 1e-9)
        spec = spec / (np.abs(spec) + 1e-9) * 10 ** (np.round(db / db_step) * db_step / 20)
        y = _istft(spec, len(x))
    return np.pad(y, (0, len(x) - len(y)))


def _pitch_shift(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Shift pitch and formants by ``up/down`` keeping the length: phase-vocoder stretch, then resample."""
    rate = down / up
    spec = _stft(x)
    steps = np.arange(0, len(spec) - 1, rate)
    i = steps.astype(np.int64)
    w = (steps - i)[:, None]
    mag = (1 - w) * np.abs(spec[i]) + w * np.abs(spec[i + 1])
    expected = 2 * np.pi * _HOP * _FREQS / SAMPLE_RATE
    dphi = np.angle(spec[i + 1]) - np.angle(spec[i]) - expected
    dphi = dphi - 2 * np.pi * np.round(dphi / (2 * np.pi))
    phase = np.angle(spec[0]) + np.cumsum(
        np.vstack([np.zeros(spec.shape[1]), (dphi + expected)[:-1]]), axis=0
    )
    stretched = _istft(mag * np.exp(1j * phase), len(steps) * _HOP)
    y = resample_poly(stretched, down, up)[: len(x)]
    return np.pad(y, (0, len(x) - len(y)))


def _concatenate_units(spk: Speaker, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit selection: natural renderings of different plans joined with short cross-fades."""
    n_units = int(rng.integers(2, 5))
    cuts = np.sort(rng.choice(np.arange(n // 8, n - n // 8), n_units - 1, replace=False))
    bounds = np.r_[0, cuts, n]
    fade = 80
    out = np.zeros(n)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        a0, b1 = max(a - fade, 0), min(b + fade, n)
        # Each unit comes from another "recording": its own plan, level and F0 offset.
        unit_spk = _replace(spk, f0_median=spk.f0_median * 2 ** (rng.normal(0, 1.0) / 12))
        unit = _render(unit_spk, _make_plan(unit_spk, n, rng), rng)[a0:b1]
        level = 10 ** (rng.normal(0, 3) / 20)
        ramp = np.ones(b1 - a0)
        if a0 < a:
            ramp[: 2 * fade] = np.linspace(0, 1, 2 * fade)
        if b1 > b:
            ramp[-2 * fade :] = np.minimum(ramp[-2 * fade :], np.linspace(1, 0, 2 * fade))
        out[a0:b1] += unit / (np.std(unit) + 1e-9) * level * ramp
    return out


def _replace(spk: Speaker, **changes: float) -> Speaker:
    return Speaker(**{**asdict(spk), **changes})


# --------------------------------------------------------------------------- one utterance


def synthesize(spk: Speaker, attack: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Render one utterance of ``n`` samples for speaker ``spk``: ``attack`` is ``"-"`` (bona fide) or an id.

    Returns float64 (n,) before the shared channel (`_channel`); deterministic for a given ``rng`` state.
    """
    if attack == "-":
        return _render(spk, _make_plan(spk, n, rng), rng)
    if attack in ("A06", "A13"):
        # The attacker's source voice sits at 1/ratio of the target; the shift brings it onto the target.
        up, down = (6, 5) if attack == "A06" else (7, 8)
        source = _replace(
            spk,
            f0_median=spk.f0_median * down / up,
            formant_scale=spk.formant_scale * down / up,
            jitter=float(rng.uniform(0.004, 0.012)),
        )
        return _pitch_shift(_render(source, _make_plan(source, n, rng), rng), up, down)
    if attack == "A11":
        return _concatenate_units(spk, n, rng)
    plan = _make_plan(spk, n, rng)
    if attack == "A01":
        return _griffin_lim(_render(spk, plan, rng), rng, 512, 16)
    if attack == "A02":
        return _lpc_vocoder(_render(spk, plan, rng), plan, rng, np.full(n, spk.f0_median), 0.0)
    if attack == "A03":
        return _render(spk, plan, rng, micro=0.0)
    if attack == "A04":
        return _render(spk, plan, rng, micro=0.3, bandwidth_scale=2.5, formant_smoothing=10)
    if attack == "A05":
        return _codec(_render(spk, plan, rng), 300, 3400, 8)
    if attack == "A07":
        y = _griffin_lim(_render(spk, plan, rng), rng, 1024, 8)
        return sosfilt(butter(8, 7000, fs=SAMPLE_RATE, output="sos"), y)
    if attack == "A08":
        return _lpc_vocoder(_render(spk, plan, rng), plan, rng, _f0_track(spk, plan, micro=0.0), 0.3)
    if attack == "A09":
        return _render(spk, plan, rng, micro=0.0, hold_frames=2)
    if attack == "A10":
        return _codec(_render(spk, plan, rng), 200, 3600, 12, db_step=3.0)
    if attack == "A12":
        y = _render(spk, plan, rng, micro=0.0, bandwidth_scale=2.0, formant_smoothing=8)
        return _griffin_lim(y, rng, 512, 12)
    raise ValueError(f"unknown attack {attack!r}")


# Noise floor SNR ranges (dB re the speech RMS). Bona fide audio was "recorded" in rooms; generated
# speech is cleaner, as vocoder output is. This mirrors the known silence/noise-floor cue of real
# 2019 LA, and it is what lets the demo's random-weight SSL front end learn anything in a few minutes.
BONAFIDE_SNR_DB = (10.0, 25.0)
SPOOF_SNR_DB = (35.0, 60.0)


def _channel(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """The chain every utterance goes through: mild random EQ, a pinkish noise floor, a random peak level."""
    x = lfilter([1.0, -rng.uniform(-0.3, 0.3)], [1.0], x)
    x = x / (np.std(x) + 1e-12)
    floor = lfilter([1.0], [1.0, -0.9], rng.normal(0, 1, len(x)))
    x = x + floor / np.std(floor) * 10 ** (-rng.uniform(*snr_db) / 20)
    return x / np.max(np.abs(x)) * rng.uniform(0.25, 0.9)


@dataclass(frozen=True)
class _Task:
    path: str
    speaker: Speaker
    attack: str
    seed: tuple[int, ...]  # entropy and spawn key of this utterance's SeedSequence


def _make_utterance(task: _Task) -> int:
    """Render and write one FLAC; returns its length in samples."""
    rng = np.random.default_rng(np.random.SeedSequence(task.seed[0], spawn_key=task.seed[1:]))
    seconds = float(np.clip(np.exp(rng.normal(np.log(2.6), 0.35)), MIN_SECONDS, MAX_SECONDS))
    n = int(seconds * SAMPLE_RATE)
    snr_db = BONAFIDE_SNR_DB if task.attack == "-" else SPOOF_SNR_DB
    wave = _channel(synthesize(task.speaker, task.attack, n, rng), rng, snr_db)
    sf.write(task.path, wave.astype(np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return n


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class ProtocolLine:
    """One CM protocol row as written: ``speaker utt_id - attack key``."""

    speaker: str
    utt_id: str
    attack: str
    key: str

    def __str__(self) -> str:
        return f"{self.speaker} {self.utt_id} - {self.attack} {self.key}"


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo_corpus` did: the corpus root, whether it was (re)generated, counts, seconds."""

    root: Path
    generated: bool
    counts: dict[str, dict[str, int]]  # partition -> {"bonafide": n, "A01": n, ...}
    seconds: float


def _seed(seed: int, *key: int) -> tuple[int, ...]:
    return (seed, *key)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def plan_partition(partition: str, n_total: int, seed: int, bonafide_fraction: float) -> list[ProtocolLine]:
    """The protocol rows of one partition (ids, speakers, attacks), shuffled; deterministic for ``seed``.

    ``round(bonafide_fraction * n_total)`` rows (at least one) are bona fide, the rest spread evenly over
    the partition's attacks.
    """
    p = PARTITIONS.index(partition)
    rng = _rng(seed, p, 0)
    n_speakers, first = _SPEAKERS[partition]
    speakers = [f"LA_{first + i:04d}" for i in range(n_speakers)]
    n_bona = min(max(1, round(bonafide_fraction * n_total)), n_total - 1)
    attacks = PARTITION_ATTACKS[partition]
    labels = ["-"] * n_bona + [attacks[i % len(attacks)] for i in range(n_total - n_bona)]
    ids: set[int] = set()
    while len(ids) < n_total:
        ids.update(int(i) for i in rng.integers(1_000_000, 10_000_000, n_total - len(ids)))
    utt_ids = [f"{_UTT_PREFIX[partition]}{i}" for i in rng.permutation(sorted(ids))]
    spk_of = [speakers[i % n_speakers] for i in range(n_total)]
    order = rng.permutation(n_total)
    rows = [
        ProtocolLine(spk_of[i], utt_ids[i], labels[i], "bonafide" if labels[i] == "-" else "spoof")
        for i in order
    ]
    return rows


def _speakers(partition: str, seed: int) -> dict[str, Speaker]:
    p = PARTITIONS.index(partition)
    n_speakers, first = _SPEAKERS[partition]
    out = {}
    for i in range(n_speakers):
        sid = f"LA_{first + i:04d}"
        out[sid] = _make_speaker(sid, _rng(seed, p, 1, i))
    return out


def asv_score_lines(rows: Sequence[ProtocolLine], rng: np.random.Generator) -> list[str]:
    """ASV score rows ``cm_key asv_key score`` for a partition (SPEC §1).

    One target trial per bona fide utterance, four nontarget trials per bona fide utterance and one spoof
    trial per spoof utterance. Distributions follow the real 2019 LA files: target ~ N(25, 14),
    nontarget ~ N(-31, 14) (ASV EER ~2.5 %), spoof ~ N(attack mean, 13) in between.
    """
    n_bona = sum(r.key == "bonafide" for r in rows)
    lines = [f"bonafide target {s:.6f}" for s in rng.normal(25.0, 14.0, n_bona)]
    lines += [f"bonafide nontarget {s:.6f}" for s in rng.normal(-31.0, 14.0, 4 * n_bona)]
    lines += [
        f"{r.attack} spoof {rng.normal(ATTACKS[r.attack].asv_mean, 13.0):.6f}"
        for r in rows
        if r.key == "spoof"
    ]
    return lines


def _manifest(seed: int, counts: dict[str, int], bonafide_fraction: float) -> dict:
    return {
        "generator": "data.demo",
        "version": GENERATOR_VERSION,
        "synthetic": True,
        "seed": seed,
        "counts": counts,
        "bonafide_fraction": bonafide_fraction,
        "sample_rate": SAMPLE_RATE,
        "attacks": {p: list(PARTITION_ATTACKS[p]) for p in PARTITIONS},
        "attack_descriptions": {a.id: a.description for a in ATTACKS.values()},
    }


def _same_corpus(root: Path, manifest: dict) -> bool:
    """True if ``root`` holds a finished corpus generated with the same parameters."""
    path = root / MANIFEST_NAME
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    keys = ("generator", "version", "seed", "counts", "bonafide_fraction")
    if not isinstance(old, dict) or any(old.get(k) != manifest[k] for k in keys):
        return False
    return all((root / PROTOCOL_DIR / name).is_file() for name in PROTOCOL_FILES.values())


def _tally(rows: Sequence[ProtocolLine]) -> dict[str, int]:
    counts = Counter("bonafide" if r.key == "bonafide" else r.attack for r in rows)
    return {k: counts[k] for k in sorted(counts, key=lambda k: (k != "bonafide", k))}


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a soft dependency of this numpy-only module
        return iterable
    return tqdm(iterable, total=total, desc="demo corpus", unit="utt", file=sys.stderr)


def generate_demo_corpus(
    out: str | os.PathLike,
    seed: int = 0,
    n_train: int = DEFAULT_COUNTS["train"],
    n_dev: int = DEFAULT_COUNTS["dev"],
    n_eval: int = DEFAULT_COUNTS["eval"],
    bonafide_fraction: float = DEFAULT_BONAFIDE_FRACTION,
    workers: int | None = None,
    progress: bool = False,
) -> DemoSummary:
    """Write the demo corpus to ``out`` (2019 LA layout) unless the same corpus is already there.

    Generation happens in a hidden sibling directory that is renamed onto ``out`` at the end, so ``out``
    is either absent, the old corpus or the complete new one. An existing ``out`` that is not a demo
    corpus (no manifest) and is not empty raises `UserError` rather than being replaced.
    ``workers`` defaults to min(2, CPUs); the audio does not depend on it.
    """
    counts = {"train": n_train, "dev": n_dev, "eval": n_eval}
    for part, n in counts.items():
        if n < 2:
            raise UserError(f"--n-{part} must be at least 2 (one bona fide and one spoof), got {n}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if not 0.0 < bonafide_fraction < 1.0:
        raise UserError(f"--bonafide-fraction must be between 0 and 1, got {bonafide_fraction}")
    root = Path(out)
    manifest = _manifest(seed, counts, bonafide_fraction)
    start = time.perf_counter()
    if _same_corpus(root, manifest):
        plans = {p: plan_partition(p, counts[p], seed, bonafide_fraction) for p in PARTITIONS}
        return DemoSummary(root, False, {p: _tally(r) for p, r in plans.items()}, time.perf_counter() - start)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: exists and is not a directory")
    if root.is_dir() and not (root / MANIFEST_NAME).is_file() and any(root.iterdir()):
        raise UserError(f"{root}: directory is not empty and holds no demo corpus; choose another --out")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        tally = _write_corpus(tmp, manifest, workers, progress)
        _swap_into_place(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoSummary(root, True, tally, time.perf_counter() - start)


def _write_corpus(
    root: Path, manifest: dict, workers: int | None, progress: bool
) -> dict[str, dict[str, int]]:
    seed, counts, fraction = manifest["seed"], manifest["counts"], manifest["bonafide_fraction"]
    tasks: list[_Task] = []
    tally = {}
    for p, part in enumerate(PARTITIONS):
        rows = plan_partition(part, counts[part], seed, fraction)
        tally[part] = _tally(rows)
        speakers = _speakers(part, seed)
        flac_dir = root / f"ASVspoof2019_LA_{part}" / "flac"
        flac_dir.mkdir(parents=True)
        (root / PROTOCOL_DIR).mkdir(exist_ok=True)
        (root / PROTOCOL_DIR / PROTOCOL_FILES[part]).write_text("".join(f"{r}\n" for r in rows))
        if part in ASV_FILES:
            (root / ASV_DIR).mkdir(exist_ok=True)
            lines = asv_score_lines(rows, _rng(seed, p, 2))
            (root / ASV_DIR / ASV_FILES[part]).write_text("".join(f"{line}\n" for line in lines))
        tasks += [
            _Task(str(flac_dir / f"{r.utt_id}.flac"), speakers[r.speaker], r.attack, _seed(seed, p, 3, i))
            for i, r in enumerate(rows)
        ]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    if workers <= 1:
        for _ in _progress(map(_make_utterance, tasks), len(tasks), progress):
            pass
    else:
        with ProcessPoolExecutor(workers) as pool:
            for _ in _progress(pool.map(_make_utterance, tasks, chunksize=8), len(tasks), progress):
                pass
    # The manifest goes last: its presence marks a finished corpus.
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return tally


def _swap_into_place(new: Path, root: Path) -> None:
    """Rename the finished corpus ``new`` onto ``root``, replacing an older demo corpus or an empty dir."""
    if not root.exists():
        os.replace(new, root)
        return
    old = root.parent / f"{new.name}.old"
    os.replace(root, old)
    os.replace(new, root)
    shutil.rmtree(old, ignore_errors=True)


def format_summary(summary: DemoSummary) -> str:
    """Human-readable summary: where, counts per key/attack and partition, seconds, and the synthetic note."""
    head = "generated" if summary.generated else "already present (same seed and counts), not regenerated:"
    lines = [f"demo corpus {head} {summary.root}"]
    for part, counts in summary.counts.items():
        total = sum(counts.values())
        detail = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines.append(f"  {part:5s} {total:5d} utterances: {detail}")
    if summary.generated:
        lines.append(f"  took {summary.seconds:.1f} s")
    lines.append(
        "note: the audio is SYNTHETIC (a source-filter imitation of speech and simulated attacks), "
        "for trying the toolkit only; results on it say nothing about ASVspoof 2019 LA."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``python -m data.demo --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m data.demo",
        description="Generate a small SYNTHETIC corpus in the ASVspoof 2019 LA layout (protocols, "
        "ASV scores, 16 kHz FLAC) for trying the toolkit. Deterministic for a seed; an identical "
        "existing corpus is reused.",
    )
    parser.add_argument("--out", required=True, type=Path, help="corpus root to create (e.g. demo_out/LA)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    for part in PARTITIONS:
        parser.add_argument(
            f"--n-{part}",
            type=int,
            default=DEFAULT_COUNTS[part],
            help=f"{part} utterances (default %(default)s)",
        )
    parser.add_argument(
        "--bonafide-fraction",
        type=float,
        default=DEFAULT_BONAFIDE_FRACTION,
        help="share of bona fide utterances per partition (default %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: min(2, CPUs))")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = generate_demo_corpus(
        args.out,
        args.seed,
        args.n_train,
        args.n_dev,
        args.n_eval,
        args.bonafide_fraction,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
