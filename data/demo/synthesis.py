"""The source-filter "speech" synthesiser of the demo corpus (numpy and scipy only). THE AUDIO IS SYNTHETIC.

A band-limited glottal pulse train whose F0 follows a phrase contour with accents, slow drift, flutter
and per-period jitter and shimmer, shaped by moving vowel formants, with fricative noise bursts and
pauses. Each synthetic `Speaker` has its own F0 range, vocal-tract length, jitter, breathiness and
speaking rate. The STFT helpers and `render`'s knobs are shared with the attacks (`data.demo.attacks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, lfilter

from data.audio import SAMPLE_RATE

# STFT grid shared by the synthesiser and most attacks: 32 ms frames every 8 ms.
N_FFT = 512
HOP = 128
FREQS = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)

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


def make_speaker(speaker_id: str, rng: np.random.Generator) -> Speaker:
    """Random voice traits: half female (F0 165-245 Hz, shorter vocal tract), half male (88-140 Hz)."""
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
class Plan:
    """What is said and how: frame-rate tracks on the `HOP` grid (frame f is centred on sample f*HOP)."""

    n: int  # samples
    voiced: np.ndarray  # (frames,) voicing amplitude
    unvoiced: np.ndarray  # (frames,) fricative amplitude
    fric_hz: np.ndarray  # (frames,) fricative centre frequency
    formants: np.ndarray  # (frames, 5) Hz
    bandwidths: np.ndarray  # (frames, 5) Hz
    f0_contour: np.ndarray  # (frames,) semitones re the speaker median: declination + accents
    f0_micro: np.ndarray  # (frames,) semitones: slow drift + flutter, absent in "too regular" voices


def _n_frames(n: int) -> int:
    return n // HOP + 1


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 with edge padding (keeps the length)."""
    if width <= 1:
        return x
    kernel = np.ones(width) / width
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    return np.apply_along_axis(np.convolve, 0, xp, kernel, mode="valid")


def make_plan(spk: Speaker, n: int, rng: np.random.Generator) -> Plan:
    """Random syllables (optional fricative onset + vowel), pauses and a prosody for ``n`` samples."""
    frames = _n_frames(n)
    fs_frames = SAMPLE_RATE / HOP
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
    return Plan(n, voiced, unvoiced, fric_hz, formants, bandwidths, f0_contour, drift + flutter)


def stft(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Centred STFT with a sqrt-Hann window: (samples,) -> (frames, n_fft//2+1), frame f at sample f*hop."""
    n_frames = len(x) // hop + 1
    xp = np.pad(x, (n_fft // 2, n_frames * hop + n_fft // 2 - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames]
    return np.fft.rfft(frames * _sqrt_hann(n_fft), axis=1)


def istft(spec: np.ndarray, n: int, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Inverse of `stft` (weighted overlap-add), cut to ``n`` samples; needs n_fft = 4*hop."""
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
    """Magnitude on `FREQS` of a product of resonance peaks: (frames, k) -> (frames, bins).

    Each peak is 1 + A / (1 + ((f - F) / (B/2))^2) with height A = F/(1.5 B) (clipped to 1..6), i.e. a
    resonance without the -12 dB/octave roll-off of a DC-normalised 2-pole filter: cascading five of
    those would leave nothing above 4 kHz; the source tilt alone sets the slope here.
    """
    f, b = freqs_hz[..., None], bandwidths_hz[..., None]
    height = np.clip(f / (1.5 * b), 1.0, 6.0)
    return np.prod(1.0 + height / (1.0 + ((FREQS - f) / (b / 2)) ** 2), axis=-2)


def _tilt(pole: float) -> np.ndarray:
    """Glottal spectral tilt (two real poles) times a mild lip-radiation zero on `FREQS`; unit gain at DC."""
    z = np.exp(-2j * np.pi * FREQS / SAMPLE_RATE)
    return (1 - pole) ** 2 / np.abs(1 - pole * z) ** 2 * np.abs(1 - 0.7 * z) / 0.3


def pulse_train(f0: np.ndarray, jitter: float, shimmer: float, rng: np.random.Generator) -> np.ndarray:
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


def f0_track(spk: Speaker, plan: Plan, micro: float = 1.0, hold_frames: int = 0) -> np.ndarray:
    """F0 in Hz per sample; ``micro`` scales drift and flutter, ``hold_frames`` > 0 makes a stair-step F0."""
    semitones = plan.f0_contour + micro * plan.f0_micro
    if hold_frames > 0:
        semitones = np.repeat(semitones[::hold_frames], hold_frames)[: len(semitones)]
    f0_frames = spk.f0_median * 2.0 ** (semitones / 12.0)
    if hold_frames > 0:
        return np.repeat(f0_frames, HOP)[: plan.n]
    return np.interp(np.arange(plan.n), np.arange(len(f0_frames)) * HOP, f0_frames)


def unit_power(spec: np.ndarray) -> np.ndarray:
    """Scale every frame of a spectrogram to unit mean power (silent frames stay silent)."""
    power = np.mean(np.abs(spec) ** 2, axis=1, keepdims=True)
    return spec / np.sqrt(power + 1e-12)


def render(
    spk: Speaker,
    plan: Plan,
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
    f0 = f0_track(spk, plan, micro, hold_frames)
    pulses = unit_power(stft(pulse_train(f0, micro * spk.jitter, micro * spk.shimmer, rng)))
    noise = unit_power(stft(rng.normal(0, 1, plan.n)))
    formants = _smooth(plan.formants, formant_smoothing)
    vocal = _formant_peaks(formants, plan.bandwidths * bandwidth_scale) * _tilt(spk.tilt)
    vocal /= np.sqrt(np.mean(vocal**2, axis=1, keepdims=True))
    # Fricatives: a broad resonance above a steep (8th-order) high-pass at 60 % of its centre.
    highpass = 1.0 / np.sqrt(1.0 + (0.6 * plan.fric_hz[:, None] / np.maximum(FREQS, 1.0)) ** 8)
    fric = _formant_peaks(plan.fric_hz[:, None], 0.5 * plan.fric_hz[:, None]) * highpass
    fric /= np.sqrt(np.mean(fric**2, axis=1, keepdims=True))
    v, u = plan.voiced[:, None], plan.unvoiced[:, None]
    spec = pulses * vocal * v + noise * (fric * u + vocal * v * spk.breathiness)
    return istft(spec, plan.n)


# Noise floor SNR ranges (dB re the speech RMS). Bona fide audio was "recorded" in rooms; generated
# speech is cleaner, as vocoder output is. This mirrors the known silence/noise-floor cue of real
# 2019 LA, and it is what lets the demo's random-weight SSL front end learn anything in a few minutes.
BONAFIDE_SNR_DB = (10.0, 25.0)
SPOOF_SNR_DB = (35.0, 60.0)


def channel(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """The chain every utterance goes through: mild random EQ, a pinkish noise floor, a random peak level."""
    x = lfilter([1.0, -rng.uniform(-0.3, 0.3)], [1.0], x)
    x = x / (np.std(x) + 1e-12)
    floor = lfilter([1.0], [1.0, -0.9], rng.normal(0, 1, len(x)))
    x = x + floor / np.std(floor) * 10 ** (-rng.uniform(*snr_db) / 20)
    return x / np.max(np.abs(x)) * rng.uniform(0.25, 0.9)
