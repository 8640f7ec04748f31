"""Evaluate a CM score file: EER and min t-DCF (ASVspoof 2019, 2021 LA/DF, In-the-Wild), ASVspoof 5 measures.

- 2019 LA: pooled and per attack, EER and legacy 2019 / revised 2021 min t-DCF, bit-identical to the
  official evaluation code (docs/evaluation.md). Keys and attacks come from the score file or --protocol.
- 2021 LA/DF (--protocol trial_metadata.txt): the chosen phase (--subset), pooled and the official
  attack × codec tables (docs/evaluation.md); LA min t-DCF with the 2021 ASV scores (--asv-scores score.txt
  --asv-metadata keys/LA/ASV/trial_metadata.txt).
- In-the-Wild (--protocol meta.csv): pooled EER and a score histogram.
- ASVspoof 5 Track 2 (--sasv-scores FILE --sasv-keys FILE): a-DCF, min t-DCF and the exact concurrent
  t-EER, pooled and per attack × codec (docs/evaluation.md, "Track 2 (SASV)").
- ASVspoof 5 Track 1 (--protocol ASVspoof5.eval.track_1.tsv, or the evaluation package's key file
  'filename<TAB>cm-label'): minDCF, actDCF, Cllr, minCllr, EER pooled and per attack x codec
  (docs/evaluation.md).
  Score files may be the package's 'filename<TAB>cm-score' with its header.
- Your own recordings (--protocol manifest.csv, docs/data.md): pooled EER, per attack if it has attacks.
- --group-by codec,language: measures per value of any protocol columns (docs/evaluation.md, "--group-by").
- --metrics asvspoof5 adds minDCF, actDCF, Cllr, minCllr (docs/evaluation.md); --calibrate fits an affine
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
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from data.corpora import corpus_names, get_corpus
from data.corpora.trial_metadata import SUBSET_CHOICES
from engine.evaluation import EvalRequest, evaluate_scores, fit_file_calibration, protocol_corpus
from utils.conditions import format_condition_tables
from utils.errors import UserError, run_cli
from utils.groups import format_group_tables
from utils.io import atomic_write_text
from utils.metrics import CostModel, MetricError, SortedTrials, eer_from_det
from utils.parallel import fork_workers
from utils.report import format_histogram
from utils.scorefiles import SCORE_FORMATS, SCORE_LAYOUTS
from utils.track1 import POOLED, format_track1_tables


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
        "--group-by",
        metavar="COLUMNS",
        help="comma-separated protocol columns (e.g. codec,language; attack, speaker, a manifest's own "
        "columns): n bona fide, n spoof, EER (and the ASVspoof 5 measures when computed) per value and "
        "pooled",
    )
    parser.add_argument(
        "--calibrate-protocol",
        type=Path,
        metavar="PROTOCOL",
        help="CM protocol of --calibrate, if its score file has no keys",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=fork_workers(),
        metavar="N",
        help="processes for the ASVspoof 5 Track 1 per-cell tables (same values with any number; default "
        "%(default)s here: 2 on Linux with 2 CPUs usable, else 1)",
    )


def _add_sasv_arguments(parser: argparse.ArgumentParser) -> None:
    """--sasv-scores, --sasv-keys (ASVspoof 5 Track 2; --asv-scores then takes the organisers' ASV file)."""
    parser.add_argument(
        "--sasv-scores",
        type=Path,
        metavar="FILE",
        help="ASVspoof 5 Track 2 score file 'spk filename cm-score asv-score sasv-score' (header line); "
        "prints a-DCF, min t-DCF and t-EER; --asv-scores may then give the organisers' ASV scores",
    )
    parser.add_argument(
        "--sasv-keys",
        type=Path,
        metavar="FILE",
        help="its key file 'spk filename cm-label asv-label' (attack and codec columns: per-cell tables)",
    )


def build_parser() -> argparse.ArgumentParser:
    layouts = "; ".join(f"{name}: '{cols}'" for name, cols in SCORE_LAYOUTS.items())
    parser = argparse.ArgumentParser(
        description="EER and min t-DCF (legacy 2019 and revised 2021) of a CM score file, pooled and per "
        "attack, "
        "as the official ASVspoof 2019 evaluation code computes them.",
        epilog=f"Score layouts: {layouts}. Higher score = more bona fide.",
    )
    parser.add_argument("scores", type=Path, nargs="?", help="CM score file (not with --sasv-scores)")
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
        "2021 trial_metadata.txt, In-the-Wild meta.csv: any corpus of data/corpora/); every trial must "
        "have exactly one score",
    )
    parser.add_argument(
        "--protocol-format",
        default="auto",
        choices=("auto", *corpus_names()),
        help="the protocol's corpus (default: auto-detect)",
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
    _add_sasv_arguments(parser)
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
    """A per-condition result dict (2021 LA/DF; ``layout_track``: its corpus name) as plain text: pooled
    numbers, per condition, the attack × codec tables."""
    corpus = get_corpus(layout_track)
    layout = corpus.conditions
    phase = "" if result["subset"] is None else f", subset {result['subset']}"
    lines = [
        f"CM scores:  {result['cm_scores']} ({result['n_bonafide']:,} bona fide, "
        f"{result['n_spoof']:,} spoof; {layout.label or corpus.display}{phase})"
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


def _num(x: float | None, scale: float = 1.0) -> str:
    return "-" if x is None else f"{scale * x:.5f}"


def format_sasv(result: dict) -> str:
    """A Track 2 result dict as plain text: pooled measures, then an attack × codec table per measure."""
    lines = [
        f"SASV scores: {result['sasv_scores']} ({result['n_target']:,} target, "
        f"{result['n_nontarget']:,} nontarget, {result['n_spoof']:,} spoof)",
        f"  ASV error rates for the t-DCF: {result['asv_rates']}",
        f"  a-DCF {_num(result['a_dcf'])}   min t-DCF {_num(result['min_tdcf'])}   "
        f"t-EER {_num(result['t_eer'], 100)} %",
    ]
    approx = result.get("t_eer_package")
    if result["t_eer"] is not None and approx != result["t_eer"]:
        lines.append(f"  the official package's decimated t-EER search gives {_num(approx, 100)} %")
    table = result.get("per_cell")
    if table:
        codecs = list(table[POOLED])
        header = f"{'':<8}" + "".join(f"{c:>10}" for c in codecs)
        measures = (("a_dcf", "a-DCF", 1), ("min_tdcf", "min t-DCF", 1), ("t_eer", "t-EER %", 100))
        for key, name, scale in measures:
            lines += ["", f"{name} (rows: attack, columns: codec)", header]
            for attack, row in table.items():
                cells = [_num(None if row[c] is None else row[c][key], scale) for c in codecs]
                lines.append(f"{attack:<8}" + "".join(f"{v:>10}" for v in cells))
    return "\n".join(lines)


def main_sasv(args: argparse.Namespace) -> int:
    """Track 2: evaluate, print, and write --json."""
    if args.sasv_scores is None or args.sasv_keys is None:
        raise UserError("--sasv-scores and --sasv-keys go together")
    if args.scores is not None:
        raise UserError(f"{args.scores}: give either a CM score file or --sasv-scores, not both")
    cm_only = {
        "--protocol": args.protocol,
        "--asv-metadata": args.asv_metadata,
        "--calibrate": args.calibrate,
        "--plot": args.plot,
        "--subset": args.subset,
        "--group-by": args.group_by,
    }
    given = [flag for flag, value in cm_only.items() if value is not None]
    if given or args.allow_negated or args.metrics != "asvspoof2019":
        flag = given[0] if given else "--allow-negated" if args.allow_negated else "--metrics"
        raise UserError(f"{flag} is for CM score files; --sasv-scores takes --sasv-keys, --asv-scores")
    # Imported here: CM evaluations (the common case) need none of the Track 2 modules, so start faster.
    from engine.sasv_evaluation import SasvRequest, evaluate_sasv

    ev = evaluate_sasv(SasvRequest(args.sasv_scores, args.sasv_keys, args.asv_scores))
    print(format_sasv(ev.result))
    for note in ev.notes:
        print(note)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(ev.result, indent=2) + "\n")
    return 0


def format_track1_report(result: dict) -> str:
    """An ASVspoof 5 Track 1 result dict as plain text: the pooled measures, then one attack x codec table
    per measure."""
    return (
        f"CM scores:  {result['cm_scores']} ({result['n_bonafide']:,} bona fide, "
        f"{result['n_spoof']:,} spoof; ASVspoof 5 Track 1, protocol {result['protocol']})\n"
        f"pooled: minDCF {result['min_dcf']:.6f}   actDCF {result['act_dcf']:.6f}   "
        f"Cllr {result['cllr']:.6f} bits   minCllr {result['min_cllr']:.6f} bits   "
        f"EER {_pct(result['eer'])} %\n"
        "(Pspoof 0.05, Cmiss 1, Cfa 10; actDCF and Cllr need calibrated LLRs)"
        + format_track1_tables(result)
    )


FLAG_NAMES = {
    "protocol": "--protocol",
    "subset": "--subset",
    "asv_scores": "--asv-scores",
    "asv_metadata": "--asv-metadata",
    "allow_negated": "--allow-negated",
    "group_by": "--group-by",
}


def group_by_columns(text: str | None) -> tuple[str, ...]:
    """--group-by's comma-separated column names (empty without the flag)."""
    if text is None:
        return ()
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise UserError(f"--group-by {text!r}: give column names, e.g. codec,language")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.sasv_scores is not None or args.sasv_keys is not None:
        return main_sasv(args)
    if args.scores is None:
        raise UserError("give a CM score file (or --sasv-scores FILE --sasv-keys FILE)")
    try:
        costs = CostModel(ptar=args.priors[0], pnon=args.priors[1], pspoof=args.priors[2])
    except MetricError as exc:
        raise UserError(f"--priors: {exc}") from None
    req = EvalRequest(
        scores=args.scores,
        score_format=args.format,
        protocol=args.protocol,
        protocol_format=args.protocol_format,
        subset=args.subset,
        asv_scores=args.asv_scores,
        asv_metadata=args.asv_metadata,
        metrics=args.metrics,
        allow_negated=args.allow_negated,
        costs=costs,
        group_by=group_by_columns(args.group_by),
        names=FLAG_NAMES,
        workers=max(1, args.workers),
    )
    corpus = protocol_corpus(req)
    if args.calibrate is None and args.calibrate_protocol is not None:
        raise UserError("--calibrate-protocol needs --calibrate DEV_SCORES")
    if args.calibrate is not None:
        calibration, warned = fit_file_calibration(
            args.calibrate, args.calibrate_protocol, "--calibrate-protocol"
        )
        for message in warned:
            print(f"warning: {message}", file=sys.stderr)
        req = replace(req, calibration=calibration, calibration_source=str(args.calibrate))
    ev = evaluate_scores(req, corpus)
    result = ev.result
    per_condition = corpus is not None and corpus.conditions is not None
    track1 = corpus is not None and corpus.track1_tables
    if track1:
        report = format_track1_report(result)
    else:
        report = format_2021_report(result, result["track"]) if per_condition else format_report(result)
    if args.metrics == "asvspoof5" and not track1:
        report += "\n" + format_asvspoof5(result)
    if "groups" in result:
        report += "\n" + format_group_tables(result["groups"])
    if "histogram" in result:
        report += "\n\nscore histogram\n" + format_histogram(result["histogram"])
    print(report)
    for note in ev.notes:
        print(note)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    if args.plot is not None:
        from utils.plots import plot_evaluation  # matplotlib only when asked for

        trials = SortedTrials(ev.bonafide, ev.spoof, ev.spoof_groups)
        dets = {"pooled": trials.det(), **{g: trials.det(g) for g in trials.group_names.tolist()}}
        plot_evaluation(
            args.plot,
            dets,
            ev.bonafide,
            ev.spoof,
            title=str(args.scores),
            threshold=eer_from_det(dets["pooled"])[1],
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
