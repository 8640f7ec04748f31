"""ASVspoof 5 Track 2 (SASV) measures: a-DCF, min t-DCF (ASVspoof 5 variant) and concurrent t-EER.

Plain numpy, no torch (docs/evaluation.md, "Track 2 (SASV)"). The arithmetic follows the official
ASVspoof 5 evaluation package (asvspoof-challenge/asvspoof5, `evaluation-package/`: `a_dcf.py` and
`calculate_modules.py`), so the values equal it to floating-point rounding:

- a-DCF (Shim et al., Odyssey 2024): one DET point per trial of the SASV scores sorted stably
  (target, nontarget, spoof order on ties), minimum of the normalised cost over those points;
- min t-DCF: the revised (2021) t-DCF of the CM scores with fixed ASV error rates, by default the
  organisers' pooled ones (`ORGANISER_ASV_RATES`);
- concurrent t-EER (Kinnunen et al., "Tandem assessment of spoofing countermeasures and automatic
  speaker verification: fundamentals", IEEE/ACM TASLP 2020, and the t-EER paper, IEEE TPAMI 2023):
  the package's `compute_teer` tries every CM threshold at every ASV threshold (N·M work). For a
  fixed ASV threshold its tandem difference Pmiss_tdm − Pfa_tdm is non-decreasing along the CM DET
  points, so the CM point nearest to zero is found by bisection for all ASV thresholds at once:
  O(M log N) and the same point (`teer_exact`), on the ASV thresholds that a lower bound on the
  package's criterion does not rule out (`_rows_that_can_win`). `teer_accelerated` is the package's decimated
  coarse-to-fine search, which can miss that point; the evaluator prints it beside the exact value.

Scores are higher = more target / more bona fide. Every rate is a fraction (the package prints the
t-EER in percent).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from utils.metrics import (
    AsvRates,
    CostModel,
    DetCurve,
    MetricError,
    SortedTrials,
    asv_error_rates,
    check_cm_scores,
    det_curve,
    merged_labels,
    min_tdcf,
    min_tdcf_from_det,
)

#: Spoofing prevalence of the concurrent t-EER; any value in (0, 1) gives the same point (TPAMI 2023).
RHO_SPOOF = 0.5


@dataclass(frozen=True)
class SasvCosts:
    """a-DCF cost model of ASVspoof 5: priors of target / nontarget / spoof trials and the three costs."""

    ptrg: float = (1 - 0.05) * 0.99
    pnontrg: float = (1 - 0.05) * 0.01
    pspf: float = 0.05
    cmiss: float = 1.0
    cfa_asv: float = 10.0
    cfa_cm: float = 10.0


SASV_COSTS = SasvCosts()

#: ASVspoof 5 t-DCF costs: Pspoof 0.05, Cmiss 1, Cfa 10, Cfa_spoof 10 (the 2019 CostModel's defaults).
TDCF_COSTS = CostModel()

#: The organisers' ASV error rates pooled over the ASVspoof 5 evaluation set, used by the official
#: package when no ASV scores are given (Pfa of nontargets, Pmiss of targets, Pfa of spoofs).
ORGANISER_ASV_RATES = AsvRates(
    eer=float("nan"),
    threshold=float("nan"),
    pfa=0.01881016557566423,
    pmiss=0.01880141010575793,
    pmiss_spoof=1 - 0.4607082907604729,
    pfa_spoof=0.4607082907604729,
)


def _need_all(tar: np.ndarray, non: np.ndarray, spf: np.ndarray) -> None:
    for n, what in ((len(tar), "target"), (len(non), "nontarget"), (len(spf), "spoof")):
        if n == 0:
            raise MetricError(f"no {what} trials: the SASV measures need target, nontarget and spoof trials")


def _sorted_labels(tar: np.ndarray, non: np.ndarray, spf: np.ndarray) -> np.ndarray:
    """Labels 0 = target, 1 = nontarget, 2 = spoof in stable ascending score order (ties keep that order)."""
    _need_all(tar, non, spf)
    # Each class sorted on its own (a fast unstable sort: equal scores of one class are interchangeable),
    # then merged as the package's stable sort of the concatenation orders them.
    groups = tuple(np.sort(np.asarray(x, dtype=np.float64)) for x in (tar, non, spf))
    return merged_labels(groups)


def a_dcf(tar: np.ndarray, non: np.ndarray, spf: np.ndarray, costs: SasvCosts = SASV_COSTS) -> float:
    """Normalised minimum a-DCF of SASV scores: tar (T,), non (N,), spf (S,) float64, higher = accept.

    Cost at each of the T + N + S + 1 DET points (one per trial, stable sort): Cmiss·Ptrg·Pmiss +
    Cfa_asv·Pnontrg·Pfa_non + Cfa_cm·Pspf·Pfa_spf, divided by min(all-accept cost, all-reject cost).
    Rejecting a nontarget or spoof lowers the cost and rejecting a target raises it (each term is
    monotone, rounding included), so the minimum lies at the point just before a target is rejected
    or at the last point; only those are evaluated, from one sort per class.
    """
    _need_all(tar, non, spf)
    tar_sorted = np.sort(tar)
    # Ties: targets come first in the package's order, so only strictly lower others are rejected.
    n_rej = np.append(np.searchsorted(np.sort(non), tar_sorted, side="left"), len(non))
    s_rej = np.append(np.searchsorted(np.sort(spf), tar_sorted, side="left"), len(spf))
    t_rej = np.arange(len(tar) + 1)
    frr = t_rej / len(tar)
    far_asv = (len(non) - n_rej) / len(non)
    far_cm = (len(spf) - s_rej) / len(spf)
    cost = (costs.cmiss * costs.ptrg) * frr + (costs.cfa_asv * costs.pnontrg) * far_asv
    cost = cost + (costs.cfa_cm * costs.pspf) * far_cm
    all_accept = costs.cfa_asv * costs.pnontrg + costs.cfa_cm * costs.pspf
    return float(np.min(cost / min(all_accept, costs.cmiss * costs.ptrg)))


def asv_rates_from_scores(tar: np.ndarray, non: np.ndarray, spf: np.ndarray) -> AsvRates:
    """ASV error rates at the ASV EER threshold (target vs nontarget), as the package derives them.

    The package's `calculate_aDCF_tdcf_tEER` takes the third value of `obtain_asv_error_rates`, the
    fraction of spoofs the ASV *rejects*, as Pfa_spf; this keeps that choice so the min t-DCF equals it.
    """
    rates = asv_error_rates(tar, non, spf)
    return AsvRates(rates.eer, rates.threshold, rates.pfa, rates.pmiss, rates.pfa_spoof, rates.pmiss_spoof)


def sasv_min_tdcf(bona_cm: np.ndarray, spoof_cm: np.ndarray, asv: AsvRates = ORGANISER_ASV_RATES) -> float:
    """Normalised min t-DCF of CM scores (B,) bona fide and (S,) spoof: revised 2021 form, `TDCF_COSTS`."""
    return min_tdcf(bona_cm, spoof_cm, asv, TDCF_COSTS, revised=True)


@dataclass(frozen=True)
class AsvCurves:
    """ASV error curves over the T + N + S + 1 thresholds (one per trial, stable sort): arrays (M,)."""

    pmiss: np.ndarray
    pfa_non: np.ndarray
    pfa_spf: np.ndarray


def asv_curves(tar: np.ndarray, non: np.ndarray, spf: np.ndarray) -> AsvCurves:
    """Pmiss of targets and Pfa of nontargets and spoofs at every ASV threshold (the package's arithmetic)."""
    labels = _sorted_labels(tar, non, spf)
    curves = np.empty((3, labels.size + 1))
    hit = np.empty(labels.size, dtype=bool)
    count = np.int32 if labels.size < 2**31 else np.int64
    for k, (curve, n) in enumerate(zip(curves, (len(tar), len(non), len(spf)), strict=True)):
        # counts up to each point (exact in float64), over the class size; Pfa counts down from 1
        curve[0] = 0.0
        np.divide(np.cumsum(np.equal(labels, k, out=hit), dtype=count), n, out=curve[1:])
        if k:
            np.subtract(1, curve, out=curve)
    return AsvCurves(*curves)


def _tandem_gap(cm: DetCurve, a: np.ndarray, b: np.ndarray, c: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Pmiss_tdm − Pfa_tdm at CM points `i`, ASV rates (a, b, c) = (Pmiss, Pfa_non, Pfa_spf); broadcast."""
    pm, pf = cm.frr[i], cm.far[i]
    pmiss_tdm = pm + (1 - pm) * a
    pfa_tdm = (1 - RHO_SPOOF) * (1 - pm) * b + RHO_SPOOF * pf * c
    return pmiss_tdm - pfa_tdm


def _first_nonnegative(cm: DetCurve, asv: AsvCurves, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per ASV threshold, the first CM point in [lo, hi) with a non-negative tandem gap (hi if none).

    Bisection for all thresholds at once; `lo` and `hi` (int arrays, (M,)) are updated in place.
    Narrow brackets step together on whole arrays (cheaper than indexing the unfinished ones).
    """
    a, b, c = asv.pmiss, asv.pfa_non, asv.pfa_spf
    narrow = np.flatnonzero(hi - lo <= 64)
    if narrow.size:
        la, ha = lo[narrow], hi[narrow]
        an, bn, cn = a[narrow], b[narrow], c[narrow]
        for _ in range(int((ha - la).max()).bit_length()):
            open_ = la < ha
            mid = (la + ha) // 2
            up = _tandem_gap(cm, an, bn, cn, np.minimum(mid, cm.frr.size - 1)) >= 0
            ha = np.where(open_ & up, mid, ha)
            la = np.where(open_ & ~up, mid + 1, la)
        lo[narrow], hi[narrow] = la, ha
    active = np.flatnonzero(lo < hi)
    while active.size:
        mid = (lo[active] + hi[active]) // 2
        up = _tandem_gap(cm, a[active], b[active], c[active], mid) >= 0
        hi[active[up]] = mid[up]
        lo[active[~up]] = mid[~up] + 1
        active = active[lo[active] < hi[active]]
    return lo


def _nearest_cm_points(cm: DetCurve, asv: AsvCurves, stride: int = 128) -> np.ndarray:
    """For every ASV threshold, the first CM point minimising |Pmiss_tdm − Pfa_tdm|: int array (M,).

    The gap grows along the CM points and, at a fixed CM point, with the ASV threshold (Pmiss_asv
    rises, both Pfa fall), so the crossing moves down as the ASV threshold rises. A full bisection
    at every `stride`-th threshold brackets the crossing of those in between, whose bisections are
    then short. The package's first-minimum rule is applied on the few points around each crossing
    (the gap is monotone up to rounding, hence the margins).
    """
    n_asv, n_points = asv.pmiss.size, cm.frr.size
    coarse = np.unique(np.append(np.arange(0, n_asv, stride), n_asv - 1))
    lo = np.zeros(coarse.size, dtype=np.int64)
    k = _first_nonnegative(cm, _take_asv(asv, coarse), lo, np.full(coarse.size, n_points, dtype=np.int64))
    seg = np.searchsorted(coarse, np.arange(n_asv), side="right") - 1
    margin = 3
    hi = np.minimum(k[seg] + margin, n_points)
    lo = np.maximum(k[np.minimum(seg + 1, coarse.size - 1)] - margin, 0)
    crossing = _first_nonnegative(cm, asv, lo, hi)
    window = np.clip(crossing[:, None] + np.arange(-2, 2), 0, n_points - 1)
    a, b, c = asv.pmiss[:, None], asv.pfa_non[:, None], asv.pfa_spf[:, None]
    gaps = np.abs(_tandem_gap(cm, a, b, c, window))
    return window[np.arange(n_asv), np.argmin(gaps, axis=1)]


def _take_asv(asv: AsvCurves, sel: np.ndarray | slice) -> AsvCurves:
    return AsvCurves(asv.pmiss[sel], asv.pfa_non[sel], asv.pfa_spf[sel])


def _criterion(cm: DetCurve, asv: AsvCurves, rows: np.ndarray, cm_idx: np.ndarray) -> np.ndarray:
    """|Pfa_non/Pfa_spf − Pfa_cm/(1 − Pmiss_cm)| of ASV thresholds ``rows`` at CM points ``cm_idx``, as the
    package computes it; inf where it is not a number."""
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = np.abs(asv.pfa_non[rows] / asv.pfa_spf[rows] - cm.far[cm_idx] / (1 - cm.frr[cm_idx]))
    crit[~(crit < np.inf)] = np.inf
    return crit


def _rows_that_can_win(cm: DetCurve, asv: AsvCurves, rows: np.ndarray, stride: int = 256) -> np.ndarray:
    """The ASV thresholds among ``rows`` (sorted) whose criterion may be the smallest: every ``stride``-th
    one, and those of each stretch between two of them that a lower bound does not rule out.

    Within a stretch, Pfa_non/Pfa_spf lies between its smallest and largest value there, and the CM point
    between the (monotone) points of the stretch's ends, give or take the margins of `_nearest_cm_points`,
    so Pfa_cm/(1 − Pmiss_cm) lies between its extremes over those points; the criterion is at least the
    gap between the two ranges (computed as the package computes the criterion, so rounding cannot undercut
    it). Stretches whose gap exceeds the best criterion of the sampled thresholds cannot hold the minimum.
    """
    if rows.size <= 4 * stride:
        return rows
    coarse = np.append(np.arange(0, rows.size, stride), rows.size - 1)
    coarse = np.unique(coarse)
    cm_coarse = _nearest_cm_points(cm, _take_asv(asv, rows[coarse]))
    best = float(np.min(_criterion(cm, asv, rows[coarse], cm_coarse)))
    if not best < np.inf:
        return rows
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_asv = asv.pfa_non[rows] / asv.pfa_spf[rows]
        ratio_cm = cm.far / (1 - cm.frr)
    # Stretch t: rows coarse[t]..coarse[t+1]; its CM points run from cm_coarse[t+1] up to cm_coarse[t]
    # (both included, and `margin` points beyond either end), so in reverse the stretches tile the CM
    # points: one reduceat gives each stretch's extremes, the margins are gathered (NaN: no bound).
    if np.any(np.diff(cm_coarse) > 0):
        return rows  # not monotone after all (rounding): no bound
    back = cm_coarse[::-1]
    margin = np.arange(-8, 9)
    around = ratio_cm[np.clip(np.concatenate((back[:-1, None], back[1:, None]), axis=1)[:, :, None] + margin,
                              0, ratio_cm.size - 1).reshape(back.size - 1, -1)]  # fmt: skip
    cm_min = np.minimum(np.minimum.reduceat(ratio_cm, back[:-1]), around.min(axis=1))[::-1]
    cm_max = np.maximum(np.maximum.reduceat(ratio_cm, back[:-1]), around.max(axis=1))[::-1]
    asv_min = np.minimum.reduceat(ratio_asv, coarse[:-1])
    asv_max = np.maximum.reduceat(ratio_asv, coarse[:-1])
    asv_min = np.minimum(asv_min, ratio_asv[coarse[1:]])
    asv_max = np.maximum(asv_max, ratio_asv[coarse[1:]])
    gap = np.maximum(cm_min - asv_max, asv_min - cm_max)
    hopeless = gap > best  # False where any value is NaN: such stretches are kept
    keep = np.zeros(rows.size, dtype=bool)
    keep[coarse] = True
    starts, stops = coarse[:-1][~hopeless], coarse[1:][~hopeless]
    for i, j in zip(starts.tolist(), stops.tolist(), strict=True):
        keep[i:j] = True
    return rows[keep]


def teer_search(cm: DetCurve, asv: AsvCurves) -> tuple[float, int, int] | None:
    """The package's concurrent t-EER point: (t-EER as a fraction, ASV index, CM index), or None.

    Among ASV thresholds where Pmiss_asv < ½(Pfa_non + Pfa_spf), each with its nearest CM point,
    the first whose |Pfa_non/Pfa_spf − Pfa_cm/(1 − Pmiss_cm)| is smallest; the t-EER there is
    Pfa_spf·Pfa_cm. None when no threshold qualifies (the package fails there).
    """
    a, b, c = asv.pmiss, asv.pfa_non, asv.pfa_spf
    # Only thresholds in the allowed region with spoofs accepted can win (Pfa_spf = 0 makes the
    # criterion infinite or NaN, which the package never picks), so only those need a CM point.
    bound = (1 - RHO_SPOOF) * b
    bound += RHO_SPOOF * c
    allowed = np.less(a, bound, out=np.empty(a.size, dtype=bool))
    allowed &= c > 0
    rows = np.flatnonzero(allowed)
    if rows.size == 0:
        return None
    rows = _rows_that_can_win(cm, asv, rows)
    cm_idx = _nearest_cm_points(cm, _take_asv(asv, rows))
    crit = _criterion(cm, asv, rows, cm_idx)
    k = int(np.argmin(crit))
    if not crit[k] < np.inf:
        return None
    j, i = int(rows[k]), int(cm_idx[k])
    return float(c[j] * cm.far[i]), j, i


def _take(cm: DetCurve, asv: AsvCurves, cm_sel: np.ndarray | slice, asv_sel: np.ndarray | slice):
    return DetCurve(cm.frr[cm_sel], cm.far[cm_sel], cm.thresholds[cm_sel]), _take_asv(asv, asv_sel)


def teer_accelerated(
    cm: DetCurve, asv: AsvCurves, size_decimated: int = 3000, bin_width: int = 1600
) -> float | None:
    """The package's `compute_teer_accelerated` (a fraction, or None where the package fails).

    Search every (len // size_decimated)-th ASV and CM point, then every point within `bin_width`
    of the one found; without decimation (fewer than `size_decimated` points) this is the exact t-EER.
    """
    ds_asv = asv.pmiss.size // size_decimated
    ds_cm = cm.frr.size // size_decimated
    if ds_asv == 0 or ds_cm == 0:
        found = teer_search(cm, asv)
        return None if found is None else found[0]
    coarse = teer_search(*_take(cm, asv, slice(None, None, ds_cm), slice(None, None, ds_asv)))
    if coarse is None:
        return None
    j, i = coarse[1] * ds_asv, coarse[2] * ds_cm
    asv_sel = slice(max(j - bin_width, 0), min(j + bin_width, asv.pmiss.size))
    cm_sel = slice(max(i - bin_width, 0), min(i + bin_width, cm.frr.size))
    fine = teer_search(*_take(cm, asv, cm_sel, asv_sel))
    return None if fine is None else fine[0]


@dataclass(frozen=True)
class TandemTrials:
    """CM and ASV scores of one SASV trial list, split by ASV label: each array (T,), (N,) or (S,)."""

    cm_tar: np.ndarray
    cm_non: np.ndarray
    cm_spf: np.ndarray
    asv_tar: np.ndarray
    asv_non: np.ndarray
    asv_spf: np.ndarray

    def curves(self) -> tuple[DetCurve, AsvCurves]:
        """CM DET curve (target + nontarget vs spoof) and ASV curves, paired as in the package."""
        cm = det_curve(np.concatenate((self.cm_tar, self.cm_non)), self.cm_spf)
        return cm, asv_curves(self.asv_tar, self.asv_non, self.asv_spf)


@dataclass(frozen=True)
class TEer:
    """Concurrent t-EER (fractions): `exact` over all threshold pairs, `approx` the package's decimated."""

    exact: float | None
    approx: float | None


def sasv_measures(
    trials: TandemTrials,
    sasv: tuple[np.ndarray, np.ndarray, np.ndarray],
    asv_rates: AsvRates = ORGANISER_ASV_RATES,
    approx: bool = True,
) -> dict[str, float | None]:
    """a_dcf of the SASV scores (target, nontarget, spoof), min_tdcf and t_eer of the CM and ASV scores
    (fractions); with `approx` also t_eer_package. The CM scores are sorted once for both CM measures."""
    # The ASV curves and the CM curve are independent sorts and merges: numpy releases the GIL in them, so
    # a second thread builds the ASV curves while this one does the CM side and the a-DCF.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="asv_curves") as pool:
        asv_job = pool.submit(asv_curves, trials.asv_tar, trials.asv_non, trials.asv_spf)
        cm_trials = SortedTrials(np.concatenate((trials.cm_tar, trials.cm_non)), trials.cm_spf)
        check_cm_scores(cm_trials)
        cm = cm_trials.det()
        out = {"a_dcf": a_dcf(*sasv), "min_tdcf": min_tdcf_from_det(cm, asv_rates, TDCF_COSTS, revised=True)}
        asv = asv_job.result()
    found = teer_search(cm, asv)
    out["t_eer"] = None if found is None else found[0]
    if approx:
        out["t_eer_package"] = teer_accelerated(cm, asv)
    return out


def t_eer(trials: TandemTrials, with_approx: bool = True) -> TEer:
    """Exact concurrent t-EER of a tandem trial list and, if asked, the package's approximation."""
    cm, asv = trials.curves()
    found = teer_search(cm, asv)
    approx = teer_accelerated(cm, asv) if with_approx else None
    return TEer(None if found is None else found[0], approx)
