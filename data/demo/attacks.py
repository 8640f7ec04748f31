"""The 13 simulated attacks of the demo corpus and `synthesize`, which renders one utterance.

Spoofs imitate the artefacts of real attacks (Griffin-Lim phase, LPC vocoders with robotic or jitter-free
F0, over-smoothed envelopes, narrow-band codecs, phase-vocoder voice conversion, unit concatenation). As
in 2019 LA, train and dev share attacks A01-A06 while eval uses A07-A13 only: other algorithms, or known
families with other parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, resample_poly, sosfilt

from data.audio import SAMPLE_RATE
from data.demo.synthesis import (
    FREQS,
    HOP,
    N_FFT,
    Plan,
    Speaker,
    f0_track,
    istft,
    make_plan,
    pulse_train,
    render,
    stft,
    unit_power,
)


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


def _lpc_envelope(x: np.ndarray, order: int = 18) -> np.ndarray:
    """Per-frame LPC spectral envelope gain/|A| on the `FREQS` grid: (n,) -> (frames, bins).

    Autocorrelation method with a vectorised Levinson-Durbin recursion over all frames.
    """
    power = np.abs(stft(x)) ** 2
    acf = np.fft.irfft(power, n=N_FFT, axis=1)[:, : order + 1]
    acf[:, 0] *= 1.0 + 1e-6  # white-noise correction keeps the recursion stable on near-silent frames
    acf[:, 0] += 1e-12
    a = np.zeros((len(acf), order + 1))
    a[:, 0] = 1.0
    err = acf[:, 0].copy()
    for i in range(1, order + 1):
        k = -np.sum(a[:, :i] * acf[:, i:0:-1], axis=1) / err
        a[:, 1 : i + 1] = a[:, 1 : i + 1] + k[:, None] * a[:, i - 1 :: -1][:, :i]
        err *= 1.0 - k**2
    inverse = np.abs(np.fft.rfft(a, n=N_FFT, axis=1))
    return np.sqrt(err)[:, None] / inverse


def _lpc_vocoder(
    x: np.ndarray, plan: Plan, rng: np.random.Generator, f0: np.ndarray, noise_mix: float
) -> np.ndarray:
    """Resynthesise ``x`` from its LPC envelope with a new, jitter-free pulse/noise excitation."""
    pulses = unit_power(stft(pulse_train(f0, 0.0, 0.0, rng)))
    noise = unit_power(stft(rng.normal(0, 1, len(x))))
    voicing = (plan.voiced > plan.unvoiced)[:, None]
    excitation = np.where(voicing, np.sqrt(1 - noise_mix**2) * pulses + noise_mix * noise, noise)
    return istft(excitation * _lpc_envelope(x), len(x))


def _griffin_lim(x: np.ndarray, rng: np.random.Generator, n_fft: int, n_iter: int) -> np.ndarray:
    """Keep the STFT magnitude of ``x``, rebuild the phase from random with Griffin-Lim."""
    hop = n_fft // 4
    mag = np.abs(stft(x, n_fft, hop))
    phase = np.exp(2j * np.pi * rng.random(mag.shape))
    for _ in range(n_iter):
        y = istft(mag * phase, len(x), n_fft, hop)
        phase = np.exp(1j * np.angle(stft(y, n_fft, hop)))
    return istft(mag * phase, len(x), n_fft, hop)


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
        spec = stft(y)
        db = 20 * np.log10(np.abs(spec) + 1e-9)
        spec = spec / (np.abs(spec) + 1e-9) * 10 ** (np.round(db / db_step) * db_step / 20)
        y = istft(spec, len(x))
    return np.pad(y, (0, len(x) - len(y)))


def _pitch_shift(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Shift pitch and formants by ``up/down`` keeping the length: phase-vocoder stretch, then resample."""
    rate = down / up
    spec = stft(x)
    steps = np.arange(0, len(spec) - 1, rate)
    i = steps.astype(np.int64)
    w = (steps - i)[:, None]
    mag = (1 - w) * np.abs(spec[i]) + w * np.abs(spec[i + 1])
    expected = 2 * np.pi * HOP * FREQS / SAMPLE_RATE
    dphi = np.angle(spec[i + 1]) - np.angle(spec[i]) - expected
    dphi = dphi - 2 * np.pi * np.round(dphi / (2 * np.pi))
    phase = np.angle(spec[0]) + np.cumsum(
        np.vstack([np.zeros(spec.shape[1]), (dphi + expected)[:-1]]), axis=0
    )
    stretched = istft(mag * np.exp(1j * phase), len(steps) * HOP)
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
        unit_spk = dataclasses.replace(spk, f0_median=spk.f0_median * 2 ** (rng.normal(0, 1.0) / 12))
        unit = render(unit_spk, make_plan(unit_spk, n, rng), rng)[a0:b1]
        level = 10 ** (rng.normal(0, 3) / 20)
        ramp = np.ones(b1 - a0)
        if a0 < a:
            ramp[: 2 * fade] = np.linspace(0, 1, 2 * fade)
        if b1 > b:
            ramp[-2 * fade :] = np.minimum(ramp[-2 * fade :], np.linspace(1, 0, 2 * fade))
        out[a0:b1] += unit / (np.std(unit) + 1e-9) * level * ramp
    return out


def synthesize(spk: Speaker, attack: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Render one utterance of ``n`` samples for speaker ``spk``: ``attack`` is ``"-"`` (bona fide) or an id.

    Returns float64 (n,) before the shared channel (`channel`); deterministic for a given ``rng`` state.
    """
    if attack == "-":
        return render(spk, make_plan(spk, n, rng), rng)
    if attack in ("A06", "A13"):
        # The attacker's source voice sits at 1/ratio of the target; the shift brings it onto the target.
        up, down = (6, 5) if attack == "A06" else (7, 8)
        source = dataclasses.replace(
            spk,
            f0_median=spk.f0_median * down / up,
            formant_scale=spk.formant_scale * down / up,
            jitter=float(rng.uniform(0.004, 0.012)),
        )
        return _pitch_shift(render(source, make_plan(source, n, rng), rng), up, down)
    if attack == "A11":
        return _concatenate_units(spk, n, rng)
    plan = make_plan(spk, n, rng)
    if attack == "A01":
        return _griffin_lim(render(spk, plan, rng), rng, 512, 16)
    if attack == "A02":
        return _lpc_vocoder(render(spk, plan, rng), plan, rng, np.full(n, spk.f0_median), 0.0)
    if attack == "A03":
        return render(spk, plan, rng, micro=0.0)
    if attack == "A04":
        return render(spk, plan, rng, micro=0.3, bandwidth_scale=2.5, formant_smoothing=10)
    if attack == "A05":
        return _codec(render(spk, plan, rng), 300, 3400, 8)
    if attack == "A07":
        y = _griffin_lim(render(spk, plan, rng), rng, 1024, 8)
        return sosfilt(butter(8, 7000, fs=SAMPLE_RATE, output="sos"), y)
    if attack == "A08":
        return _lpc_vocoder(render(spk, plan, rng), plan, rng, f0_track(spk, plan, micro=0.0), 0.3)
    if attack == "A09":
        return render(spk, plan, rng, micro=0.0, hold_frames=2)
    if attack == "A10":
        return _codec(render(spk, plan, rng), 200, 3600, 12, db_step=3.0)
    if attack == "A12":
        y = render(spk, plan, rng, micro=0.0, bandwidth_scale=2.0, formant_smoothing=8)
        return _griffin_lim(y, rng, 512, 12)
