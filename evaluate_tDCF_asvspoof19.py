"""Evaluate a CM score file with the ASVspoof 2019 metrics: EER, legacy 2019 and revised 2021 min t-DCF.

Pooled and per attack, bit-identical to the official evaluation code (SPEC §6). Scores: higher =
more bona fide. Keys and attacks come from the score file or, with --protocol, from a CM protocol.
The t-DCF needs the organisers' ASV scores of the same partition (--asv-scores); without them
only the EER is reported.

Example (from the repository root):
    .venv/bin/python evaluate_tDCF_asvspoof19.py scores.txt \\
        --asv-scores LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt \\
        --json result.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.protocols import PROTOCOL_FORMATS, read_protocol
from utils.errors import UserError, run_cli
from utils.io import atomic_write_text
from utils.metrics import CostModel, MetricError, SortedTrials, compute_eer, evaluate_cm
from utils.scorefiles import (
    BONAFIDE,
    LEGACY_ATTACK_IDS,
    SCORE_FORMATS,
    SCORE_LAYOUTS,
    read_asv_scores,
    read_scores,
    rename_legacy_attacks,
)

NO_ASV_NOTE = (
    "note: no --asv-scores given, so EER only: the t-DCF needs the ASV scores of the same partition "
    "(2019 LA: ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt)"
)


def build_parser() -> argparse.ArgumentParser:
    layouts = "; ".join(f"{name}: '{cols}'" for name, cols in SCORE_LAYOUTS.items())
    parser = argparse.ArgumentParser(
        description="EER and min t-DCF (legacy 2019 and revised 2021) of a CM score file, pooled and per "
        "attack, "
        "as the official ASVspoof 2019 evaluation code computes them.",
        epilog=f"Score layouts: {layouts}. Higher score = more bona fide.",
    )
    parser.add_argument("scores", type=Path, help="CM score file")
    parser.add_argument(
        "--format",
        default="auto",
        choices=SCORE_FORMATS,
        help="score file layout (default: auto-detect from the first line)",
    )
    parser.add_argument(
        "--protocol",
        type=Path,
        help="CM protocol to take keys and attacks from, joined by utt_id (2019 LA protocol, "
        "2021 trial_metadata.txt or In-the-Wild meta.csv); every trial must have exactly one score",
    )
    parser.add_argument(
        "--protocol-format",
        default="auto",
        choices=PROTOCOL_FORMATS,
        help="protocol format (default: auto-detect)",
    )
    parser.add_argument(
        "--asv-scores",
        type=Path,
        help="organisers' ASV score file 'cm_key asv_key score' of the same partition (for the t-DCF)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the numbers (fractions) as JSON"
    )
    parser.add_argument(
        "--plot", type=Path, metavar="PATH.png", help="also write DET curves and score histograms"
    )
    parser.add_argument(
        "--allow-negated",
        action="store_true",
        help="negate the scores if that gives a lower EER (some scripts do this silently; "
        "the output says when it happened)",
    )
    parser.add_argument(
        "--priors",
        type=float,
        nargs=3,
        metavar=("PTAR", "PNON", "PSPOOF"),
        default=(CostModel().ptar, CostModel().pnon, CostModel().pspoof),
        help="t-DCF priors (default: the ASVspoof 2019 cost model, %(default)s)",
    )
    return parser


def first_ids(ids: Sequence[str], limit: int = 3) -> str:
    """The first few ids, for error messages."""
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")


def keys_and_attacks(
    args: argparse.Namespace,
    utt_ids: list[str],
    keys: np.ndarray | None,
    attacks: np.ndarray | None,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """The key and attack of every scored trial, from --protocol if given, else from the score file."""
    if args.protocol is None:
        if keys is None or attacks is None:
            raise UserError(
                f"{args.scores}: the 'utt_id score' layout has no keys; "
                "pass --protocol to take them from a CM protocol"
            )
        attacks, renamed = rename_legacy_attacks(attacks)
        if renamed:
            notes.append(
                "note: renamed the pre-release 2019 LA attack names "
                + ", ".join(f"{a}->{LEGACY_ATTACK_IDS[a]}" for a in renamed)
            )
        return keys, attacks
    rows = {row.utt_id: row for row in read_protocol(args.protocol, args.protocol_format)}
    unknown = [utt for utt in utt_ids if utt not in rows]
    if unknown:
        raise UserError(
            f"{args.scores}: {len(unknown)} utt_ids are not in the protocol {args.protocol} "
            f"(first: {first_ids(unknown)})"
        )
    if len(rows) != len(utt_ids):
        scored = set(utt_ids)
        unscored = [utt for utt in rows if utt not in scored]
        raise UserError(
            f"{args.protocol}: {len(unscored)} of {len(rows)} protocol trials have no score in "
            f"{args.scores} (first: {first_ids(unscored)})"
        )
    matched = [rows[utt] for utt in utt_ids]
    protocol_keys = np.array([row.key for row in matched])
    if keys is not None:
        n_differ = int(np.count_nonzero(protocol_keys != keys))
        if n_differ:
            notes.append(
                f"note: {n_differ} keys in the score file differ from the protocol; the protocol's are used"
            )
    return protocol_keys, np.array([row.attack for row in matched])


def maybe_negate(bonafide: np.ndarray, spoof: np.ndarray, notes: list[str]) -> bool:
    """Whether negating the scores lowers the EER (--allow-negated); adds a note either way."""
    eer = compute_eer(bonafide, spoof)[0]
    eer_negated = compute_eer(-bonafide, -spoof)[0]
    if eer_negated < eer:
        notes.append(
            f"note: --allow-negated NEGATED the scores (higher = more spoof in this file): "
            f"EER {100 * eer:.4f} % as given, {100 * eer_negated:.4f} % negated; "
            "the results above are for the negated scores"
        )
        return True
    notes.append(
        f"note: --allow-negated kept the scores as given (negated EER would be {100 * eer_negated:.4f} %)"
    )
    return False


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.4f}"


def _tdcf(x: float | None) -> str:
    return "-" if x is None else f"{x:.5f}"


def format_report(result: dict) -> str:
    """The result dict of `evaluate_cm` (plus file names) as a plain-text table."""
    lines = [
        f"CM scores:  {result['cm_scores']} ({result['n_bonafide']:,} bona fide, {result['n_spoof']:,} spoof)"
    ]
    asv = result["asv"]
    if asv is not None:
        lines += [
            f"ASV scores: {result['asv_scores']}",
            "",
            "ASV operating point (EER threshold, target vs nontarget)",
            f"  EER {_pct(asv['eer'])} %   threshold {asv['threshold']:.6f}",
            f"  Pfa {_pct(asv['pfa'])} %   Pmiss {_pct(asv['pmiss'])} %   "
            f"Pmiss_spoof {_pct(asv['pmiss_spoof'])} %",
        ]
    header = f"{'':<9} {'n spoof':>8} {'EER %':>8} {'threshold':>12} {'min t-DCF':>10} {'t-DCF 2021':>11}"
    lines += ["", "CM (min t-DCF: legacy 2019 and revised 2021, normalised)", header]

    def row(name: str, n: int, r: dict) -> str:
        return (
            f"{name:<9} {n:>8,} {_pct(r['eer']):>8} {r['eer_threshold']:>12.6g} "
            f"{_tdcf(r['min_tdcf']):>10} {_tdcf(r['min_tdcf_2021']):>11}"
        )

    lines.append(row("pooled", result["n_spoof"], result))
    lines += [row(attack, r["n"], r) for attack, r in result["per_attack"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        costs = CostModel(ptar=args.priors[0], pnon=args.priors[1], pspoof=args.priors[2])
    except MetricError as exc:
        raise UserError(f"--priors: {exc}") from None
    notes: list[str] = []
    cm = read_scores(args.scores, args.format)
    utt_ids = cm.utt_ids.tolist()
    keys, attacks = keys_and_attacks(args, utt_ids, cm.keys, cm.attacks, notes)
    is_bona = keys == BONAFIDE
    for name, mask in (("bona fide", is_bona), ("spoof", ~is_bona)):
        if not mask.any():
            raise UserError(f"{args.scores}: no {name} trials; the EER needs both classes")
    bonafide, spoof, spoof_attacks = cm.scores[is_bona], cm.scores[~is_bona], attacks[~is_bona]
    negated = args.allow_negated and maybe_negate(bonafide, spoof, notes)
    if negated:
        bonafide, spoof = -bonafide, -spoof

    asv_arrays: dict[str, np.ndarray] = {}
    if args.asv_scores is not None:
        asv = read_asv_scores(args.asv_scores)
        is_asv_spoof = asv.asv_keys == "spoof"
        asv_arrays = {
            "asv_tar": asv.of("target"),
            "asv_non": asv.of("nontarget"),
            "asv_spoof": asv.scores[is_asv_spoof],
            "asv_spoof_attacks": asv.cm_keys[is_asv_spoof],
        }
    else:
        notes.append(NO_ASV_NOTE)
    try:
        result = evaluate_cm(bonafide, spoof, spoof_attacks, cost=costs, **asv_arrays)
    except MetricError as exc:
        if exc.source == "asv":
            raise UserError(f"{args.asv_scores}: {exc}") from None
        raise UserError(f"{args.scores}: {exc}") from None

    result = {
        "cm_scores": str(args.scores),
        "asv_scores": None if args.asv_scores is None else str(args.asv_scores),
        "protocol": None if args.protocol is None else str(args.protocol),
        "format": cm.fmt,
        "negated": negated,
        **result,
    }
    print(format_report(result))
    for note in notes:
        print(note)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    if args.plot is not None:
        from utils.plots import plot_evaluation  # matplotlib only when asked for

        trials = SortedTrials(bonafide, spoof, spoof_attacks)
        dets = {"pooled": trials.det(), **{a: trials.det(a) for a in result["per_attack"]}}
        plot_evaluation(
            args.plot, dets, bonafide, spoof, title=str(args.scores), threshold=result["eer_threshold"]
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
