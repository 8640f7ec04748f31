"""Preprocessing speed and size: our front ends and store vs the published pipelines, on this machine.

Three measurements, each against a baseline run in the same process on the same data:

1. SSL extraction with an XLS-R 300M-sized model (random weights, same compute): ours batched in fp32,
   with bf16 autocast, and compiled with the ``--dtype auto`` choice (utils/precision.py: bf16 only on CPUs
   with native bf16), writing float16 rows to the feature store, vs the published approach:
   one utterance at a time in fp32, ``torch.save`` of one fp32 (201, 1024) tensor per utterance.
2. F0 subband: ours (default "sliding": shared hop-block partial DFTs; and the "dft" matrix product
   and "fft" methods) vs a per-file full 865-bin float64 numpy STFT then slicing, as the published
   code did with librosa.
3. Reading random minibatches of 64 SSL features: our memory-mapped store vs ``torch.load`` of one
   file per utterance (both from the page cache after writing, i.e. the steady state of training).

Variants are run in interleaved rounds so that load from other processes hits them alike.
Prints utterances/s, bytes/utterance, ratios and PASS/MISS against the targets.

    python bench/bench_preprocess.py                      # defaults: ~5-8 min on 2 cores
    python bench/bench_preprocess.py --ssl-utts 4 --skip f0,read
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.audio import SAMPLE_RATE, fix_length  # noqa: E402
from data.store import FeatureStore, ShardWriter  # noqa: E402
from models.frontends.f0_subband import F0SubbandFrontEnd, tile_frames  # noqa: E402
from models.frontends.ssl import SSLFrontEnd  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.precision import cpu_facts, resolve_amp  # noqa: E402


def synthetic_waves(n: int, seconds: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """``n`` speech-like test signals (harmonic tone + noise), lengths cycling through ``seconds``."""
    rng = np.random.default_rng(seed)
    waves = []
    for i in range(n):
        length = int(seconds[i % len(seconds)] * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        f0 = rng.uniform(90, 250)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
        waves.append((0.1 * tone + 0.01 * rng.standard_normal(length)).astype(np.float32))
    return waves


def interleaved(variants: dict[str, Callable[[int], int]], rounds: int) -> dict[str, float]:
    """Run ``variants[name](round) -> items done`` in rotating order; return items/s per variant."""
    seconds = dict.fromkeys(variants, 0.0)
    items = dict.fromkeys(variants, 0)
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            items[name] += variants[name](r)
            seconds[name] += time.perf_counter() - start
    return {name: items[name] / seconds[name] for name in names}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -------------------------------------------------------------------------------------------- SSL


def published_ssl_one(model: torch.nn.Module, wave: np.ndarray, out_file: Path, n_samples: int) -> None:
    """The published pipeline for one utterance: fp32, batch of one, one torch.save per utterance."""
    x = fix_length(wave, n_samples)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # Wav2Vec2FeatureExtractor, float32
    with torch.no_grad():
        hidden = model(torch.from_numpy(x)[None]).last_hidden_state[0]
    torch.save(hidden.clone(), out_file)


def bench_ssl(args: argparse.Namespace, work: Path) -> dict[str, float]:
    print(f"\n== SSL extraction: {args.ssl_model}, {args.ssl_utts} utterances of 4 s, batch {args.ssl_batch}")
    auto = resolve_amp("auto", torch.device("cpu"))
    print(f"  --dtype auto -> {auto.reason}")
    start = time.perf_counter()
    fp32 = SSLFrontEnd(args.ssl_model, dtype="fp32", device="cpu", batch_size=args.ssl_batch)
    bf16 = SSLFrontEnd(args.ssl_model, dtype="bf16", device="cpu", batch_size=args.ssl_batch)
    fronts = {"fp32": fp32, "bf16": bf16}
    if not args.no_compile:
        fronts[f"{auto.spelled}c"] = SSLFrontEnd(
            args.ssl_model, dtype=auto.spelled, device="cpu", batch_size=args.ssl_batch, compile=True
        )
    print(f"{len(fronts)} models built in {time.perf_counter() - start:.1f} s, "
          f"{sum(p.numel() for p in fp32.model.parameters()) / 1e6:.1f} M parameters each")

    waves = synthetic_waves(args.ssl_utts, [4.0], seed=1)
    batch = args.ssl_batch
    rounds = -(-len(waves) // batch)
    chunks = [waves[r * batch:(r + 1) * batch] for r in range(rounds)]
    index = [f"utt{i:05d}" for i in range(len(waves))]
    pt_dir = work / "ssl_published"
    pt_dir.mkdir()
    writers = {name: ShardWriter(work / f"ssl_{name}", index, fe.settings(), fe.feature_shape, fe.store_dtype)
               for name, fe in fronts.items()}

    def published(r: int) -> int:
        for j, wave in enumerate(chunks[r]):
            published_ssl_one(fp32.model, wave, pt_dir / f"{index[r * batch + j]}.pt", fp32.n_samples)
        return len(chunks[r])

    def ours(name: str, fe: SSLFrontEnd) -> Callable[[int], int]:
        def run(r: int) -> int:
            rows = np.arange(r * batch, r * batch + len(chunks[r]))
            writers[name].commit(rows, fe.extract(chunks[r]))
            return len(rows)
        return run

    for name, fe in fronts.items():  # warm-up: oneDNN kernels, allocator; compiling
        start = time.perf_counter()
        fe.extract(waves[:1])
        if name.endswith("c"):
            failed = fe._compiled.failed
            took = time.perf_counter() - start
            print(f"  compile failed: {failed}" if failed else f"  compiled in {took:.0f} s")
    base = "published fp32 1-by-1 + torch.save"
    emulated = "" if resolve_amp("auto", torch.device("cpu")).value == "bf16" else " (emulated)"
    labels = {"fp32": "ours fp32 batched + store", "bf16": f"ours bf16{emulated} batched + store",
              f"{auto.spelled}c": f"ours {auto.spelled} --compile batched + store"}
    rates = interleaved({base: published, **{labels[n]: ours(n, fe) for n, fe in fronts.items()}}, rounds)
    sizes = {base: dir_bytes(pt_dir) / len(waves),
             **{labels[n]: dir_bytes(work / f"ssl_{n}") / len(waves) for n in fronts}}
    auto_rate = rates[labels[auto.spelled]]
    for name in rates:
        mark = "  <- auto" if name == labels[auto.spelled] else ""
        print(f"  {name:42s} {rates[name]:8.3f} utt/s {sizes[name]:12,.0f} bytes/utt "
              f"{rates[name] / rates[base]:6.2f}x published {rates[name] / auto_rate:6.2f}x auto{mark}")
    out = {f"ssl_speed_{n}": rates[labels[n]] / rates[base] for n in fronts}
    out["ssl_speed_auto"] = auto_rate / rates[base]
    out["ssl_bytes"] = sizes[labels["bf16"]] / sizes[base]
    out["ssl_speed_best"] = max(1.0, *(out[f"ssl_speed_{n}"] for n in fronts))  # 1.0: the published way
    return out


# --------------------------------------------------------------------------------------------- F0


def published_f0_one(wave: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Per-file full STFT (all 865 bins, all frames) in float64, then slicing: (1, 45, 600)."""
    x = wave[:80000].astype(np.float64)
    y = np.append(x[:1], x[1:] - 0.97 * x[:-1])
    padded = np.pad(y, 864)
    frames = np.lib.stride_tricks.sliding_window_view(padded, 1728)[::130]
    spec = np.log(np.abs(np.fft.rfft(frames * window, axis=1)) + np.exp(-80.0)).T  # (865, frames)
    return tile_frames(spec[:45], 600, "mirror")[None]


def bench_f0(args: argparse.Namespace, work: Path) -> dict[str, float]:
    print(f"\n== F0 subband: {args.f0_utts} utterances of 1.5-6 s (2019 LA-like lengths), 5 rounds")
    from scipy.signal.windows import blackman

    waves = synthetic_waves(args.f0_utts, [1.5, 2.5, 3.2, 4.0, 6.0], seed=2)
    window = blackman(1728)
    fronts = {m: F0SubbandFrontEnd(method=m) for m in ("sliding", "dft", "fft")}
    fft = fronts["fft"]
    diff = max(np.abs(fe.extract([w])[0] - published_f0_one(w, window)).max()
               for fe in fronts.values() for w in waves[:5])
    print(f"  max |ours - full STFT| on 5 utterances, all three methods: {diff:.2e}")
    base = "published per-file full STFT"
    labels = {"sliding": "ours sliding (default)", "dft": "ours dft, 45-bin matrix product",
              "fft": "ours fft, 45-bin log"}

    def ours(fe: F0SubbandFrontEnd) -> Callable[[int], int]:
        return lambda r: len(fe.extract(waves))

    rates = interleaved({base: lambda r: len([published_f0_one(w, window) for w in waves]),
                         **{labels[m]: ours(fe) for m, fe in fronts.items()}}, rounds=5)
    # The published code recomputed F0 features on every access, every epoch; ours reads the store.
    index = [f"utt{i:05d}" for i in range(len(waves))]
    writer = ShardWriter(work / "f0_store", index, fft.settings(), fft.feature_shape, fft.store_dtype)
    writer.commit(np.arange(len(waves)), fft.extract(waves))
    store = FeatureStore(work / "f0_store")
    rng = np.random.default_rng(4)
    rates.update(interleaved({"ours store.get_batch (training epochs)": lambda r: len(
        store.get_batch(rng.choice(len(waves), min(64, len(waves)), replace=False)))}, rounds=20))
    for name, rate in rates.items():
        print(f"  {name:38s} {rate:8.1f} utt/s")
    return {"f0_epoch": rates["ours store.get_batch (training epochs)"] / rates[base],
            **{f"f0_speed_{m}": rates[labels[m]] / rates[base] for m in fronts}}


# ------------------------------------------------------------------------------------------- read


def bench_read(args: argparse.Namespace, work: Path) -> dict[str, float]:
    shape = (1, 1024, 201)
    n = args.read_rows
    print(f"\n== Reading random minibatches of {args.batch_size} from {n} SSL rows {shape}")
    index = [f"utt{i:05d}" for i in range(n)]
    writer = ShardWriter(work / "read_store", index, {"name": "bench"}, shape, np.float16)
    pt_dir = work / "read_published"
    pt_dir.mkdir()
    rng = np.random.default_rng(3)
    for lo in range(0, n, 64):
        rows = np.arange(lo, min(lo + 64, n))
        feats = rng.standard_normal((len(rows), *shape)).astype(np.float16)
        writer.commit(rows, feats)
        for row, feat in zip(rows, feats, strict=True):
            torch.save(torch.from_numpy(feat[0].T.astype(np.float32)), pt_dir / f"{index[row]}.pt")
    store = FeatureStore(work / "read_store")
    batches = [rng.choice(n, args.batch_size, replace=False) for _ in range(args.read_batches)]

    def published(r: int) -> int:
        tensors = [torch.load(pt_dir / f"{index[i]}.pt", weights_only=True) for i in batches[r]]
        x = torch.stack(tensors).transpose(1, 2).unsqueeze(1)  # (B, 1, 1024, 201) float32
        return x.shape[0]

    def ours(r: int) -> int:
        # As data.dataset.StoreDataset does: float16 batches, cast to float32 on the compute device.
        x = torch.from_numpy(store.get_batch(batches[r]))
        return x.shape[0]

    rates = interleaved({"published torch.load per utterance": published, "ours store.get_batch": ours},
                        rounds=args.read_batches)
    for name, rate in rates.items():
        print(f"  {name:38s} {rate:8.0f} utt/s")
    return {"read_speed": rates["ours store.get_batch"] / rates["published torch.load per utterance"]}


# ------------------------------------------------------------------------------------------- main

TARGETS = [  # key, description, target, higher is better
    ("ssl_speed_auto", "SSL utt/s, ours --dtype auto vs published", 2.5, True),
    ("ssl_speed_bf16", "SSL utt/s, ours bf16 batched vs published (info)", None, True),
    ("ssl_speed_bf16c", "SSL utt/s, ours bf16 --compile batched vs published (info)", None, True),
    ("ssl_speed_fp32", "SSL utt/s, ours fp32 batched vs published (info)", None, True),
    ("ssl_speed_fp32c", "SSL utt/s, ours fp32 --compile batched vs published (info)", None, True),
    ("ssl_speed_best", "SSL utt/s, ours with the best flags vs published (info)", None, True),
    ("ssl_bytes", "SSL bytes/utt, ours vs published", 0.5, False),
    ("f0_speed_sliding", "F0 utt/s, ours (sliding, default) vs per-file full STFT", 2.0, True),
    ("f0_speed_dft", "F0 utt/s, ours dft vs per-file full STFT (info)", None, True),
    ("f0_speed_fft", "F0 utt/s, ours fft vs per-file full STFT (info)", None, True),
    ("f0_epoch", "F0 epoch: store read vs recompute per access (info)", None, True),
    ("read_speed", "read utt/s, store vs torch.load per file", 5.0, True),
]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the docstring's layout and show defaults."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--ssl-model", default="random:xlsr-300m", help="SSL model id")
    parser.add_argument("--ssl-utts", type=int, default=16, help="utterances for SSL")
    parser.add_argument("--ssl-batch", type=int, default=4, help="our SSL batch size (the CPU default)")
    parser.add_argument("--f0-utts", type=int, default=64, help="utterances for F0")
    parser.add_argument("--read-rows", type=int, default=512, help="rows in the read test")
    parser.add_argument("--read-batches", type=int, default=20, help="minibatches read")
    parser.add_argument("--batch-size", type=int, default=64, help="read minibatch size")
    parser.add_argument("--no-compile", action="store_true", help="skip the SSL --compile variant")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (None: torch)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: ssl,f0,read")
    parser.add_argument("--workdir", default=None, help="parent of the scratch dir (None: system temp)")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as preprocess.py does (utils/allocator.py); the baselines share this process
    print(f"torch {torch.__version__}; {cpu_facts().describe()}")

    work = Path(tempfile.mkdtemp(prefix="bench_preprocess_", dir=args.workdir))
    results: dict[str, float] = {}
    try:
        if "ssl" not in skip:
            results.update(bench_ssl(args, work))
        if "f0" not in skip:
            results.update(bench_f0(args, work))
        if "read" not in skip:
            results.update(bench_read(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n== Summary (ratios measured in this run)")
    print(f"  {'measure':52s} {'ratio':>8s} {'target':>8s}  result")
    for key, text, target, higher in TARGETS:
        if key not in results:
            continue
        ratio = results[key]
        if target is None:
            verdict, shown = "", ""
        else:
            ok = ratio >= target if higher else ratio <= target
            verdict, shown = ("PASS" if ok else "MISS"), f"{'>=' if higher else '<='}{target:g}"
        print(f"  {text:52s} {ratio:7.2f}x {shown:>8s}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
