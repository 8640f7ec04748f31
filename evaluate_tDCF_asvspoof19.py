"""Evaluate a CM score file: EER and min t-DCF (ASVspoof 2019, 2021 LA/DF, In-the-Wild), ASVspoof 5 measures.

- 2019 LA: pooled and per attack, EER and legacy 2019 / revised 2021 min t-DCF, bit-identical to the
  official evaluation code (SPEC §6). Keys and attacks come from the score file or --protocol.
- 2021 LA/DF (--protocol trial_metadata.txt): the chosen phase (--subset), pooled and the official
  attack × codec tables (SPEC §9); LA min t-DCF with the 2021 ASV scores (--asv-scores score.txt
  --asv-metadata keys/LA/ASV/trial_metadata.txt).
- In-the-Wild (--protocol meta.csv): pooled EER and a score histogram.
- --metrics asvspoof5 adds minDCF, actDCF, Cllr, minCllr (SPEC §12); --calibrate fits an affine
  score-to-LLR map on development scores and applies it to the scores first.
Scores: higher = more bona fide. The work is in utils/ and data/; this file parses flags and prints.

Example (from the repository root):
    .venv/bin/python evaluate_tDCF_asvspoof19.py scores.txt \\
        --asv-scores LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt \\
        --json result.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.protocols import (
    PROTOCOL_FORMATS,
    SUBSET_CHOICES,
    align_asv_scores,
    align_scores,
    detect_protocol_format,
    first_ids,
    read_protocol,
    read_trial_metadata,
    require_scores,
    subset_mask,
    subset_name,
)
from utils.calibration import Calibration, SeparableScoresWarning, fit_calibration
from utils.conditions import LAYOUTS, AsvTrials, Trials, condition_tables, format_condition_tables
from utils.errors import UserError, run_cli
from utils.io import atomic_write_text
from utils.metrics import CostModel, MetricError, SortedTrials, asvspoof5_measures, compute_eer, evaluate_cm
from utils.report import format_histogram, score_histogram
from utils.scorefiles import (
    ASV_KEYS,
    BONAFIDE,
    LEGACY_ATTACK_IDS,
    SCORE_FORMATS,
    SCORE_LAYOUTS,
    read_asv_scores,
    read_asv_trial_scores,
    read_scores,
    read_text,
    rename_legacy_attacks,
)

NO_ASV_NOTE = (
    "note: no --asv-scores given, so EER only: the t-DCF needs the ASV scores of the same partition "
    "(2019 LA: ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt)"
)


def _add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    """--metrics, --calibrate, --calibrate-protocol."""
    parser.add_argument(
        "--metrics",
        default="asvspoof2019",
        choices=("asvspoof2019", "asvspoof5"),
        help="asvspoof5 adds minDCF, actDCF, Cllr and minCllr (Pspoof 0.05, Cmiss 1, Cfa 10) to the EER "
        "and t-DCF (default: %(default)s)",
    )
    parser.add_argument(
        "--calibrate",
        type=Path,
        metavar="DEV_SCORES",
        help="fit an affine score-to-LLR calibration on this development score file and apply it to the "
        "scores before every measure",
    )
    parser.add_argument(
        "--calibrate-protocol",
        type=Path,
        metavar="PROTOCOL",
        help="CM protocol of --calibrate, if its score file has no keys",
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
        "--subset",
        help="2021 LA/DF: the phase to score, one of " + ", ".join(SUBSET_CHOICES) + " (default: eval)",
    )
    parser.add_argument(
        "--asv-scores",
        type=Path,
        help="organisers' ASV scores of the same partition, for the t-DCF: 2019 LA 'cm_key asv_key score'; "
        "2021 LA 'model trial score' (keys/LA/ASV/ASVTorch_Kaldi/score.txt, with --asv-metadata)",
    )
    parser.add_argument(
        "--asv-metadata",
        type=Path,
        help="2021 LA: the ASV keys keys/LA/ASV/trial_metadata.txt, joined to --asv-scores on (model, trial)",
    )
    _add_metric_arguments(parser)
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


def keys_and_attacks(
    scores_path: Path,
    protocol: Path | None,
    protocol_format: str,
    utt_ids: list[str],
    keys: np.ndarray | None,
    attacks: np.ndarray | None,
    notes: list[str],
    protocol_flag: str = "--protocol",
) -> tuple[np.ndarray, np.ndarray]:
    """The key and attack of every scored trial, from `protocol` if given, else from the score file."""
    if protocol is None:
        if keys is None or attacks is None:
            raise UserError(
                f"{scores_path}: the 'utt_id score' layout has no keys; "
                f"pass {protocol_flag} to take them from a CM protocol"
            )
        attacks, renamed = rename_legacy_attacks(attacks)
        if renamed:
            notes.append(
                "note: renamed the pre-release 2019 LA attack names "
                + ", ".join(f"{a}->{LEGACY_ATTACK_IDS[a]}" for a in renamed)
            )
        return keys, attacks
    rows = {row.utt_id: row for row in read_protocol(protocol, protocol_format)}
    unknown = [utt for utt in utt_ids if utt not in rows]
    if unknown:
        raise UserError(
            f"{scores_path}: {len(unknown)} utt_ids are not in the protocol {protocol} "
            f"(first: {first_ids(unknown)})"
        )
    if len(rows) != len(utt_ids):
        scored = set(utt_ids)
        unscored = [utt for utt in rows if utt not in scored]
        raise UserError(
            f"{protocol}: {len(unscored)} of {len(rows)} protocol trials have no score in "
            f"{scores_path} (first: {first_ids(unscored)})"
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


def format_asvspoof5(result: dict) -> str:
    """The ASVspoof 5 measures of a result dict as two lines."""
    return (
        "\nASVspoof 5 measures (Pspoof 0.05, Cmiss 1, Cfa 10; actDCF and Cllr need calibrated LLRs)\n"
        f"  minDCF {result['min_dcf']:.5f}   actDCF {result['act_dcf']:.5f} (threshold "
        f"{result['act_threshold']:.6f})   Cllr {result['cllr']:.5f} bits   "
        f"minCllr {result['min_cllr']:.5f} bits"
    )


def format_2021_report(result: dict, layout_track: str) -> str:
    """The 2021 LA/DF result dict as plain text: pooled numbers, per condition, the attack × codec tables."""
    layout = LAYOUTS[layout_track]
    lines = [
        f"CM scores:  {result['cm_scores']} ({result['n_bonafide']:,} bona fide, "
        f"{result['n_spoof']:,} spoof; "
        f"{layout_track[:2].upper()} 2021, subset {result['subset']})"
    ]
    asv = result["asv"]
    if asv is not None:
        lines += [
            f"ASV scores: {result['asv_scores']} (keys {result['asv_metadata']})",
            f"  pooled ASV EER {_pct(asv['eer'])} %   threshold {asv['threshold']:.6f}   "
            f"Pfa {_pct(asv['pfa'])} %   Pmiss {_pct(asv['pmiss'])} %   Pfa_spoof {_pct(asv['pfa_spoof'])} %",
        ]
    lines += [
        "",
        f"pooled: EER {_pct(result['eer'])} %   threshold {result['eer_threshold']:.6g}   "
        f"min t-DCF (2021) {_tdcf(result['min_tdcf'])}",
        "",
        f"{'':<4} {'codec':<9} {'bona fide':>9} {'spoof':>8} {'EER %':>8} {'min t-DCF':>10}",
    ]
    for cid, r in result["per_condition"].items():
        lines.append(
            f"{cid:<4} {r['name']:<9} {r['n_bonafide']:>9,} {r['n_spoof']:>8,} {_pct(r['eer']):>8} "
            f"{_tdcf(r['min_tdcf']):>10}"
        )
    return "\n".join(lines) + "\n" + format_condition_tables(layout, result)


def two_classes(is_bona: np.ndarray, what: str) -> None:
    """Raise `UserError` unless both bona fide and spoof trials are present."""
    for name, mask in (("bona fide", is_bona), ("spoof", ~is_bona)):
        if not mask.any():
            raise UserError(f"{what}: no {name} trials; the EER needs both classes")


def dev_calibration(args: argparse.Namespace, notes: list[str]) -> Calibration | None:
    """The calibration fitted on --calibrate (keys from its file or --calibrate-protocol), or None."""
    if args.calibrate is None:
        if args.calibrate_protocol is not None:
            raise UserError("--calibrate-protocol needs --calibrate DEV_SCORES")
        return None
    dev = read_scores(args.calibrate)
    keys, _ = keys_and_attacks(
        args.calibrate,
        args.calibrate_protocol,
        "auto",
        dev.utt_ids.tolist(),
        dev.keys,
        dev.attacks,
        [],
        "--calibrate-protocol",
    )
    is_bona = keys == BONAFIDE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SeparableScoresWarning)
        try:
            calibration = fit_calibration(dev.scores[is_bona], dev.scores[~is_bona])
        except MetricError as exc:
            raise UserError(f"{args.calibrate}: {exc}") from None
    for warning in caught:
        print(f"warning: {args.calibrate}: {warning.message}", file=sys.stderr)
    notes.append(
        f"note: scores calibrated to LLRs as {calibration.scale:.6g} * score "
        f"{'-' if calibration.offset < 0 else '+'} {abs(calibration.offset):.6g}, "
        f"fitted on {args.calibrate} ({calibration.n_bonafide:,} bona fide, {calibration.n_spoof:,} spoof)"
    )
    return calibration


def protocol_format(args: argparse.Namespace) -> str | None:
    """The --protocol format (detected unless given), or None without --protocol; checks flag pairs."""
    fmt = None
    if args.protocol is not None:
        fmt = args.protocol_format
        if fmt == "auto":
            fmt = detect_protocol_format(args.protocol, read_text(args.protocol, "protocol file"))
    is_2021 = fmt in LAYOUTS
    if args.subset is not None and not is_2021:
        raise UserError("--subset applies to 2021 LA/DF trial_metadata.txt given with --protocol")
    if args.asv_metadata is not None and not is_2021:
        raise UserError("--asv-metadata applies to 2021 LA (with --protocol keys/LA/CM/trial_metadata.txt)")
    if fmt == "itw" and args.asv_scores is not None:
        raise UserError(f"{args.protocol}: In-the-Wild has no ASV trials, so no t-DCF; drop --asv-scores")
    subset_name(args.subset or "eval")
    return fmt


def evaluate_2019(
    args: argparse.Namespace, fmt: str | None, cm, scores: np.ndarray, costs: CostModel, notes: list[str]
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray | None]:
    """Result dict of a 2019 LA (or In-the-Wild) evaluation and its bona fide, spoof, spoof attack arrays."""
    utt_ids = cm.utt_ids.tolist()
    keys, attacks = keys_and_attacks(
        args.scores, args.protocol, args.protocol_format, utt_ids, cm.keys, cm.attacks, notes
    )
    is_bona = keys == BONAFIDE
    two_classes(is_bona, str(args.scores))
    # In-the-Wild has no attack labels: its one "unknown" group would repeat the pooled numbers.
    bonafide, spoof = scores[is_bona], scores[~is_bona]
    spoof_attacks = None if fmt == "itw" else attacks[~is_bona]
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
        notes.append(NO_ASV_NOTE if fmt != "itw" else "note: In-the-Wild has no ASV scores, so EER only")
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
    return result, bonafide, spoof, spoof_attacks


def _asv_2021_trials(args: argparse.Namespace, track: str, subset: str) -> AsvTrials:
    """The 2021 ASV scores of ``subset``, joined with their metadata on (model, trial), split by key."""
    asv_meta = read_trial_metadata(args.asv_metadata, track, asv=True)
    asv_aligned = align_asv_scores(asv_meta, read_asv_trial_scores(args.asv_scores))
    asv_mask = subset_mask(asv_meta, subset)
    asv_sub = asv_meta.select(asv_mask)
    asv_scores = require_scores(asv_sub, asv_aligned[asv_mask], args.asv_scores)
    parts = {}
    for key in ASV_KEYS:
        k = asv_sub.keys == key
        if not k.any():
            raise UserError(f"{args.asv_metadata}: no ASV '{key}' trials in subset {subset}")
        parts[key] = Trials(asv_scores[k], asv_sub.rows[k], asv_sub.codecs[k])
    return AsvTrials(parts["target"], parts["nontarget"], parts["spoof"])


def evaluate_2021(
    args: argparse.Namespace, cm, scores: np.ndarray, costs: CostModel, notes: list[str]
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Result dict of a 2021 LA/DF evaluation of one phase and its (bona fide, spoof, spoof row) arrays."""
    fmt = args.protocol_format if args.protocol_format in LAYOUTS else "auto"
    meta = read_trial_metadata(args.protocol, fmt)
    layout = LAYOUTS[meta.track]
    subset = subset_name(args.subset or "eval")
    given = [
        flag for flag, v in (("--asv-scores", args.asv_scores), ("--asv-metadata", args.asv_metadata)) if v
    ]
    if given and not layout.tdcf:
        raise UserError(
            f"{args.protocol}: 2021 DF is evaluated by EER only (no t-DCF); drop {' and '.join(given)}"
        )
    if len(given) == 1:
        raise UserError(
            "the 2021 LA t-DCF needs both --asv-scores (keys/LA/ASV/ASVTorch_Kaldi/score.txt) and "
            "--asv-metadata (keys/LA/ASV/trial_metadata.txt)"
        )
    mask = subset_mask(meta, subset)
    utt_ids = cm.utt_ids.tolist()
    aligned = align_scores(meta, utt_ids, scores, args.scores)
    if cm.keys is not None:
        key_of = dict(zip(meta.trials.tolist(), meta.keys.tolist(), strict=True))
        n_differ = sum(key_of[u] != k for u, k in zip(utt_ids, cm.keys.tolist(), strict=True))
        if n_differ:
            notes.append(
                f"note: {n_differ} keys in the score file differ from the metadata; the metadata's are used"
            )
    sub = meta.select(mask)
    sub_scores = require_scores(sub, aligned[mask], args.scores)
    is_bona = sub.keys == BONAFIDE
    two_classes(is_bona, f"{args.protocol} (subset {subset})")
    bonafide, spoof = sub_scores[is_bona], sub_scores[~is_bona]
    negated = args.allow_negated and maybe_negate(bonafide, spoof, notes)
    if negated:
        bonafide, spoof = -bonafide, -spoof

    asv = _asv_2021_trials(args, meta.track, subset) if given else None
    if not given and layout.tdcf:
        notes.append(
            "note: no --asv-scores/--asv-metadata given, so EER only: the 2021 LA t-DCF needs the keys' "
            "LA/ASV/ASVTorch_Kaldi/score.txt and LA/ASV/trial_metadata.txt"
        )
    bona_trials = Trials(bonafide, sub.rows[is_bona], sub.codecs[is_bona])
    spoof_trials = Trials(spoof, sub.rows[~is_bona], sub.codecs[~is_bona])
    try:
        tables = condition_tables(layout, bona_trials, spoof_trials, asv, costs)
    except MetricError as exc:
        raise UserError(f"{args.asv_scores if exc.source == 'asv' else args.scores}: {exc}") from None
    result = {
        "cm_scores": str(args.scores),
        "asv_scores": None if args.asv_scores is None else str(args.asv_scores),
        "asv_metadata": None if args.asv_metadata is None else str(args.asv_metadata),
        "protocol": str(args.protocol),
        "format": cm.fmt,
        "track": meta.track,
        "subset": subset,
        "negated": negated,
        "eer": tables["eer"],
        "eer_threshold": tables["eer_threshold"],
        # 2021 LA reports the revised t-DCF only (SPEC §9); both keys hold it.
        "min_tdcf": tables["min_tdcf"],
        "min_tdcf_2021": tables["min_tdcf"],
        "n_bonafide": int(bonafide.size),
        "n_spoof": int(spoof.size),
        "asv": tables["asv"],
        "per_condition": tables["per_condition"],
        "per_cell": tables["per_cell"],
    }
    return result, bonafide, spoof, spoof_trials.rows


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        costs = CostModel(ptar=args.priors[0], pnon=args.priors[1], pspoof=args.priors[2])
    except MetricError as exc:
        raise UserError(f"--priors: {exc}") from None
    notes: list[str] = []
    fmt = protocol_format(args)
    calibration = dev_calibration(args, notes)
    cm = read_scores(args.scores, args.format)
    scores = cm.scores if calibration is None else calibration.apply(cm.scores)
    if fmt in LAYOUTS:
        result, bonafide, spoof, spoof_groups = evaluate_2021(args, cm, scores, costs, notes)
        report = format_2021_report(result, result["track"])
    else:
        result, bonafide, spoof, spoof_groups = evaluate_2019(args, fmt, cm, scores, costs, notes)
        report = format_report(result)
    if args.metrics == "asvspoof5":
        try:
            result.update(asvspoof5_measures(bonafide, spoof))
        except MetricError as exc:
            raise UserError(f"{args.scores}: {exc}") from None
        report += "\n" + format_asvspoof5(result)
    if calibration is not None:
        result["calibration"] = {**calibration.as_dict(), "dev_scores": str(args.calibrate)}
    if fmt == "itw":
        result["histogram"] = score_histogram(bonafide, spoof)
        report += "\n\nscore histogram\n" + format_histogram(result["histogram"])
    print(report)
    for note in notes:
        print(note)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    if args.plot is not None:
        from utils.plots import plot_evaluation  # matplotlib only when asked for

        trials = SortedTrials(bonafide, spoof, spoof_groups)
        dets = {"pooled": trials.det(), **{g: trials.det(g) for g in trials.group_names.tolist()}}
        plot_evaluation(
            args.plot, dets, bonafide, spoof, title=str(args.scores), threshold=result["eer_threshold"]
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
