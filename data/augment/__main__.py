"""Hear and inspect an augmentation before training with it.

    python -m data.augment IN.wav OUT.wav --rawboost 5 --seed 3
    python -m data.augment IN.flac OUT.wav --codec mp3:16000 --codec aac:32000     # a chain, in order
    python -m data.augment IN.wav OUT.wav --rawboost 3 --codec opus:8000 --epoch 2 --index 17

The input is read as 16 kHz mono (data.audio.load_audio); RawBoost runs first, then the codecs in the
order given. Prints the SNR of the change (10·log10(Σx²/Σ(y−x)²)) and how many samples changed. OUT is
written as 32-bit float (so RawBoost SSI's peaks above 1 survive) unless its format cannot hold floats.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from data.audio import SAMPLE_RATE, load_audio
from data.augment.codecs import NAMES
from data.augment.pipeline import Augmenter, Stage, utterance_seed
from data.augment.rawboost import ALGO_NAMES, ALGOS
from utils.errors import UserError, run_cli
from utils.io import atomic_path

#: |y − x| above this counts as a changed sample (below 16-bit resolution: 1/65536).
CHANGED = 1.0 / 65536


def parse_codec(text: str) -> dict[str, object]:
    """``NAME[:BITRATE]`` -> a codec entry; vorbis takes a quality (0-10) after the colon."""
    name, _, value = text.partition(":")
    entry: dict[str, object] = {"name": name}
    if value:
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"--codec {text}: expected NAME[:BITRATE] with a number after ':'") from None
        what = "quality" if name.strip().lower() in ("vorbis", "ogg") else "bitrate"
        entry[what] = int(number) if what == "bitrate" and number.is_integer() else number
    return entry


def build_parser() -> argparse.ArgumentParser:
    algos = ", ".join(f"{a} {n}" for a, n in ALGO_NAMES.items())
    ap = argparse.ArgumentParser(
        prog="python -m data.augment",
        description="Apply RawBoost and/or codec round trips to one audio file, print what changed.",
        epilog=f"RawBoost algos: {algos}. Codecs: {', '.join(NAMES)} (GSM unsupported). "
        "Bit rates in bit/s (mp3:128000); vorbis takes a quality 0-10 (vorbis:3).",
    )
    ap.add_argument("input", help="audio file (any soundfile-readable format; resampled to 16 kHz mono)")
    ap.add_argument("output", help="where to write the augmented audio (format from the extension)")
    ap.add_argument("--rawboost", type=int, metavar="ALGO", help="RawBoost algo 0-8 (published defaults)")
    ap.add_argument(
        "--codec",
        action="append",
        default=[],
        metavar="NAME[:BITRATE]",
        help="codec round trip; repeat for a chain applied in order "
        "(e.g. --codec mp3:128000 --codec aac:64000)",
    )
    ap.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    ap.add_argument("--epoch", type=int, default=0, help="epoch, for the per-utterance seed (default 0)")
    ap.add_argument(
        "--index", type=int, default=0, help="utterance index, for the per-utterance seed (default 0)"
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rawboost is None and not args.codec:
        raise UserError("nothing to do: give --rawboost ALGO and/or --codec NAME[:BITRATE]")
    if args.rawboost is not None and args.rawboost not in ALGOS:
        known = ", ".join(f"{a} {n}" for a, n in ALGO_NAMES.items())
        raise UserError(f"--rawboost: unknown RawBoost algo {args.rawboost} (known: {known})")
    stages = []
    for text in args.codec:
        key = f"--codec {text}"
        try:
            stages.append(Stage(parse_codec(text), key))
        except UserError as exc:  # "--codec mp3:1.bitrate: ..." -> "--codec mp3:1 bitrate: ..."
            raise UserError(str(exc).replace(f"{key}.", f"{key} ", 1)) from None
    # The pipeline itself, so that (seed, epoch, index) give what training with this recipe would.
    augmenter = Augmenter(algo=args.rawboost or 0, codecs=[(1.0, stages)] if stages else [])
    out = Path(args.output)
    if out.is_dir():
        raise UserError(f"{out}: is a directory, expected an output file")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output folder does not exist")
    fmt = out.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise UserError(f"{out}: unknown output format {out.suffix!r} (use .wav or .flac)")
    x = load_audio(args.input)
    seed = utterance_seed(args.seed, args.epoch, args.index)
    y = augmenter.apply(x, seed)

    diff = y.astype(np.float64) - x
    noise = float(np.sum(diff**2))
    snr = 10 * np.log10(float(np.sum(x.astype(np.float64) ** 2)) / noise) if noise > 0 else float("inf")
    changed = int(np.count_nonzero(np.abs(diff) > CHANGED))
    subtype = "FLOAT" if sf.check_format(fmt, "FLOAT") else None
    with atomic_path(out) as tmp:
        sf.write(tmp, y, SAMPLE_RATE, format=fmt, subtype=subtype)
    steps = ([f"RawBoost algo {args.rawboost} ({ALGO_NAMES[args.rawboost]})"] if args.rawboost else []) + [
        st.variants[0].label() for st in stages
    ]
    where = f"seed {args.seed}, epoch {args.epoch}, index {args.index}"
    print(f"{args.input} -> {out}: {' > '.join(steps) or 'nothing'} ({where})")
    print(
        f"samples {x.shape[0]} ({x.shape[0] / SAMPLE_RATE:.2f} s), SNR {snr:.2f} dB, changed {changed} "
        f"({100 * changed / x.shape[0]:.2f} %), peak in {np.abs(x).max():.4f} out {np.abs(y).max():.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
