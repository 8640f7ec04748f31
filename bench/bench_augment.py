"""Augmentation speed (utterances/s on one core, 4 s clips at 16 kHz), each against a baseline run in the
same process on the same clips, in interleaved rounds:

1. RawBoost algos 1-8: ours (data.augment.rawboost) vs the published style, written out below as the
   published code is (scipy.signal.firwin, freqz, lfilter per filter; only its draws take a RandomState
   and are scalar). Both give the same outputs (checked here). Target: algo 5 >= 2x.
2. Codecs: `Channel.apply` (resampling to the codec rate, padding, delay compensation, trimming) vs a bare
   PyAV encode + decode of the same codec on the clip already at the codec's rate. Target: overhead
   <= 20 %. Chains and the presets' whole pipelines are reported, not targeted.
3. Recipe: training throughput (samples/s) of the F0 SR-LA-Res2Net recipe (configs/sr_la_res2net_f0.yaml:
   its front end, model, loss, optimizer and amp settings) from audio, features computed in 2 DataLoader
   workers, without augmentation and with RawBoost algo 5 (``augment.preset=la``) in the workers. One
   round = one epoch over a generated train partition (``--recipe-utts`` utterances of 1.5-4 s, batch
   ``--recipe-batch``, worker start-up included, as in training); the two settings alternate.

    python bench/bench_augment.py                  # ~3-5 min on 2 busy cores (plus the recipe part)
    python bench/bench_augment.py --rounds 2 --skip codecs
    python bench/bench_augment.py --skip rawboost,codecs --recipe-utts 32 --recipe-batch 8 --rounds 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core figures; read by the FFT/BLAS libraries at load

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402
import soxr  # noqa: E402
from scipy import signal  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_preprocess import interleaved, synthetic_waves  # noqa: E402

from data.augment import Augmenter, Channel, RawBoostParams, apply_chain, apply_rawboost  # noqa: E402
from data.augment.codecs import CHANNELS, CODECS, SAMPLE_SETTINGS, _from_frame, _to_frame_array  # noqa: E402
from utils.errors import run_cli  # noqa: E402

# --- The published style: RawBoost.py as published, draws from a RandomState ----------------------------

P = RawBoostParams().settings()  # the published defaults
FS = 16000


def pub_norm(x: np.ndarray, always: bool) -> np.ndarray:
    if always or np.amax(abs(x)) > 1:
        x = x / np.amax(abs(x))
    return x


def pub_notch(rng: np.random.RandomState, min_g: float, max_g: float) -> np.ndarray:
    b = 1
    for _ in range(P["nBands"]):
        fc = rng.uniform(P["minF"], P["maxF"])
        bw = rng.uniform(P["minBW"], P["maxBW"])
        c = int(rng.uniform(P["minCoeff"], P["maxCoeff"]))
        if c / 2 == int(c / 2):
            c = c + 1
        f1, f2 = fc - bw / 2, fc + bw / 2
        if f1 <= 0:
            f1 = 1 / 1000
        if f2 >= FS / 2:
            f2 = FS / 2 - 1 / 1000
        b = np.convolve(signal.firwin(c, [float(f1), float(f2)], window="hamming", fs=FS), b)
    g = rng.uniform(min_g, max_g)
    _, h = signal.freqz(b, 1, fs=FS)
    return pow(10, g / 20) * b / np.amax(abs(h))


def pub_fir(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = b.shape[0] + 1
    y = signal.lfilter(b, 1, np.pad(x, (0, n), "constant"))
    return y[int(n / 2) : int(y.shape[0] - n / 2)]


def pub_lnl(x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    y = [0] * x.shape[0]
    min_g, max_g = P["minG"], P["maxG"]
    for i in range(P["N_f"]):
        if i == 1:
            min_g, max_g = min_g - P["minBiasLinNonLin"], max_g - P["maxBiasLinNonLin"]
        y = y + pub_fir(np.power(x, (i + 1)), pub_notch(rng, min_g, max_g))
    return pub_norm(y - np.mean(y), False)


def pub_isd(x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    beta = rng.uniform(0, P["P"])
    y = x.copy()
    n = int(x.shape[0] * (beta / 100))
    p = rng.permutation(x.shape[0])[:n]
    f_r = np.multiply(((2 * rng.rand(p.shape[0])) - 1), ((2 * rng.rand(p.shape[0])) - 1))
    y[p] = x[p] + P["g_sd"] * x[p] * f_r
    return pub_norm(y, False)


def pub_ssi(x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    noise = rng.normal(0, 1, x.shape[0])
    noise = pub_norm(pub_fir(noise, pub_notch(rng, P["minG"], P["maxG"])), True)
    snr = rng.uniform(P["SNRmin"], P["SNRmax"])
    noise = noise / np.linalg.norm(noise, 2) * np.linalg.norm(x, 2) / 10.0 ** (0.05 * snr)
    return x + noise


PUB_SERIES = {
    1: (pub_lnl,),
    2: (pub_isd,),
    3: (pub_ssi,),
    4: (pub_lnl, pub_isd, pub_ssi),
    5: (pub_lnl, pub_isd),
    6: (pub_lnl, pub_ssi),
    7: (pub_isd, pub_ssi),
}


def published_rawboost(x: np.ndarray, algo: int, rng: np.random.RandomState) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if algo == 8:
        return pub_norm(pub_lnl(x, rng) + pub_isd(x, rng), False)
    for stage in PUB_SERIES[algo]:
        x = stage(x, rng)
    return x


# --- The bare codec round trip ---------------------------------------------------------------------------


def bare_roundtrip(x: np.ndarray, name: str, value: float | None, rate: int) -> int:
    """Plain PyAV encode + decode of ``x`` (already at ``rate``); returns the decoded sample count."""
    info = CODECS[name]
    enc = av.CodecContext.create(info.encoder, "w")
    enc.sample_rate, enc.format = rate, info.sample_format
    enc.layout = "stereo" if info.stereo else "mono"
    options = dict(info.options)
    if info.bitrate == "quality":
        options.update({"flags": "+qscale", "global_quality": str(round(value * 118))})
    elif value is not None:
        enc.bit_rate = int(value)
    enc.options = options
    enc.open()
    step = enc.frame_size or x.shape[0]
    x = np.pad(x, (0, -x.shape[0] % step))
    channels = 2 if info.stereo else 1
    packets = []
    for start in range(0, x.shape[0], step):
        frame = av.AudioFrame.from_ndarray(
            _to_frame_array(x[start : start + step], info.sample_format, channels),
            format=info.sample_format,
            layout=enc.layout.name,
        )
        frame.sample_rate = rate
        packets.extend(enc.encode(frame))
    packets.extend(enc.encode(None))
    dec = av.CodecContext.create(info.decoder, "r")
    dec.sample_rate, dec.layout = rate, enc.layout.name
    if enc.extradata:
        dec.extradata = enc.extradata
    return sum(_from_frame(f).shape[0] for p in [*packets, None] for f in dec.decode(p))


# --- The benchmarks --------------------------------------------------------------------------------------


def per_clip(fn: Callable[[np.ndarray, int], object], clips: Sequence[np.ndarray]) -> Callable[[int], int]:
    def run(r: int) -> int:
        for i, clip in enumerate(clips):
            fn(clip, 1000 * r + i)
        return len(clips)

    return run


def bench_rawboost(clips: list[np.ndarray], rounds: int) -> None:
    print("\nRawBoost, utt/s per core (4 s clips): ours vs published style")
    for algo in range(1, 9):
        ours_y = apply_rawboost(clips[0], algo, np.random.RandomState(7))
        pub_y = published_rawboost(clips[0], algo, np.random.RandomState(7))
        diff = float(np.abs(ours_y - pub_y).max())
        rates = interleaved(
            {
                "ours": per_clip(lambda x, s, a=algo: apply_rawboost(x, a, np.random.RandomState(s)), clips),
                "published": per_clip(
                    lambda x, s, a=algo: published_rawboost(x, a, np.random.RandomState(s)), clips
                ),
            },
            rounds,
        )
        ratio = rates["ours"] / rates["published"]
        target = ("  PASS (>= 2x)" if ratio >= 2 else "  MISS (< 2x)") if algo == 5 else ""
        print(
            f"  algo {algo}: ours {rates['ours']:7.1f}  published {rates['published']:6.1f}  "
            f"ratio {ratio:4.2f}x  max|diff| {diff:.1e}{target}"
        )


def bench_codecs(clips: list[np.ndarray], rounds: int) -> None:
    print("\nCodecs, utt/s per core (4 s clips): Channel.apply vs bare PyAV encode+decode at the codec rate")
    # G.711 also at 16 kHz: at 8 kHz its encode+decode is so cheap that the 16k -> 8k -> 16k resampling
    # (part of the narrow-band channel, not of the wrapper) dominates the overhead.
    cases = [(n, v, None) for n, v in SAMPLE_SETTINGS if n not in CHANNELS] + [
        ("mulaw", None, FS),
        ("alaw", None, FS),
    ]
    for name, value, rate in cases:
        channel = Channel(name, value, rate)
        at_rate = [
            soxr.resample(c, FS, channel.rate, quality="HQ") if channel.rate != FS else c for c in clips
        ]
        rates = interleaved(
            {
                "ours": per_clip(lambda x, s, ch=channel: ch.apply(x), clips),
                "bare": per_clip(
                    lambda x, s, n=name, v=value, r=channel.rate: bare_roundtrip(x, n, v, r), at_rate
                ),
            },
            rounds,
        )
        overhead = rates["bare"] / rates["ours"] - 1
        verdict = "PASS" if overhead <= 0.2 else "MISS"
        label = f"{channel.label()} @{channel.rate} Hz"
        print(
            f"  {label:26s} ours {rates['ours']:7.1f}  bare {rates['bare']:7.1f}  "
            f"overhead {100 * overhead:+5.1f} %  {verdict} (<= 20 %)"
        )
    print("\nChains and channels, utt/s per core (reported, not targeted)")
    chains = {
        "telephone": [Channel("telephone")],
        "mp3:128000 > aac:64000": [Channel("mp3", 128000), Channel("aac", 64000)],
        "mp3:32000 > aac:32000": [Channel("mp3", 32000), Channel("aac", 32000)],
    }
    rates = interleaved(
        {k: per_clip(lambda x, s, c=c: apply_chain(x, c), clips) for k, c in chains.items()}, rounds
    )
    for k, v in rates.items():
        print(f"  {k:26s} {v:7.1f}")
    print("\nWhole pipelines (Augmenter.apply with a preset), utt/s per core")
    presets = {k: Augmenter.from_config({"preset": k}) for k in ("la", "df", "la_codecs", "df_codecs")}
    rates = interleaved(
        {k: per_clip(lambda x, s, a=a: a.apply(x, (0, 0, s)), clips) for k, a in presets.items()}, rounds
    )
    for k, v in rates.items():
        print(f"  {k:26s} {v:7.1f}")


def bench_recipe(n_utts: int, batch: int, workers: int, rounds: int) -> None:
    import tempfile

    import torch

    from data.demo.__main__ import main as generate_demo
    from engine.partitions import open_partition
    from engine.recipe_schema import load_recipe
    from engine.score_batches import autocast_context
    from engine.trainer import TrainSettings, build_optimizer, make_loader
    from models import build_model
    from models.countermeasure import Countermeasure
    from models.losses import build_loss
    from utils import distributed as du

    recipe = Path(__file__).resolve().parents[1] / "configs" / "sr_la_res2net_f0.yaml"
    settings = {"none": [], "rawboost algo 5": ["augment.preset=la"]}
    cfgs = {k: load_recipe(recipe, [f"train.num_workers={workers}", *v]) for k, v in settings.items()}
    train_settings = TrainSettings.from_config(cfgs["none"], 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "LA"
        generate_demo(["--out", str(root), "--n-train", str(n_utts), "--n-dev", "2", "--n-eval", "2",
                       "--no-progress"])  # fmt: skip
        runs = {}
        for name, cfg in cfgs.items():
            dataset = open_partition(cfg, "train", data_root=root, on_the_fly=True, augment_seed=0)
            loader, sampler = make_loader(dataset, batch, du.DistInfo(), True, 0, workers)
            torch.manual_seed(0)
            cm = Countermeasure(build_model(cfg["model"]), build_loss(cfg["loss"])).train()
            runs[name] = (dataset, loader, sampler, cm, build_optimizer(list(cm.parameters()), cfg["optim"]))

        def epoch(name: str) -> Callable[[int], int]:
            dataset, loader, sampler, cm, optimizer = runs[name]

            def run(r: int) -> int:
                sampler.set_epoch(r)
                dataset.set_epoch(r)
                seen = 0
                for x, y, _, _ in loader:
                    with autocast_context(torch.device("cpu"), train_settings.amp):
                        loss = cm(x.float(), y)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    seen += y.shape[0]
                return seen

            return run

        print(
            f"\nRecipe sr_la_res2net_f0 from audio: training samples/s, {workers} DataLoader workers, "
            f"batch {batch}, {n_utts} utterances (1.5-4 s) per epoch, {rounds} epochs each, "
            f"amp {train_settings.amp}, {torch.get_num_threads()} training thread(s)"
        )
        rates = interleaved({name: epoch(name) for name in runs}, rounds)
    for name, rate in rates.items():
        print(f"  {name:26s} {rate:7.2f} samples/s  ({rate / rates['none']:.2f}x)")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=6, help="4 s clips per round (default 6)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds per comparison (default 4)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: rawboost, codecs, recipe")
    ap.add_argument("--recipe-utts", type=int, default=32, help="train utterances per recipe epoch (32)")
    ap.add_argument("--recipe-batch", type=int, default=8, help="recipe training batch (default 8)")
    ap.add_argument("--recipe-workers", type=int, default=2, help="DataLoader workers (default 2)")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    print(
        f"CPU: {cpu_model()}; {os.cpu_count()} logical cores; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    print(f"numpy {np.__version__}, PyAV {av.__version__}, one process, interleaved rounds: {args.rounds}")
    clips = synthetic_waves(args.clips, [4.0])
    if "rawboost" not in skip:
        bench_rawboost(clips, args.rounds)
    if "codecs" not in skip:
        bench_codecs(clips, args.rounds)
    if "recipe" not in skip:
        bench_recipe(args.recipe_utts, args.recipe_batch, args.recipe_workers, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
