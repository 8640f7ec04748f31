"""Score a partition or your own recordings with a trained countermeasure.

Scores: higher = more bona fide (logit difference bona fide − spoof). The decision threshold is the
dev-EER threshold saved in the checkpoint (override with --threshold). With --llr (a checkpoint
calibrated by `python -m engine.calibrate_checkpoint` or train.calibrate: true) scores become calibrated
LLRs and decisions use the Bayes threshold −ln β = −0.641854 (ASVspoof 5 costs).

Examples:
    # a partition from a feature store (preprocess.py) -> "utt_id attack key score" lines
    python generate_score.py --checkpoint runs/f0/best.pt --features feats --partition eval --output eval.txt
    # the same from raw audio, features computed on the fly; or your recordings listed in a manifest
    python generate_score.py --checkpoint runs/f0/best.pt --data-root LA --partition eval --output eval.txt
    python generate_score.py --checkpoint runs/f0/best.pt --manifest eval=lists/eval.csv --output eval.txt
    # continuing a killed run from eval.txt.partial; the same split over 2 processes (GPUs, or CPU cores)
    python generate_score.py --checkpoint runs/f0/best.pt --features feats --output eval.txt --resume
    torchrun --nproc_per_node 2 generate_score.py --checkpoint runs/f0/best.pt --features feats \
        --output eval.txt
    # In-the-Wild, each utterance whole (back ends taking any length; the Nes2Net-X recipes' own setting)
    python generate_score.py --checkpoint avg.pt --data-root ITW --dataset itw --crop full --output itw.txt
    # your own recordings: any length, sample rate, channel count; files or folders
    python generate_score.py --checkpoint runs/f0/best.pt --audio my.wav clips/ --output results.csv
    # calibrated LLRs (and Bayes-threshold decisions for --audio) from a calibrated checkpoint
    python -m engine.calibrate_checkpoint --checkpoint runs/f0/best.pt
    python generate_score.py --checkpoint runs/f0/best.pt --llr --audio my.wav --output results.csv
    # the released XLS-R-LCNN (converted with python -m models.import_released), local XLS-R copy
    python generate_score.py --checkpoint xlsr_lcnn.safetensors --ssl-model /models/xls-r-300m --audio my.wav
    # a model package (python -m engine.package) as a folder or a Hugging Face hub id; many recordings,
    # continuing an interrupted run; with ONNX Runtime (python -m engine.export PACKAGE PACKAGE/model.onnx)
    python generate_score.py --checkpoint packages/f0 --audio recordings/ --output results.csv --resume
    python generate_score.py --checkpoint org/name --runtime onnx --audio my.wav
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.corpora import corpus_names
from data.corpora.manifest import add_manifest_argument, parse_manifest_flags
from utils.errors import UserError, run_cli

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff", ".au", ".w64", ".caf"}


def _add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """How scoring runs: model override, batch, precision, compile, workers, device, progress."""
    parser.add_argument(
        "--ssl-model",
        default=None,
        help="SSL model (local directory or hub id) replacing the one recorded in the checkpoint",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="utterances/windows per batch (default: 64 on CUDA, 1 on CPU, the fastest measured there)",
    )
    parser.add_argument(
        "--amp",
        choices=("auto", "none", "bf16", "fp16"),
        default="auto",
        help="autocast for the model (default auto: bf16 on CUDA and on CPUs with native bf16 "
        "(AVX512-BF16/AMX: ~1.5-2x faster, scores within ~1e-2), exact float32 elsewhere; the choice is "
        "printed); the last layer always runs in float32",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model first (inductor, frozen weights; same float32 math; ~10 s to "
        "~1 min to compile, then ~1.6x faster SR-LA-Res2Net scoring on CPU; needs a C++ compiler, "
        "falls back to plain PyTorch with a warning)",
    )
    parser.add_argument(
        "--num-workers", type=int, default=0, help="DataLoader workers for partitions (default 0)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (default), or onnx: score --audio with ONNX Runtime on the CPU, float32 (needs "
        "onnxruntime); --checkpoint is then an .onnx file from python -m engine.export, or a package "
        "folder / hub id holding model.onnx",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # seconds to pause after each batch written to OUTPUT.partial: lets tests kill a run midway
    parser.add_argument("--throttle", type=float, default=0.0, help=argparse.SUPPRESS)


def _add_audio_arguments(parser: argparse.ArgumentParser) -> None:
    """Resuming, and --audio only: per-window scores, plots, the shortest recording scored."""
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: partitions from OUTPUT.partial (kept while scoring; the same "
        "settings are required), --audio from the recordings already in --output",
    )
    parser.add_argument(
        "--windows",
        action="store_true",
        help="--audio: add each window's start_s, end_s and score (and llr) to the .json --output",
    )
    parser.add_argument(
        "--plot",
        metavar="DIR",
        help="--audio: draw each recording's window scores over time with the threshold, DIR/<file>.png",
    )
    parser.add_argument(
        "--min-duration",
        type=float,
        default=None,
        help="--audio: recordings shorter than this many seconds are reported and skipped (default 0.1: "
        "engine.score_windows.MIN_DURATION_S)",
    )


def _add_partition_arguments(parser: argparse.ArgumentParser) -> None:
    """Which partition to score, where from, how to crop it and how to write its score file."""
    add_manifest_argument(parser)
    parser.add_argument(
        "--partition", default="eval", help="partition for --features/--data-root/--manifest (default eval)"
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=corpus_names(),
        help="corpus of --data-root (data/corpora/; default: the recipe's)",
    )
    parser.add_argument(
        "--output",
        help="partition mode: score file (utt_id attack key score); audio mode: "
        "results as .csv or .json (otherwise printed only)",
    )
    parser.add_argument(
        "--format",
        choices=("id-attack-key-score", "asvspoof5"),
        default="id-attack-key-score",
        help="partition mode: score file layout; asvspoof5 writes the ASVspoof 5 evaluation package's "
        "tab-separated 'filename<TAB>cm-score' with a header line (default: %(default)s)",
    )
    parser.add_argument(
        "--crop",
        choices=("windows", "first", "full"),
        default=None,
        help="--audio: 'windows' (default) averages 50%%-overlapping windows over the whole "
        "recording; 'first' scores the first window only. Partitions of raw-wave models (--data-root): "
        "'first' (the first frontend.n_samples samples, tiled) or 'full' (each utterance whole, one per "
        "batch; back ends that take any length: Nes2Net-X, XLSR-Mamba, XLS-R-AASIST, AASIST); default: the "
        "checkpoint recipe's data.score_crop_by_dataset / data.score_crop",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate_score.py",
        description="Score a partition (feature store or raw audio) or arbitrary recordings with a trained "
        "model. Higher score = more bona fide. --audio reads any length, sample rate and channel count "
        "(resampled to 16 kHz, channels averaged), cuts each recording into windows of the model's input "
        "length (64,600 samples = 4.04 s for XLS-R-LCNN, 80,000 = 5 s for F0) every half window "
        "(50%% overlap; the last window ends at the end of the recording; shorter recordings are tiled by "
        "the front end) and averages the window scores; --crop first scores only the first window, as in "
        "training. Each file gets a bona fide / spoof decision at the dev-EER threshold saved in the "
        "checkpoint, or with --llr at the Bayes threshold -ln 1.9 on its calibrated LLR.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("Examples:", 1)[1],
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="best.pt / last.pt from main_train.py, a .safetensors from models.import_released, a model "
        "package folder (python -m engine.package) or its Hugging Face hub id org/name; with --runtime "
        "onnx an .onnx file from python -m engine.export",
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--features", help="feature store root from preprocess.py (or one store directory)")
    src.add_argument(
        "--data-root", help="dataset root: score raw audio of --partition with on-the-fly features"
    )
    src.add_argument(
        "--audio",
        nargs="+",
        metavar="FILE_OR_DIR",
        help="audio files and/or folders (searched recursively) to score",
    )
    _add_partition_arguments(parser)
    _add_audio_arguments(parser)
    parser.add_argument(
        "--llr",
        action="store_true",
        help="output calibrated log-likelihood ratios (bona fide vs spoof, nats) with the calibration "
        "stored in the checkpoint (python -m engine.calibrate_checkpoint); --audio decisions then compare "
        "the LLR with the Bayes threshold -ln 1.9 = -0.641854 (ASVspoof 5 costs)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold (default: the dev-EER threshold saved in the checkpoint; with --llr, "
        "the Bayes threshold on LLRs)",
    )
    _add_compute_arguments(parser)
    return parser


def find_audio(items: Sequence[str]) -> list[Path]:
    """Files given plus audio files found (recursively, sorted) in folders given; `UserError` if none."""
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise UserError(f"{path}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"{path}: audio file or folder not found")
    return files


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    _check_sources(args)
    if args.audio is None and not args.output:
        raise UserError("--output is required when scoring a partition (--features, --data-root or "
                        "--manifest)")
    _check_audio_arguments(args)

    from engine.scorer import require_calibration
    from utils import distributed as du

    if args.audio is None:
        du.init_distributed(args.device)  # torchrun: each process scores its share of the batches
    try:
        scorer = _load_scorer(args)
        if args.llr:
            require_calibration(scorer)  # before any scoring: no LLRs without a calibration
        if args.audio is not None:
            return score_audio(args, scorer, *_decision_threshold(args, scorer.threshold))
        return score_partition(args, scorer)
    finally:
        du.cleanup()


def score_partition(args: argparse.Namespace, scorer: Any) -> int:
    """--features / --data-root / --manifest: score the partition into --output (rank 0 writes it), print a
    summary."""
    from engine.score_stream import score_partition_file

    scores, resumed = score_partition_file(
        scorer, args.partition, args.output, fmt=args.format, llr=args.llr, resume=args.resume,
        features=args.features, data_root=args.data_root, dataset=args.dataset,
        manifests=parse_manifest_flags(args.manifest), crop=args.crop, num_workers=args.num_workers,
        progress=not args.no_progress, throttle=args.throttle,
    )
    if scores is None:  # another torchrun process: rank 0 wrote the file
        return 0
    n_bona = int((scores.labels == 0).sum())
    what = "calibrated LLRs" if args.llr else "scores"
    summary = f"{len(scores.utt_ids)} utterances scored"
    if resumed:
        summary += f" ({resumed} resumed from {args.output}.partial)"
    summary += f" -> {args.output} ({what}"
    if 0 < n_bona < len(scores.labels):
        eer, _ = scores.eer(what=args.partition)
        summary += f", EER {100 * eer:.3f}%"
    print(summary + ")")
    return 0


def _check_sources(args: argparse.Namespace) -> None:
    """One source of trials: --features (with --manifest: the stores of those manifests), --data-root,
    --audio or --manifest alone (its audio, features on the fly)."""
    if args.manifest is None:
        if args.features is None and args.data_root is None and args.audio is None:
            raise UserError("give what to score: --features, --data-root, --manifest PART=FILE or --audio")
        return
    others = (("--audio", args.audio), ("--data-root", args.data_root), ("--dataset", args.dataset))
    for flag, given in others:
        if given is not None:
            raise UserError(f"{flag}: not with --manifest (the manifest names the audio files)")


def _load_scorer(args: argparse.Namespace) -> Any:
    """The PyTorch `engine.scorer.Scorer`, or with --runtime onnx an `engine.onnx_scoring.OnnxScorer`."""
    if args.runtime == "torch":
        from engine.scorer import load_scorer

        return load_scorer(args.checkpoint, device=args.device, amp=args.amp, batch_size=args.batch_size,
                           compile=args.compile, ssl_model=args.ssl_model)
    if args.audio is None:
        raise UserError("--runtime onnx scores --audio recordings only")
    for flag, given in (("--compile", args.compile), ("--ssl-model", args.ssl_model is not None),
                        ("--amp", args.amp not in ("auto", "none"))):
        if given:
            raise UserError(f"{flag} applies to --runtime torch only (the ONNX model runs in float32)")
    from engine.onnx_scoring import load_onnx_scorer

    return load_onnx_scorer(args.checkpoint, batch_size=args.batch_size or 1)


def _check_audio_arguments(args: argparse.Namespace) -> None:
    """Options that only --audio takes, and their output, before anything is loaded."""
    audio_only = [flag for flag, on in (("--windows", args.windows), ("--plot", args.plot is not None)) if on]
    if args.audio is None:
        if audio_only:
            raise UserError(f"{audio_only[0]} applies to --audio only")
        if args.crop == "windows":
            raise UserError("--crop windows applies to --audio only; partitions take first or full")
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--audio runs in one process; torchrun splits partitions (--features, --data-root)")
    if args.crop == "full":
        raise UserError("--crop full scores partitions (--data-root); --audio takes windows or first")
    suffix = Path(args.output).suffix.lower() if args.output else ""
    if args.output and suffix not in (".csv", ".json"):
        raise UserError(f"{args.output}: --output for --audio must end in .csv or .json")
    if args.resume and not args.output:
        raise UserError("--resume continues an --output results file: give --output")
    if args.windows and suffix != ".json":
        raise UserError("--windows: per-window scores are written to a .json --output")
    if args.min_duration is not None and args.min_duration < 0:
        raise UserError(f"--min-duration {args.min_duration}: must not be negative")


def score_audio(args: argparse.Namespace, scorer: Any, threshold: float | None, threshold_kind: str) -> int:
    """--audio: score, print and stream each recording's result to --output; 1 if any was skipped."""
    from engine.scorer import iter_recording_rows, result_columns
    from utils.resultfiles import ResultsWriter

    files = find_audio(args.audio)
    writer = None
    if args.output:
        writer = ResultsWriter(args.output, result_columns(args.llr, args.windows), resume=args.resume)
        files = _not_done(files, writer.done)
    shortest = {} if args.min_duration is None else {"min_duration_s": args.min_duration}
    rows = iter_recording_rows(scorer, files, crop=args.crop or "windows", threshold=threshold, llr=args.llr,
                               window_scores=args.windows or args.plot is not None,
                               progress=not args.no_progress, **shortest)  # model set up and checked
    if writer is not None and writer.rows:
        print(f"note: resuming {args.output}: {len(writer.rows)} recordings already in it, "
              f"{len(files)} to score", file=sys.stderr)
    if threshold is None:
        print("note: no threshold in the checkpoint and no --threshold: scores only", file=sys.stderr)
    else:
        print(f"note: decisions at {threshold_kind} {threshold:.6g}", file=sys.stderr)
    failed = sum(row.get("status") == "error" for row in writer.rows) if writer else 0
    scored = len(writer.rows) - failed if writer else 0
    with writer if writer is not None else contextlib.nullcontext():
        for row in rows:
            if row["status"] != "ok":
                failed += 1
                print(f"skipped: {row['error']}", file=sys.stderr)
            else:
                scored += 1
                value = f"{row['score']:.6f}" + (f"\tLLR {row['llr']:.6f}" if args.llr else "")
                print(f"{row['file']}\t{value}\t{row['decision']}", flush=True)
                if args.plot is not None:
                    _plot_recording(Path(args.plot), row, threshold, args.llr)
            if writer is not None:
                writer.write({key: row[key] for key in writer.columns})
    where = f" -> {args.output}" if args.output else ""
    print(f"{scored} recordings scored, {failed} skipped{where}", file=sys.stderr)
    return 1 if failed else 0


def _not_done(files: list[Path], done: set[str]) -> list[Path]:
    """``files`` whose path (as given, or resolved) is not among ``done``."""
    resolved = {str(Path(name).resolve()) for name in done}
    return [f for f in files if str(f) not in done and str(f.resolve()) not in resolved]


def _plot_recording(folder: Path, row: dict[str, Any], threshold: float | None, llr: bool) -> None:
    """DIR/<the file's path, made a file name>.png: its window scores over time."""
    from utils.plots import plot_window_scores

    key = "llr" if llr else "score"
    windows = row["window_scores"]
    name = re.sub(r"[^\w.-]+", "_", str(Path(row["file"]))).strip("_") + ".png"
    plot_window_scores(
        folder / name, [w["start_s"] for w in windows], [w["end_s"] for w in windows],
        [w[key] for w in windows], threshold, title=f"{row['file']}: {row['decision']} "
        f"({key} {row[key]:.4g}, mean of {len(windows)} windows)",
        what="calibrated LLR" if llr else "score",
    )


def _decision_threshold(args: argparse.Namespace, saved: float | None) -> tuple[float | None, str]:
    """The decision threshold and how to name it in the output."""
    if args.threshold is not None:
        return args.threshold, "the given --threshold" + (" on calibrated LLRs" if args.llr else "")
    if args.llr:
        from utils.calibration import bayes_threshold

        return bayes_threshold(), "the Bayes threshold -ln(beta) on calibrated LLRs (ASVspoof 5 costs)"
    return saved, "the dev-EER threshold saved in the checkpoint"


if __name__ == "__main__":
    sys.exit(run_cli(main))
