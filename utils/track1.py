"""ASVspoof 5 Track 1 tables: minDCF, actDCF, Cllr, minCllr and EER pooled and per attack x codec cell.

The official evaluation package (asvspoof-challenge/asvspoof5, ``evaluation-package/``, full mode) fills one
table per measure: rows ``pooled`` + each attack (sorted), columns ``pooled`` + each codec value (sorted,
``-`` = uncoded included). Cell (attack a, codec c): every bona fide trial with codec c against the spoof
trials of attack a with codec c; a cell without bona fide or without spoof trials is empty (None).
The measures are those of `utils.metrics` (docs/evaluation.md), with the package's tie rule (bona fide
first among equal scores, from a stable sort of bona fide then spoof).

Vectorised: the trials are grouped once by (codec, attack or bona fide) with a radix sort of small integer
keys and each group's scores are sorted on their own; a cell's measures come from binary searches of its
spoof scores in its sorted bona fide scores (`cell_measures`: no merged curve, no per-cell sort), and each
Cllr half-sum is computed once per group. No pandas.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from utils.metrics import (
    ASVSPOOF5_COSTS,
    DcfCosts,
    min_cllr_from_diagram,
    normalised_dcf,
)

POOLED = "pooled"
MEASURES = ("min_dcf", "act_dcf", "cllr", "min_cllr", "eer")


class SortedSide:
    """The sorted scores (n,) of one class of one cell; its Cllr sum is computed once however many cells
    share it (bona fide: ln(1 + e^−s) summed, spoof: ln(1 + e^s))."""

    def __init__(self, scores: np.ndarray, bona: bool, parts: list[SortedSide] | None = None):
        self.scores = scores
        self.bona = bona
        self._parts = parts  # the groups this side is made of, whose sums add up to its own

    @cached_property
    def cllr_sum(self) -> float:
        if self._parts is not None:
            return float(sum(part.cllr_sum for part in self._parts))
        return float(np.logaddexp(0, -self.scores if self.bona else self.scores).sum())


def cell_measures(
    bona: SortedSide, spoof: SortedSide, costs: DcfCosts = ASVSPOOF5_COSTS
) -> dict[str, float] | None:
    """The Track 1 measures of one cell from its sorted bona fide and spoof scores; None without both.

    The merged ranking is never built. ``before[j]`` (binary searches) counts the bona fide trials ranked
    before spoof trial j (bona fide first on ties), which fixes every DET point: after k spoof trials the
    curve walks through the bona fide counts ``before[k-1] .. before[k]`` at a constant false-alarm rate.
    So minDCF is reached at the start of such a run, the EER crossing lies in the first run that ends at or
    above frr = far, and the convex hull that minCllr's PAV pooling follows has its corners only where a
    run of spoof values ends; the same floating-point operations as on the whole curve, on n_spoof points.
    """
    n_bona, n_spoof = bona.scores.size, spoof.scores.size
    if n_bona == 0 or n_spoof == 0:
        return None
    c = (costs.pspoof, costs.cmiss, costs.cfa)
    before = np.searchsorted(bona.scores, spoof.scores, side="right")
    run_start = np.concatenate(([0], before))  # bona fide count where the false-alarm rate becomes far[k]
    far = (n_spoof - np.arange(n_spoof + 1)) / n_spoof
    threshold = -np.log(costs.cmiss * (1 - costs.pspoof) / (costs.cfa * costs.pspoof))
    pmiss = int(np.searchsorted(bona.scores, threshold, side="left")) / n_bona  # bona fide < threshold
    pfa = (n_spoof - int(np.searchsorted(spoof.scores, threshold, side="left"))) / n_spoof
    cllr = 0.5 * (bona.cllr_sum / n_bona + spoof.cllr_sum / n_spoof) / np.log(2)
    # a spoof value's last trial closes a block of the tie-aware cumulative (trials, bona fide) diagram
    last = np.flatnonzero(np.append(spoof.scores[1:] != spoof.scores[:-1], True))
    diagram_bona = np.concatenate(([0], before[last], [n_bona]))
    diagram_all = np.concatenate(([0], before[last] + last + 1, [n_bona + n_spoof]))
    return {
        "min_dcf": float(normalised_dcf(run_start / n_bona, far, *c).min()),
        "act_dcf": float(normalised_dcf(pmiss, pfa, *c)),
        "cllr": float(cllr),
        "min_cllr": min_cllr_from_diagram(diagram_all, diagram_bona),
        "eer": _eer_from_runs(run_start, far, n_bona),
    }


def _eer_from_runs(run_start: np.ndarray, far: np.ndarray, n_bona: int) -> float:
    """`utils.metrics.eer_from_det` on the DET curve whose run k (false-alarm rate far[k], (n_spoof+1,))
    covers the bona fide counts run_start[k] .. run_start[k+1] (n_bona after the last run): the two points
    around the sign change of frr − far (which only grows along the curve), the first of them on a tie."""
    run_end = np.append(run_start[1:], n_bona)
    k = int(np.argmax(run_end / n_bona >= far))  # the run holding the first point with frr >= far
    lo, hi = int(run_start[k]), int(run_end[k])
    guess = n_bona * far[k]
    counts = np.arange(max(lo, int(guess) - 1), max(min(hi, int(guess) + 2), lo) + 1)
    at = int(counts[np.argmax(counts / n_bona >= far[k])])
    points = [(at - 1, k) if at > lo else (lo, k - 1), (at, k)]
    rates = [(count / n_bona, far[run]) for count, run in points]
    gaps = [abs(frr - fa) for frr, fa in rates]
    return float(np.mean(rates[0] if gaps[0] <= gaps[1] else rates[1]))


def few_unique(values: np.ndarray, limit: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for a str array (n,) with few distinct values (attacks,
    codecs) without sorting the strings: each string of at most 8 Latin-1 characters is packed into one
    integer (exactly), the distinct integers are found from a sample and checked against every trial (a
    full sort of the integers only when the sample missed one), and only those few are sorted as strings.
    Longer strings, more than ``limit`` values or another dtype: `np.unique` itself."""
    values = np.ascontiguousarray(values)
    width = values.dtype.itemsize // 4 if values.dtype.kind == "U" else 0
    if not 0 < width <= 8 or values.size == 0:
        return np.unique(values, return_inverse=True)
    chars = values.view(np.uint32).reshape(values.size, width)
    largest = chars.max(axis=0)  # per character position: one pass over the array
    if int(largest.max()) > 255:
        return np.unique(values, return_inverse=True)
    width = max(int(np.flatnonzero(largest).max(initial=0)) + 1, 1)  # the dtype may be wider than needed
    chars = chars[:, :width]
    key = chars[:, 0].astype(np.uint64)
    for k in range(1, width):
        key |= chars[:, k].astype(np.uint64) << np.uint64(8 * k)
    keys = np.unique(key[:: max(1, values.size // 4096)])
    codes = np.searchsorted(keys, key)
    if not np.array_equal(keys[np.minimum(codes, keys.size - 1)], key):
        keys = np.unique(key)  # the sample missed a value
        codes = np.searchsorted(keys, key)
    if keys.size > limit:
        return np.unique(values, return_inverse=True)
    found = keys.astype("<u8").view(np.uint8).reshape(keys.size, 8)[:, :width]
    found = found.astype(np.uint32).view(f"U{width}").ravel()
    rank = np.empty(found.size, dtype=np.int64)
    rank[np.argsort(found, kind="stable")] = np.arange(found.size)
    return np.sort(found), rank[codes]


def _grouped(scores: np.ndarray, key: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """The scores of each group 0..n_groups-1 of ``key`` (n,), each sorted ascending."""
    # Small integer keys: numpy's stable sort is a radix sort; then each group sorts its own slice.
    dtype = np.int16 if n_groups < 2**15 else np.int64
    by_group = scores[np.argsort(key.astype(dtype), kind="stable")]
    bounds = np.concatenate(([0], np.cumsum(np.bincount(key, minlength=n_groups))))
    groups = [by_group[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    for group in groups:
        group.sort()
    return groups


def _sides(groups: list[SortedSide], bona: bool) -> SortedSide:
    """One side made of several groups (a pooled row or column): their scores sorted together, its Cllr
    sum the sum of theirs (each trial's term computed once)."""
    return SortedSide(np.sort(np.concatenate([g.scores for g in groups])), bona, groups)


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
    attack_names, attack_code = few_unique(np.asarray(attacks)[~is_bona])
    n_att = attack_names.size
    cls = np.full(scores.size, n_att)  # class n_att = bona fide
    cls[~is_bona] = attack_code
    codec_names, codec_code = few_unique(np.asarray(codecs) if codecs is not None else np.zeros(scores.size))
    n_codec = codec_names.size
    groups = _grouped(scores, codec_code * (n_att + 1) + cls, n_codec * (n_att + 1))
    # cell[c][a]: sorted scores of codec c and class a (a = n_att: bona fide)
    cell = [[SortedSide(g, a == n_att) for a, g in enumerate(groups[c * (n_att + 1) : (c + 1) * (n_att + 1)])]
            for c in range(n_codec)]  # fmt: skip
    bona_of = [cell[c][n_att] for c in range(n_codec)]
    bona_all = _sides(bona_of, True)
    spoof_by_codec_all = [_sides(cell[c][:n_att], False) for c in range(n_codec)]
    spoof_all = _sides(spoof_by_codec_all, False)
    row_labels = [POOLED, *attack_names.tolist()]
    col_labels = [POOLED, *codec_names.tolist()] if codecs is not None else [POOLED]
    per_cell: dict[str, dict[str, dict[str, float] | None]] = {}
    for r, row in enumerate(row_labels):
        if r == 0:
            spoof_pooled, spoof_by_codec = spoof_all, spoof_by_codec_all
        else:
            spoof_by_codec = [cell[c][r - 1] for c in range(n_codec)]
            spoof_pooled = _sides(spoof_by_codec, False)
        cells = {POOLED: cell_measures(bona_all, spoof_pooled, costs)}
        if codecs is not None:
            for c, col in enumerate(col_labels[1:]):
                cells[col] = cell_measures(bona_of[c], spoof_by_codec[c], costs)
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
