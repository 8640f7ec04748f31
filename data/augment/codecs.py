"""Codec and channel simulation: real encode -> decode round trips through FFmpeg (PyAV), aligned.

Each `Channel` takes a float32 waveform (n,) at 16 kHz and returns one of exactly n samples, aligned with
the input: the codec's delay (encoder priming plus decoder delay, measured once per setting by
cross-correlating a probe signal) is removed, the tail is flushed out of the encoder, and clips shorter
than a codec frame are zero-padded and trimmed back. Codecs with a native rate other than 16 kHz
(G.711, AMR-NB at 8 kHz; Opus decodes at 48 kHz) are reached with soxr resampling, which has no delay.

Supported (our name -> FFmpeg encoder): mp3 -> libmp3lame, aac -> aac (FFmpeg's native AAC-LC),
vorbis -> vorbis (FFmpeg's native encoder: experimental, stereo only, quality-driven: it ignores bit rates,
so it takes ``quality`` instead), opus -> libopus, g722 -> g722, mulaw/alaw -> pcm_mulaw/pcm_alaw (G.711 at
8 kHz), amrnb -> libopencore_amrnb (8 kHz), and the channel ``telephone`` (8 kHz round trip, 300-3400 Hz
band pass). GSM is not supported: the FFmpeg bundled with PyAV decodes GSM but has no GSM encoder.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import scipy.signal
import soxr

from utils.errors import UserError

SAMPLE_RATE = 16000
#: soxr quality for the codec-rate round trips (flat to ~0.9 Nyquist; a codec is the bottleneck anyway).
RESAMPLE_QUALITY = "HQ"
#: The longest codec delay searched for when measuring it, in codec-rate samples.
MAX_DELAY = 8192
#: The most a decoded signal may lead its input (samples at the codec rate), see `measure_delay`.
MAX_LEAD = 64
MP3_BITRATES = {
    "mpeg1": (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    "mpeg2": (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    "mpeg2.5": (8, 16, 24, 32, 40, 48, 56, 64),
}
AMRNB_BITRATES = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)
UNSUPPORTED = {
    "gsm": "GSM is not supported: the FFmpeg bundled with PyAV has a GSM decoder but no GSM encoder "
    "(libgsm is not built in); use amrnb or telephone for a narrow-band phone channel",
}
ALIASES = {
    "m4a": "aac",
    "ogg": "vorbis",
    "ulaw": "mulaw",
    "amr-nb": "amrnb",
    "amr_nb": "amrnb",
    "gsm_ms": "gsm",
}


@dataclass(frozen=True)
class CodecInfo:
    """How one supported codec is driven through FFmpeg."""

    encoder: str
    decoder: str
    sample_format: str  # the encoder's input format: fltp, flt or s16
    rates: tuple[int, ...]  # the rates the codec is run at; the first is the default
    bitrate: str  # "required", "fixed" (not configurable) or "quality" (vorbis)
    default: float | None = None  # default bitrate (bit/s) or quality
    stereo: bool = False  # encoder opens only in stereo: the channel is duplicated
    options: dict[str, str] = field(default_factory=dict)


CODECS: dict[str, CodecInfo] = {
    "mp3": CodecInfo(
        "libmp3lame", "mp3", "fltp", (16000, 8000, 22050, 24000, 32000, 44100, 48000), "required", 128000
    ),
    "aac": CodecInfo(
        "aac", "aac", "fltp", (16000, 8000, 22050, 24000, 32000, 44100, 48000), "required", 64000
    ),
    "vorbis": CodecInfo(
        "vorbis",
        "vorbis",
        "fltp",
        (16000, 22050, 32000, 44100, 48000),
        "quality",
        3.0,
        True,
        {"strict": "experimental"},
    ),
    "opus": CodecInfo("libopus", "libopus", "flt", (16000, 8000, 12000, 24000, 48000), "required", 16000),
    "g722": CodecInfo("g722", "g722", "s16", (16000,), "fixed"),
    "mulaw": CodecInfo("pcm_mulaw", "pcm_mulaw", "s16", (8000, 16000), "fixed"),
    "alaw": CodecInfo("pcm_alaw", "pcm_alaw", "s16", (8000, 16000), "fixed"),
    "amrnb": CodecInfo("libopencore_amrnb", "amrnb", "s16", (8000,), "required", 12200),
}
CHANNELS = ("telephone",)
NAMES = (*CODECS, *CHANNELS)
#: Every codec and channel at a high- and (where it has one) a low-fidelity setting (bit/s; vorbis:
#: quality): what the tests round-trip and the bench times.
SAMPLE_SETTINGS: tuple[tuple[str, float | None], ...] = (
    ("mp3", 128000), ("mp3", 16000), ("aac", 96000), ("aac", 16000), ("vorbis", 8), ("vorbis", 0.5),
    ("opus", 16000), ("opus", 8000), ("g722", None), ("mulaw", None), ("alaw", None), ("amrnb", 12200),
    ("amrnb", 4750), ("telephone", None),
)  # fmt: skip
#: FFmpeg's lambda per quality unit (FF_QP2LAMBDA): global_quality = quality * 118.
_QP2LAMBDA = 118


def canonical_name(name: str) -> str:
    """Our codec name for ``name`` (case-insensitive, aliases m4a, ogg, ulaw, amr-nb); UserError-free."""
    low = str(name).strip().lower()
    return ALIASES.get(low, low)


def _mp3_family(rate: int) -> str:
    return "mpeg1" if rate >= 32000 else "mpeg2" if rate >= 16000 else "mpeg2.5"


def check_setting(
    name: str, bitrate: float | None, rate: int | None, key: str, value_key: str | None = None
) -> tuple[float | None, int]:
    """Validate one codec setting; return (bitrate or quality, rate) with defaults filled in.

    ``key`` names the recipe entry in messages (``augment.codecs[1]``), ``value_key`` its bit rate or
    quality when that is not ``key.bitrate`` / ``key.quality`` (an element of a list). Raises UserError.
    """
    if name in UNSUPPORTED:
        raise UserError(f"{key}.name: {UNSUPPORTED[name]}")
    if name == "telephone":
        if bitrate is not None:
            raise UserError(f"{key}.bitrate: the telephone channel has no bit rate (8 kHz, 300-3400 Hz)")
        if rate not in (None, 8000):
            raise UserError(f"{key}.rate: the telephone channel runs at 8000 Hz only, got {rate}")
        return None, 8000
    if name not in CODECS:
        known = ", ".join(NAMES)
        raise UserError(f"{key}.name: unknown codec {name!r} (known: {known}; GSM is unsupported)")
    info = CODECS[name]
    rate = info.rates[0] if rate is None else rate
    if rate not in info.rates:
        raise UserError(f"{key}.rate: {name} runs at {', '.join(map(str, info.rates))} Hz, got {rate}")
    what = "quality" if info.bitrate == "quality" else "bitrate"
    vkey = value_key or f"{key}.{what}"
    if info.bitrate == "fixed":
        if bitrate is not None:
            raise UserError(f"{vkey}: {name} has a fixed bit rate and takes none, got {bitrate}")
        return None, rate
    value = info.default if bitrate is None else bitrate
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{vkey}: expected a number, got {value!r}")
    if name == "mp3":
        allowed = MP3_BITRATES[_mp3_family(rate)]
        if value % 1000 or value // 1000 not in allowed:
            raise UserError(
                f"{vkey}: mp3 at {rate} Hz takes {', '.join(f'{k}000' for k in allowed)} bit/s, got {value}"
            )
    elif name == "aac":
        top = 6144 * rate // 1024  # FFmpeg's AAC encoder caps a mono stream here (silently)
        if not 8000 <= value <= top:
            raise UserError(f"{vkey}: aac at {rate} Hz takes 8000-{top} bit/s, got {value}")
    elif name == "opus":
        if not 6000 <= value <= 510000:
            raise UserError(f"{vkey}: opus takes 6000-510000 bit/s, got {value}")
    elif name == "amrnb":
        if value not in AMRNB_BITRATES:
            raise UserError(
                f"{vkey}: amrnb takes one of {', '.join(map(str, AMRNB_BITRATES))} bit/s, got {value}"
            )
    elif name == "vorbis" and not 0 < value <= 10:
        raise UserError(
            f"{vkey}: vorbis takes a quality in (0, 10] (the native encoder ignores bit rates; "
            f"at 16 kHz q1 ~ 25, q3 ~ 50, q8 ~ 80 kbit/s), got {value}"
        )
    return value, rate


# --- The FFmpeg round trip at the codec's rate -------------------------------------------------------


def _to_frame_array(x: np.ndarray, fmt: str, channels: int) -> np.ndarray:
    if fmt == "s16":
        pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
        return np.ascontiguousarray(np.repeat(pcm, channels)[None] if channels > 1 else pcm[None])
    if fmt == "flt":
        return np.ascontiguousarray((np.repeat(x, channels) if channels > 1 else x)[None], dtype=np.float32)
    return np.ascontiguousarray(np.broadcast_to(x, (channels, x.shape[0])), dtype=np.float32)


def _from_frame(frame: av.AudioFrame) -> np.ndarray:
    """First channel of a decoded frame as float32 (samples,)."""
    a = frame.to_ndarray()
    if not frame.format.is_planar:
        a = a.reshape(-1, len(frame.layout.channels)).T
    first = a[0]
    if first.dtype == np.int16:
        return first.astype(np.float32) / 32768.0
    return first.astype(np.float32, copy=False)


def _open_encoder(info: CodecInfo, value: float | None, rate: int) -> av.CodecContext:
    enc = av.CodecContext.create(info.encoder, "w")
    enc.sample_rate = rate
    enc.layout = "stereo" if info.stereo else "mono"
    enc.format = info.sample_format
    options = dict(info.options)
    if info.bitrate == "quality":
        options.update({"flags": "+qscale", "global_quality": str(round(value * _QP2LAMBDA))})
    elif value is not None:
        enc.bit_rate = int(value)
    enc.options = options
    enc.open()
    return enc


def encode_decode(x: np.ndarray, info: CodecInfo, value: float | None, rate: int, tail: int) -> np.ndarray:
    """Encode then decode ``x`` (n,) float32 at ``rate``; ``tail`` zeros are appended first so that the
    delayed signal comes out whole. Returns the decoded first channel at ``rate`` (unaligned, any length)."""
    enc = _open_encoder(info, value, rate)
    frame_size = enc.frame_size or x.shape[0] + tail
    total = -(-(x.shape[0] + tail) // frame_size) * frame_size
    padded = np.zeros(total, dtype=np.float32)
    padded[: x.shape[0]] = x
    channels = 2 if info.stereo else 1
    layout = enc.layout.name
    packets = []
    for start in range(0, total, frame_size):
        frame = av.AudioFrame.from_ndarray(
            _to_frame_array(padded[start : start + frame_size], info.sample_format, channels),
            format=info.sample_format,
            layout=layout,
        )
        frame.sample_rate = rate
        frame.pts = start
        packets.extend(enc.encode(frame))
    packets.extend(enc.encode(None))
    dec = av.CodecContext.create(info.decoder, "r")
    dec.sample_rate = rate
    dec.layout = layout
    if enc.extradata:
        dec.extradata = enc.extradata
    pieces = []
    out_rate = rate
    for packet in [*packets, None]:
        for frame in dec.decode(packet):
            out_rate = frame.sample_rate
            pieces.append(_from_frame(frame))
    y = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    if out_rate != rate:  # FFmpeg's Opus decoders always give 48 kHz
        y = soxr.resample(y, out_rate, rate, quality=RESAMPLE_QUALITY)
    return y


@functools.cache
def _probe(rate: int) -> np.ndarray:
    """0.5 s of band-limited (300-3400 Hz) noise at ``rate``: a sharp, unambiguous cross-correlation peak."""
    noise = np.random.RandomState(12345).standard_normal(rate // 2)
    sos = scipy.signal.butter(4, [300, 3400], "bandpass", fs=rate, output="sos")
    return (0.3 * scipy.signal.sosfilt(sos, noise)).astype(np.float32)


@functools.cache
def measure_delay(name: str, value: float | None, rate: int) -> int:
    """Samples (at ``rate``) by which the codec's output lags its input: the cross-correlation peak of a
    probe signal with its round trip, searched in [−MAX_LEAD, MAX_DELAY).

    Measured per setting: Opus's delay changes with its mode (SILK at low rates, CELT at high), and its
    SILK output comes out ~1.5 samples at 16 kHz *ahead* of the input once the decoder drops the pre-skip.
    """
    info = CODECS[name]
    probe = _probe(rate)
    y = encode_decode(probe, info, value, rate, MAX_DELAY)
    y = np.concatenate([np.zeros(MAX_LEAD, dtype=np.float32), y])
    y = np.pad(y, (0, max(0, MAX_LEAD + probe.shape[0] + MAX_DELAY - y.shape[0])))
    corr = scipy.signal.correlate(
        y[: MAX_LEAD + probe.shape[0] + MAX_DELAY], probe, mode="valid", method="fft"
    )
    return int(np.argmax(corr[: MAX_LEAD + MAX_DELAY])) - MAX_LEAD


# --- Channels at 16 kHz ------------------------------------------------------------------------------


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    return x if src == dst else soxr.resample(x, src, dst, quality=RESAMPLE_QUALITY)


def _exact_length(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if y.shape[0] >= n else np.pad(y, (0, n - y.shape[0]))


class Channel:
    """One codec round trip (or the telephone channel) at fixed settings; `apply` is deterministic.

    Validates the setting on construction (raising UserError naming ``key``), opens the encoder once
    to prove FFmpeg accepts it, and measures the codec delay.
    """

    def __init__(
        self,
        name: str,
        bitrate: float | None = None,
        rate: int | None = None,
        key: str = "codec",
        value_key: str | None = None,
    ) -> None:
        self.name = canonical_name(name)
        self.value, self.rate = check_setting(self.name, bitrate, rate, key, value_key)
        self.delay = 0
        if self.name in CODECS:
            info = CODECS[self.name]
            try:  # also proves that FFmpeg opens the encoder with this setting
                self.delay = measure_delay(self.name, self.value, self.rate)
            except (av.FFmpegError, ValueError) as exc:
                what = "quality" if info.bitrate == "quality" else "bitrate"
                raise UserError(
                    f"{value_key or f'{key}.{what}'}: FFmpeg's {info.encoder} refuses this setting ({exc})"
                ) from exc

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable description (for the run record)."""
        out: dict[str, Any] = {"name": self.name, "rate": self.rate, "delay": self.delay}
        if self.name in CODECS:
            info = CODECS[self.name]
            out["encoder"] = info.encoder
            if self.value is not None:
                out["quality" if info.bitrate == "quality" else "bitrate"] = self.value
        return out

    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value:g}"

    def apply(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Round trip of ``wave`` (n,) at ``sample_rate`` Hz -> float32 (n,), aligned with the input."""
        x = np.asarray(wave, dtype=np.float32)
        n = x.shape[0]
        if n == 0:
            return x.copy()
        xc = _resample(x, sample_rate, self.rate)
        if self.name == "telephone":
            y = scipy.signal.sosfiltfilt(_telephone_band(self.rate), xc).astype(np.float32)
        else:
            info = CODECS[self.name]
            y = encode_decode(xc, info, self.value, self.rate, max(self.delay, 0) + 2048)
            y = y[self.delay :] if self.delay >= 0 else np.concatenate([np.zeros(-self.delay, np.float32), y])
            y = _exact_length(y, xc.shape[0])
        return _exact_length(_resample(y, self.rate, sample_rate), n).astype(np.float32, copy=False)


@functools.cache
def _telephone_band(rate: int) -> np.ndarray:
    return scipy.signal.butter(4, [300, 3400], "bandpass", fs=rate, output="sos")


def apply_chain(wave: np.ndarray, chain: Sequence[Channel], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Apply channels in order (e.g. mp3 then aac); float32 (n,) -> float32 (n,)."""
    y = np.asarray(wave, dtype=np.float32)
    for channel in chain:
        y = channel.apply(y, sample_rate)
    return y
