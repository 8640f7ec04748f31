"""ASVspoof 5 Track 1 tables: minDCF, actDCF, Cllr, minCllr and EER pooled and per attack x codec cell.

The official evaluation package (asvspoof-challenge/asvspoof5, ``evaluation-package/``, full mode) fills one
table per measure: rows ``pooled`` + each attack (sorted), columns ``pooled`` + each codec value (sorted,
``-`` = uncoded included). Cell (attack a, codec c): every bona fide trial with codec c against the spoof
trials of attack a with codec c; a cell without bona fide or without spoof trials is empty (None).
The measures are those of `utils.metrics` (docs/evaluation.md), with the package's tie rule (bona fide
first among equal scores, from a stable sort of bona fide then spoof).

Vectorised: the trials are sorted once; each row is one boolean selection of that order and each cell a
selection of the row, so a cell's DET curve, counts below the Bayes threshold, Cllr sums and score blocks
for minCllr are cumulative sums and reductions over already-sorted arrays. No per-cell sort, no pandas.
"""

from __future__ import annotations

import numpy as np

from utils.metrics import (
    ASVSPOOF5_COSTS,
    DcfCosts,
    det_from_sorted,
    eer_from_det,
    min_cllr_from_counts,
    normalised_dcf,
)

POOLED = "pooled"
MEASURES = ("min_dcf", "act_dcf", "cllr", "min_cllr", "eer")


def sorted_cell_measures(
    scores: np.ndarray, is_bona: np.ndarray, cllr_terms: np.ndarray, costs: DcfCosts = ASVSPOOF5_COSTS
) -> dict[str, float] | None:
    """The Track 1 measures of one cell from its trials sorted by score (ties: bona fide first), (n,) each;
    ``cllr_terms``: ln(1 + e^−s) for bona fide, ln(1 + e^s) for spoof. None without both classes."""
    n = scores.size
    n_bona = int(np.count_nonzero(is_bona))
    n_spoof = n - n_bona
    if n_bona == 0 or n_spoof == 0:
        return None
    c = (costs.pspoof, costs.cmiss, costs.cfa)
    det = det_from_sorted(scores, is_bona)
    dcf = normalised_dcf(det.frr, det.far, *c)
    eer, _ = eer_from_det(det)
    threshold = -np.log(costs.cmiss * (1 - costs.pspoof) / (costs.cfa * costs.pspoof))
    below = int(np.searchsorted(scores, threshold, side="left"))  # trials scoring < threshold
    bona_below = int(np.count_nonzero(is_bona[:below]))
    pmiss = bona_below / n_bona
    pfa = (n_spoof - (below - bona_below)) / n_spoof
    bona_terms = cllr_terms[is_bona]
    spoof_terms = cllr_terms[~is_bona]
    cllr = 0.5 * (bona_terms.sum() / n_bona + spoof_terms.sum() / n_spoof) / np.log(2)
    starts = np.flatnonzero(np.concatenate(([True], scores[1:] != scores[:-1])))
    per_value_all = np.diff(np.append(starts, n))
    per_value_bona = np.add.reduceat(is_bona.astype(np.int64), starts)
    return {
        "min_dcf": float(dcf.min()),
        "act_dcf": float(normalised_dcf(pmiss, pfa, *c)),
        "cllr": float(cllr),
        "min_cllr": min_cllr_from_counts(per_value_bona, per_value_all),
        "eer": eer,
    }


def track1_tables(
    scores: np.ndarray,
    is_bona: np.ndarray,
    attacks: np.ndarray,
    codecs: np.ndarray | None = None,
    costs: DcfCosts = ASVSPOOF5_COSTS,
) -> dict:
    """Track 1 measures of CM scores (n,) (LLR-like, higher = bona fide) with each trial's class (n,) bool,
    attack (n,) str (ignored for bona fide) and codec (n,) str (None: no codec columns).

    Returns ``{"pooled": measures, "attacks": [...], "codecs": [...], "per_cell": {row: {col: measures or
    None}}}``; rows ``pooled`` then the attacks, columns ``pooled`` then the codecs, each sorted; measures
    are the `MEASURES` keys (rates and DCFs as fractions, Cllr in bits).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_bona = np.asarray(is_bona, dtype=bool).ravel()
    # Bona fide first, then a stable sort: among tied scores bona fide stays first (the package's order).
    first = np.concatenate((np.flatnonzero(is_bona), np.flatnonzero(~is_bona)))
    order = first[np.argsort(scores[first], kind="mergesort")]
    s, bona = scores[order], is_bona[order]
    attack_names, attack_codes = np.unique(np.asarray(attacks)[order][~bona], return_inverse=True)
    row_code = np.full(s.size, -1)
    row_code[~bona] = attack_codes
    codec_values = np.asarray(codecs)[order] if codecs is not None else np.full(s.size, "")
    codec_names, codec_code = np.unique(codec_values, return_inverse=True)
    terms = np.where(bona, np.logaddexp(0, -s), np.logaddexp(0, s))
    per_cell: dict[str, dict[str, dict[str, float] | None]] = {}
    row_labels = [POOLED, *attack_names.tolist()]
    col_labels = [POOLED, *codec_names.tolist()] if codecs is not None else [POOLED]
    codec_code = codec_code.astype(np.int16)  # small integer keys: numpy's stable sort is a radix sort
    for r, row in enumerate(row_labels):
        keep = np.ones(s.size, bool) if r == 0 else bona | (row_code == r - 1)
        rs, rb, rt = s[keep], bona[keep], terms[keep]
        cells = {POOLED: sorted_cell_measures(rs, rb, rt, costs)}
        if codecs is not None:
            # Grouped by codec, score order kept within each group: every cell is one contiguous slice.
            by_codec = np.argsort(codec_code[keep], kind="stable")
            rs, rb, rt = rs[by_codec], rb[by_codec], rt[by_codec]
            bounds = np.cumsum(np.bincount(codec_code[keep], minlength=codec_names.size))
            for c, col in enumerate(col_labels[1:]):
                cut = slice(bounds[c - 1] if c else 0, bounds[c])
                cells[col] = sorted_cell_measures(rs[cut], rb[cut], rt[cut], costs)
        per_cell[row] = cells
    return {
        "pooled": per_cell[POOLED][POOLED],
        "attacks": attack_names.tolist(),
        "codecs": codec_names.tolist() if codecs is not None else [],
        "per_cell": per_cell,
    }


def _fmt(x: float | None, scale: float, digits: int) -> str:
    return "-" if x is None else f"{scale * x:.{digits}f}"


def format_track1_tables(tables: dict) -> str:
    """The per-cell tables as plain text, one per measure (EER in %, the others as they are)."""
    cols = [POOLED, *tables["codecs"]]
    width = max(len(r) for r in tables["per_cell"]) + 1
    lines: list[str] = []
    for measure, title, scale in (
        ("min_dcf", "minDCF", 1.0),
        ("act_dcf", "actDCF", 1.0),
        ("cllr", "Cllr (bits)", 1.0),
        ("min_cllr", "minCllr (bits)", 1.0),
        ("eer", "EER %", 100.0),
    ):
        lines += ["", f"{title}: attack x codec", f"{'':<{width}}" + "".join(f"{c:>8}" for c in cols)]
        for row, cells in tables["per_cell"].items():
            values = (None if cells[c] is None else cells[c][measure] for c in cols)
            lines.append(f"{row:<{width}}" + "".join(f"{_fmt(v, scale, 4):>8}" for v in values))
    return "\n".join(lines)
