"""Front ends: F0 subband log-magnitudes (SPEC §3) and SSL hidden states (SPEC §2).

Both follow the interface in docs/ARCHITECTURE.md: ``name``, ``feature_shape`` (model input without the
batch axis), ``store_dtype``, ``n_samples``, ``settings()`` (JSON-serialisable, everything that changes the
numbers) and ``extract(waves) -> (B, *feature_shape)`` float32 for float32 16 kHz waves of any length.
`build_frontend(settings)` rebuilds a front end from its ``settings()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.fft
import torch
from scipy.signal.windows import blackman

from data.audio import fix_length_batch
from utils.errors import UserError

logger = logging.getLogger(__name__)


class FrontEnd(Protocol):
    """What the store, datasets and scoring code rely on."""

    name: str
    feature_shape: tuple[int, ...]
    store_dtype: type
    n_samples: int

    def settings(self) -> dict[str, Any]: ...

    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray: ...


def _check_waves(waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, wave in enumerate(waves):
        wave = np.asarray(wave)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise ValueError(f"wave {i}: expected a non-empty 1-D waveform, got shape {wave.shape}")
        out.append(wave)
    return out


# --------------------------------------------------------------------------------------------------
# F0 subband
# --------------------------------------------------------------------------------------------------

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


class F0SubbandFrontEnd:
    """Low-frequency log-magnitude STFT (SPEC §3): (1, 45, 600) float32 per utterance.

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
    - "dft": the 45 bins as one (90, 1728) windowed-DFT matrix product over all frames, as SPEC §3
      suggests; the plainest statement of the feature.
    - "fft": a real FFT per clip, first 45 bins kept before the log.

    bench/bench_preprocess.py measures all three against a per-file full STFT.
    """

    name = "f0"
    store_dtype = np.float32

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
        self.feature_shape = (1, self.n_bins, self.n_frames)
        self._window = blackman(self.n_fft, sym=True)
        self._dft_t = self._dft_matrix() if method == "dft" else None
        if method == "sliding":
            if self.hop > self.n_fft:
                raise UserError(f"f0 front end: 'sliding' needs hop <= n_fft ({self.hop} > {self.n_fft})")
            self._sliding_tables()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for DataLoader workers: the thread pool is not copied (each process makes its own)."""
        return {**self.__dict__, "_pool": None}

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
        waves = _check_waves(waves)
        out = np.empty((len(waves), *self.feature_shape), dtype=np.float32)
        starts = range(0, len(waves), self.batch_size)

        def run(start: int) -> None:
            chunk = waves[start : start + self.batch_size]
            out[start : start + len(chunk), 0] = self._extract_chunk(chunk)

        if self.method != "sliding" or self.threads == 1 or len(starts) == 1:
            for start in starts:
                run(start)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="f0")
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


# --------------------------------------------------------------------------------------------------
# SSL hidden states
# --------------------------------------------------------------------------------------------------

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RANDOM_PREFIX = "random:"
#: Written into the config.json of models saved by `save_random_model`, so loading them still warns.
RANDOM_CONFIG_KEY = "random_weights_kind"
_warned_random: set[str] = set()


def random_model_config(kind: str):
    """Wav2Vec2Config for a random-weight model: ``tiny``, ``narrow`` or ``xlsr-300m``.

    All three keep the XLS-R conv strides/kernels, so 64,600 samples give 201 frames.
    ``xlsr-300m`` is the full XLS-R 300M architecture (315.4 M parameters) for benchmarks.
    """
    from transformers import Wav2Vec2Config

    common = dict(
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
        conv_bias=True,
        feat_extract_activation="gelu",
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    if kind == "xlsr-300m":
        spec = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)
    elif kind == "tiny":
        # Small positional conv and conv channels: the parts that dominate CPU time in a tiny model.
        spec = dict(hidden_size=1024, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
                    conv_dim=(64,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16)
    elif kind == "narrow":
        spec = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128,
                    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16)
    else:
        raise UserError(f"unknown random SSL model 'random:{kind}' (known: random:tiny, random:narrow, "
                        "random:xlsr-300m)")
    return Wav2Vec2Config(**common, **spec, **{RANDOM_CONFIG_KEY: kind})


def build_random_model(kind: str) -> torch.nn.Module:
    """Wav2Vec2Model with seeded random weights (seed 0, global RNG state left untouched)."""
    from transformers import Wav2Vec2Model

    config = random_model_config(kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Wav2Vec2Model(config)


def save_random_model(kind: str, out_dir: str | os.PathLike) -> Path:
    """Write the ``random:<kind>`` model and its preprocessor config to ``out_dir`` (save_pretrained).

    The directory appears complete or not at all; an existing non-empty ``out_dir`` is an error.
    """
    from transformers import Wav2Vec2FeatureExtractor

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir}: already exists and is not an empty directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        build_random_model(kind).save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _looks_local(model_id: str) -> bool:
    """Paths, not hub ids: absolute, ./ ../ ~ prefixes, or anything that exists on disk."""
    return model_id.startswith(("/", ".", "~", os.sep)) or Path(model_id).exists()


def _read_do_normalize(model_id: str, local: bool) -> bool:
    """``do_normalize`` from the model's preprocessor_config.json; True (the XLS-R setting) if absent."""
    path: Path | None = Path(model_id).expanduser() / "preprocessor_config.json" if local else None
    if not local:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model_id, "preprocessor_config.json"))
        except Exception:  # no preprocessor config on the hub or no network: use the default
            path = None
    if path is None or not path.is_file():
        return True
    try:
        return bool(json.loads(path.read_text()).get("do_normalize", True))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read preprocessor config ({exc})") from exc


def load_ssl_model(model_id: str) -> tuple[torch.nn.Module, bool, str | None]:
    """Load a wav2vec2-family model -> (model, do_normalize, random kind or None).

    ``model_id`` is ``random:<kind>``, a local directory written by ``save_pretrained``, or a hub id.
    """
    if model_id.startswith(RANDOM_PREFIX):
        kind = model_id[len(RANDOM_PREFIX) :]
        return build_random_model(kind), True, kind
    from transformers import AutoModel

    local = _looks_local(model_id)
    if local:
        path = Path(model_id).expanduser()
        if not path.is_dir():
            raise UserError(f"{model_id}: SSL model directory not found (looked for {path.resolve()})")
        if not (path / "config.json").is_file():
            raise UserError(f"{model_id}: not a Hugging Face model directory (no config.json)")
    try:
        model = AutoModel.from_pretrained(str(Path(model_id).expanduser()) if local else model_id)
    except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError, ...
        tried = "local directory" if local else "Hugging Face hub id (not a local directory)"
        msg = " ".join(str(exc).split())[:300]
        raise UserError(f"{model_id}: cannot load SSL model as {tried}: {type(exc).__name__}: {msg}") from exc
    if not hasattr(model, "_get_feat_extract_output_lengths"):
        raise UserError(f"{model_id}: {type(model).__name__} is not a wav2vec2-family speech model "
                        "(expected e.g. Wav2Vec2Model, WavLMModel, HubertModel)")
    return model, _read_do_normalize(model_id, local), getattr(model.config, RANDOM_CONFIG_KEY, None)


def _precast_for_autocast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store Linear/Conv1d weights in ``dtype``, which autocast would cast them to on every call anyway.

    Results are bit-identical to autocast with fp32 weights, minus a weight copy per forward (a quarter
    of XLS-R's CPU time). Layer norms stay fp32 (autocast runs them in fp32); parametrized modules
    (the weight-normed positional conv) are left alone because their weight is computed in fp32.
    """
    from torch.nn.utils import parametrize

    for module in model.modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv1d) and not parametrize.is_parametrized(module):
            module.to(dtype)


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SSLFrontEnd:
    """Hidden states of a frozen wav2vec2-family model (XLS-R, WavLM, HuBERT, ...) -> (1, hidden, frames).

    Waves are tiled/cut to ``n_samples`` (64,600 = 4.04 s), normalised per utterance as the model's feature
    extractor says ((x - mean)/sqrt(var + 1e-7), computed in float64 here), and run through the model in
    eval mode under ``torch.inference_mode``. ``layer`` counts like the model's ``hidden_states``
    (0 = transformer input, k = output of transformer layer k) except that the last one, ``layer = -1``
    (the default) or ``num_hidden_layers``, is always ``last_hidden_state`` (with the final layer norm of
    XLS-R-style stable-layer-norm models, as the published XLS-R-LCNN used). The (frames, hidden) output
    is transposed to (1, hidden, frames) so the LCNN sees features as height and time as width.
    ``dtype``: "fp32" (default on CPU, exact) or autocast "bf16" (default on CUDA) / "fp16".
    ``compile``: run the model through `utils.compile.FrozenCompiled` (one compiled shape: short batches
    are padded to ``batch_size``); a compile failure is logged and extraction goes on eagerly.
    Outputs are rounded to ``store_dtype`` (float16) and returned as float32, so features read from the
    store and computed on the fly are identical.
    """

    name = "ssl"
    store_dtype = np.float16

    def __init__(
        self,
        model: str = "random:tiny",
        layer: int = -1,
        n_samples: int = 64600,
        dtype: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        dtype = dtype or ("bf16" if self.device.type == "cuda" else "fp32")
        # On CPU small batches stay in cache: batch 4 ran ~25 % faster than 8 or 16 for XLS-R 300M.
        batch_size = batch_size or (32 if self.device.type == "cuda" else 4)
        if dtype not in DTYPES:
            raise UserError(f"ssl front end: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.model_id = str(model)
        self.layer = int(layer)
        self.n_samples = int(n_samples)
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))

        net, self.do_normalize, self.random_kind = load_ssl_model(self.model_id)
        if self.random_kind is not None and self.model_id not in _warned_random:
            _warned_random.add(self.model_id)
            logger.warning("SSL model has RANDOM weights (%s) — features are not meaningful", self.model_id)
        self.model = net.float().eval().to(self.device)
        self.model.requires_grad_(False)
        if self.dtype != "fp32":
            _precast_for_autocast(self.model, DTYPES[self.dtype])
        self._compiled = None
        if compile:
            from utils.compile import FrozenCompiled

            self._compiled = FrozenCompiled(self.model)

        config = self.model.config
        n_layers = config.num_hidden_layers
        if not -(n_layers + 1) <= self.layer <= n_layers:
            raise UserError(f"ssl front end: layer {self.layer} out of range for a {n_layers}-layer model "
                            f"(valid: {-(n_layers + 1)}..{n_layers})")
        # transformers 4.x and 5.x disagree on whether hidden_states[-1] includes the final layer norm of
        # stable-layer-norm models, so the last layer is always taken from last_hidden_state.
        self._layer_index = self.layer % (n_layers + 1)
        self.hidden_size = int(config.hidden_size)
        self.frames = int(self.model._get_feat_extract_output_lengths(self.n_samples))
        self.feature_shape = (1, self.hidden_size, self.frames)

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable parameters (model id, layer, length, dtype, ...); see `build_frontend`."""
        return {
            "name": self.name,
            "model": self.model_id,
            "layer": self.layer,
            "n_samples": self.n_samples,
            "dtype": self.dtype,
            "tiling": "repeat",
            "do_normalize": self.do_normalize,
            "random_weights": self.random_kind is not None,
            "model_type": str(self.model.config.model_type),
            "hidden_size": self.hidden_size,
            "frames": self.frames,
        }

    def prepare(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Waves -> (B, n_samples) float32 model input: length-fixed by tiling, then normalised."""
        x = fix_length_batch(_check_waves(waves), self.n_samples, dtype=np.float64)
        if self.do_normalize:
            x = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-7)
        return x.astype(np.float32)

    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Waves (any lengths, 16 kHz) -> (B, 1, hidden, frames) float32 (values exact in float16)."""
        waves = list(waves)
        out = np.empty((len(waves), *self.feature_shape), dtype=np.float32)
        for start in range(0, len(waves), self.batch_size):
            chunk = waves[start : start + self.batch_size]
            hidden = self._forward(torch.from_numpy(self.prepare(chunk)))  # (b, frames, hidden)
            block = hidden.transpose(1, 2).cpu().numpy().astype(self.store_dtype)
            if not np.isfinite(block).all():  # fp16 overflow or a diverged model must not reach the store
                raise RuntimeError(f"{self.model_id}: non-finite hidden states (beyond float16 range?)")
            out[start : start + len(chunk), 0] = block
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, n_samples) normalised waves -> (b, frames, hidden) float32 hidden states of ``layer``."""
        autocast = torch.autocast(self.device.type, dtype=DTYPES[self.dtype], enabled=self.dtype != "fp32")
        n = x.shape[0]
        model = self.model
        if self._compiled is not None and self._compiled.failed is None:
            from utils.compile import pad_batch

            model, x = self._compiled, pad_batch(x, self.batch_size)
        with torch.inference_mode(), autocast:
            x = x.to(self.device)
            if self._layer_index == self.model.config.num_hidden_layers:
                hidden = model(x).last_hidden_state
            else:
                hidden = model(x, output_hidden_states=True).hidden_states[self._layer_index]
        if self._compiled is not None and self._compiled.failed and model is self._compiled:
            logger.warning("torch.compile failed, extracting without it (%s)", self._compiled.failed)
        return hidden[:n].float()


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------

_FRONTENDS: dict[str, type] = {"f0": F0SubbandFrontEnd, "ssl": SSLFrontEnd}
#: Keys `settings()` reports for the record that are derived, not chosen; ignored when rebuilding.
_DERIVED = {
    "f0": {"window", "log"},
    "ssl": {"tiling", "do_normalize", "random_weights", "model_type", "hidden_size", "frames"},
}
_CHOSEN = {
    "f0": {"tiling", "max_samples", "pre_emphasis", "n_fft", "hop", "n_bins", "n_frames", "method",
           "batch_size", "workers", "threads"},
    "ssl": {"model", "layer", "n_samples", "dtype", "batch_size", "compile"},
}


def build_frontend(settings: dict[str, Any], device: str | torch.device | None = None) -> FrontEnd:
    """Build a front end from a settings dict: ``{"name": "f0", ...}`` or ``{"name": "ssl", "model": ...}``.

    Accepts the output of ``settings()``; derived keys in it are ignored, unknown keys are a `UserError`.
    ``device`` (SSL only): None = CUDA if available.
    """
    settings = dict(settings)
    name = settings.pop("name", None)
    if name not in _FRONTENDS:
        raise UserError(f"front end name must be one of {sorted(_FRONTENDS)}, got {name!r}")
    unknown = set(settings) - _CHOSEN[name] - _DERIVED[name]
    if unknown:
        raise UserError(f"unknown {name} front-end setting(s) {sorted(unknown)} "
                        f"(known: {sorted(_CHOSEN[name])})")
    kwargs = {k: v for k, v in settings.items() if k in _CHOSEN[name]}
    if name == "ssl":
        kwargs["device"] = device
    return _FRONTENDS[name](**kwargs)
