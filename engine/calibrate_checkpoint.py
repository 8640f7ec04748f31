"""Calibration stored in a checkpoint: fit the affine score-to-LLR map (docs/evaluation.md) on the dev scores
of a trained model and write it into the checkpoint, so that scoring can output calibrated LLRs and decide
at the Bayes threshold −ln β.

    python -m engine.calibrate_checkpoint --checkpoint runs/f0/best.pt       # fits on runs/f0/scores_dev.txt
    python -m engine.calibrate_checkpoint --checkpoint xlsr_lcnn.safetensors --dev-scores dev.txt

The trainer does the same at the end of a run when the recipe sets ``train.calibrate: true``. The map is
kept under ``calibration`` (`engine.scoring_model.CALIBRATION_KEY`): ``Calibration.as_dict()`` plus the
development score file it was fitted on; .safetensors files keep it in their JSON metadata. The file is
rewritten atomically; nothing else in it changes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.evaluation import describe_calibration, fit_file_calibration
from engine.scoring_model import CALIBRATION_KEY, stored_calibration
from models.import_released import load_model_weights, save_model_weights
from utils.calibration import Calibration
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError, run_cli

#: The development scores main_train.py writes beside best.pt (the dev scores of that epoch).
DEV_SCORES_NAME = "scores_dev.txt"


@dataclass
class CheckpointCalibration:
    """What `calibrate_checkpoint` did: the calibration, the dev score file, warnings for the user."""

    calibration: Calibration
    dev_scores: Path
    warnings: list[str]

    def describe(self) -> str:
        """One line for the user: the map and what it was fitted on."""
        return describe_calibration(self.calibration, str(self.dev_scores))


def read_calibration(checkpoint: str | os.PathLike) -> Calibration | None:
    """The calibration stored in ``checkpoint`` (.pt or .safetensors), None if it has none."""
    path = Path(checkpoint)
    if path.suffix == ".safetensors":
        return stored_calibration(path, load_model_weights(path)[1])
    return stored_calibration(path, load_checkpoint(path))


def store_calibration(checkpoint: str | os.PathLike, calibration: Calibration, source: str) -> None:
    """Write ``calibration`` (fitted on ``source``) into ``checkpoint``, atomically (replacing any)."""
    path = Path(checkpoint)
    entry = {**calibration.as_dict(), "dev_scores": source}
    if path.suffix == ".safetensors":
        state, meta = load_model_weights(path)
        save_model_weights(path, state, {**meta, CALIBRATION_KEY: entry})
        return
    state = load_checkpoint(path)
    state[CALIBRATION_KEY] = entry
    save_checkpoint(state, path)


def default_dev_scores(checkpoint: str | os.PathLike) -> Path:
    """``scores_dev.txt`` beside the checkpoint (what main_train.py writes for best.pt)."""
    return Path(checkpoint).with_name(DEV_SCORES_NAME)


def calibrate_checkpoint(
    checkpoint: str | os.PathLike,
    dev_scores: str | os.PathLike | None = None,
    protocol: str | os.PathLike | None = None,
) -> CheckpointCalibration:
    """Fit the calibration on ``dev_scores`` (default: `default_dev_scores`; keys from the file or
    ``protocol``) and store it in ``checkpoint``. The checkpoint is read before fitting, so a wrong path
    fails before any work; a dev file without both classes raises `UserError` and changes nothing."""
    path = Path(checkpoint)
    read_calibration(path)  # a missing or foreign checkpoint fails here, before fitting
    dev = Path(dev_scores) if dev_scores is not None else default_dev_scores(path)
    if not dev.is_file():
        raise UserError(f"{dev}: development score file not found (the dev scores of {path})")
    calibration, warned = fit_file_calibration(dev, protocol)
    store_calibration(path, calibration, str(dev))
    return CheckpointCalibration(calibration, dev, warned)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.calibrate_checkpoint",
        description="Fit an affine score-to-LLR calibration on development scores (prior-weighted logistic "
        "regression at the ASVspoof 5 prior 0.655, docs/evaluation.md) and store it in the checkpoint, so "
        "that generate_score.py --llr writes calibrated LLRs and decides at the Bayes threshold -ln 1.9.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m engine.calibrate_checkpoint --checkpoint runs/f0/best.pt\n"
        "  python -m engine.calibrate_checkpoint --checkpoint xlsr_lcnn.safetensors --dev-scores dev.txt "
        "--protocol LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="best.pt from main_train.py, or a .safetensors weights file"
    )
    parser.add_argument(
        "--dev-scores",
        help=f"development score file of this model (default: {DEV_SCORES_NAME} beside the checkpoint)",
    )
    parser.add_argument("--protocol", help="CM protocol of --dev-scores, if that file has no keys")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    done = calibrate_checkpoint(args.checkpoint, args.dev_scores, args.protocol)
    for message in done.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(f"{args.checkpoint}: calibration stored: LLR = {done.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
