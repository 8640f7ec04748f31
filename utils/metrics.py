"""ASVspoof 2019 metrics: EER, ASV error rates, legacy 2019 and revised 2021 min t-DCF (docs/evaluation.md).

Plain numpy, no torch. The numbers are bit-identical to the official ASVspoof 2019 / 2021
evaluation code: the same DET points (one per trial, stable sort with bona fide / target scores
first, so ties count as in the official code) and the same floating-point operations.

Speed: `SortedTrials` sorts the CM scores once; the DET curve of any subset (e.g. bona fide plus
one attack) is a boolean selection of that sorted order followed by cumulative sums, which gives
the same order a fresh stable sort of the subset would give.

Also the ASVspoof 5 measures (minDCF, actDCF, Cllr), which need no ASV scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from utils.errors import UserError


class MetricError(UserError):
    """Scores or costs the official code refuses (NaN, binary decisions, bad priors, ...).

    The message has no file name; `source` says what is at fault ("cm" scores, "asv" scores or
    "costs") so that a caller that knows the file names can prefix the right one.
    """

    def __init__(self, message: str, source: str = "cm"):
        super().__init__(message)
        self.source = source


@dataclass(frozen=True)
class CostModel:
    """t-DCF cost model of the ASVspoof 2019 evaluation plan (also used by the 2021 revision).

    Priors: Pspoof; Ptar and Pnon default to (1 − Pspoof)·0.99 and (1 − Pspoof)·0.01.
    `cfa_spoof` is only used by the revised 2021 t-DCF.
    """

    pspoof: float = 0.05
    ptar: float | None = None
    pnon: float | None = None
    cmiss_asv: float = 1.0
    cfa_asv: float = 10.0
    cmiss_cm: float = 1.0
    cfa_cm: float = 10.0
    cfa_spoof: float = 10.0

    def __post_init__(self) -> None:
        # Same expressions as the official scripts, so the priors are bit-identical.
        if self.ptar is None:
            object.__setattr__(self, "ptar", (1 - self.pspoof) * 0.99)
        if self.pnon is None:
            object.__setattr__(self, "pnon", (1 - self.pspoof) * 0.01)
        priors = (self.ptar, self.pnon, self.pspoof)
        # Same tolerance as the official compute_tDCF.
        if min(priors) < 0 or abs(sum(priors) - 1) > 1e-10:
            raise MetricError(
                f"the prior probabilities must be non-negative and sum to one "
                f"(Ptar {self.ptar} + Pnon {self.pnon} + Pspoof {self.pspoof} = {sum(priors)})",
                source="costs",
            )


DEFAULT_COSTS = CostModel()


@dataclass(frozen=True)
class DetCurve:
    """DET points, one per trial plus the all-accept point: arrays of shape (N + 1,).

    Point k rejects the k lowest scores: `frr[k]` is the fraction of positives (bona fide / target)
    rejected, `far[k]` the fraction of negatives accepted, `thresholds[k]` the k-th smallest score
    (`thresholds[0]` = lowest score − 0.001).
    """

    frr: np.ndarray
    far: np.ndarray
    thresholds: np.ndarray


def det_from_sorted(sorted_scores: np.ndarray, sorted_is_pos: np.ndarray) -> DetCurve:
    """DET points from scores sorted stably (positives first); the same arithmetic as the official code
    (its float64 running counts are exact integers, computed here as integers and divided once)."""
    n = sorted_scores.size
    pos = np.cumsum(sorted_is_pos, dtype=np.int64)  # positives up to and including each point
    n_pos = int(pos[-1]) if n else 0
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MetricError(
            f"need both classes to compute a DET curve (got {n_pos} positive, {n_neg} negative)"
        )
    frr, far, thresholds = np.empty(n + 1), np.empty(n + 1), np.empty(n + 1)
    frr[0], far[0], thresholds[0] = 0.0, 1.0, sorted_scores[0] - 0.001
    np.divide(pos, n_pos, out=frr[1:])
    neg_left = np.arange(n_neg - 1, n_neg - 1 - n, -1, dtype=np.int64)  # n_neg − (k + 1) ...
    neg_left += pos  # ... + positives so far: the negatives still above point k
    np.divide(neg_left, n_neg, out=far[1:])
    thresholds[1:] = sorted_scores
    return DetCurve(frr, far, thresholds)


def _merge_places(groups: Sequence[np.ndarray]) -> tuple[int, np.ndarray, list[np.ndarray]]:
    """(the largest group's index, group index (n,) int8 of each merged value, each group's places in the
    merged order) for arrays each sorted ascending, ordered as a stable sort of their concatenation (among
    equal values, earlier groups first). The largest group's places are not searched: it fills the places
    the others leave, in its own order (its entry is an empty array)."""
    largest = max(range(len(groups)), key=lambda k: groups[k].size, default=0)
    labels = np.full(sum(g.size for g in groups), largest, dtype=np.int8)
    places = []
    for k, group in enumerate(groups):
        if k == largest:
            places.append(np.zeros(0, dtype=np.int64))
            continue
        # After the smaller values of its own group, the equal-or-smaller ones of earlier groups and the
        # strictly smaller ones of later groups.
        at = np.arange(group.size)
        for h, other in enumerate(groups):
            if h != k:
                at += np.searchsorted(other, group, side="right" if h < k else "left")
        labels[at] = k
        places.append(at)
    return largest, labels, places


def merged_labels(groups: Sequence[np.ndarray]) -> np.ndarray:
    """The group index (n,) int8 of each value of sorted arrays merged as `stable_merge` merges them."""
    return _merge_places(groups)[1]


def stable_merge(groups: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Arrays each sorted ascending, merged without sorting: (values (n,), group index (n,) int8) in the
    order a stable sort of their concatenation gives (among equal values, earlier groups first)."""
    largest, labels, places = _merge_places(groups)
    values = np.empty(labels.size, dtype=np.result_type(*groups) if groups else np.float64)
    for k, (group, at) in enumerate(zip(groups, places, strict=True)):
        if k != largest:
            values[at] = group
    if groups:
        values[labels == largest] = groups[largest]
    return values, labels


class SortedTrials:
    """Scores of positives and negatives sorted once; DET curves of any subset of the negatives.

    `neg_groups` (optional, one label per negative trial, e.g. the attack id) lets `det(group)` return
    the DET curve of all positives against the negatives of one group without sorting again;
    `group_names` lists the groups, sorted.
    """

    def __init__(self, pos_scores: np.ndarray, neg_scores: np.ndarray, neg_groups: np.ndarray | None = None):
        pos = np.asarray(pos_scores, dtype=np.float64).ravel()
        neg = np.asarray(neg_scores, dtype=np.float64).ravel()
        self.n_pos = pos.size
        self.n_neg = neg.size
        self._neg_groups: np.ndarray | None = None
        self.group_names: np.ndarray = np.array([], dtype=str)
        if neg_groups is None:
            # Each class sorted on its own (a fast unstable sort), then merged with the positives first on
            # ties: the order of the official code's stable sort of positives then negatives.
            self.scores, labels = stable_merge((np.sort(pos), np.sort(neg)))
            self.is_pos = labels == 0
        else:
            scores = np.concatenate((pos, neg))
            # mergesort is stable: on ties the positives (placed first) stay first, as in the official code.
            order = np.argsort(scores, kind="mergesort")
            self.scores = scores[order]
            self.is_pos = order < pos.size
            neg_groups = np.asarray(neg_groups)
            if neg_groups.shape != neg.shape:
                raise ValueError(f"neg_groups has shape {neg_groups.shape}, expected {neg.shape}")
            # Positives get no group; -1 never matches a group index.
            self.group_names, codes = np.unique(neg_groups, return_inverse=True)
            all_codes = np.concatenate((np.full(pos.size, -1), codes))
            self._neg_groups = all_codes[order]

    def det(self, group: str | None = None) -> DetCurve:
        """DET curve of all positives against all negatives, or against the negatives of `group`."""
        if group is None:
            return det_from_sorted(self.scores, self.is_pos)
        keep = self.is_pos | (self._group_codes() == self._group_code(group))
        return det_from_sorted(self.scores[keep], self.is_pos[keep])

    def n_unique(self, group: str | None = None) -> int:
        """Number of distinct scores among all trials (or the positives plus the negatives of `group`)."""
        s = self.scores
        if group is not None:
            s = s[self.is_pos | (self._group_codes() == self._group_code(group))]
        return int(s.size > 0) + int(np.count_nonzero(s[1:] != s[:-1]))

    def _group_codes(self) -> np.ndarray:
        if self._neg_groups is None:
            raise ValueError("SortedTrials was built without neg_groups")
        return self._neg_groups

    def _group_code(self, group: str) -> int:
        hits = np.flatnonzero(self.group_names == group)
        if hits.size == 0:
            raise KeyError(group)
        return int(hits[0])


def det_curve(pos_scores: np.ndarray, neg_scores: np.ndarray) -> DetCurve:
    """DET curve of positive (bona fide / target) vs negative scores, as the official `compute_det_curve`."""
    return SortedTrials(pos_scores, neg_scores).det()


def eer_from_det(det: DetCurve) -> tuple[float, float]:
    """(EER, threshold) at the first DET point minimising |frr − far|; EER is the mean of the two rates."""
    k = int(np.argmin(np.abs(det.frr - det.far)))
    return float(np.mean((det.frr[k], det.far[k]))), float(det.thresholds[k])


def compute_eer(pos_scores: np.ndarray, neg_scores: np.ndarray) -> tuple[float, float]:
    """(EER as a fraction, threshold) of positives vs negatives; higher score = more positive."""
    return eer_from_det(det_curve(pos_scores, neg_scores))


@dataclass(frozen=True)
class AsvRates:
    """ASV error rates at `threshold` (the ASV EER threshold, target vs nontarget); fractions."""

    eer: float
    threshold: float
    pfa: float
    pmiss: float
    pmiss_spoof: float
    pfa_spoof: float


def asv_rates_at(
    tar: np.ndarray, non: np.ndarray, spoof: np.ndarray, threshold: float, eer: float
) -> AsvRates:
    """ASV rates at a given threshold: Pfa (nontarget ≥ τ), Pmiss (target < τ), spoof miss/accept rates."""
    spoof = np.asarray(spoof, dtype=np.float64)
    if spoof.size == 0:
        raise MetricError("the ASV scores have no spoof trials; the t-DCF needs them", source="asv")
    tar = np.asarray(tar, dtype=np.float64)
    non = np.asarray(non, dtype=np.float64)
    n_spoof_miss = int(np.count_nonzero(spoof < threshold))
    return AsvRates(
        eer=eer,
        threshold=threshold,
        pfa=int(np.count_nonzero(non >= threshold)) / non.size,
        pmiss=int(np.count_nonzero(tar < threshold)) / tar.size,
        pmiss_spoof=n_spoof_miss / spoof.size,
        pfa_spoof=(spoof.size - n_spoof_miss) / spoof.size,
    )


def asv_error_rates(tar: np.ndarray, non: np.ndarray, spoof: np.ndarray) -> AsvRates:
    """ASV EER (target vs nontarget) and the error rates at its threshold, as the official script."""
    eer, threshold = compute_eer(tar, non)
    return asv_rates_at(tar, non, spoof, threshold, eer)


def tdcf_legacy_constants(asv: AsvRates, cost: CostModel = DEFAULT_COSTS) -> tuple[float, float]:
    """(C1, C2) of the 2019 t-DCF: tDCF = C1·Pmiss_cm + C2·Pfa_cm."""
    c1 = cost.ptar * (cost.cmiss_cm - cost.cmiss_asv * asv.pmiss) - cost.pnon * cost.cfa_asv * asv.pfa
    c2 = cost.cfa_cm * cost.pspoof * (1 - asv.pmiss_spoof)
    if c1 < 0 or c2 < 0:
        raise MetricError(
            f"t-DCF constants must be non-negative (C1 {c1}, C2 {c2}): the ASV error rates are too high",
            source="asv",
        )
    return c1, c2


def tdcf_2021_constants(asv: AsvRates, cost: CostModel = DEFAULT_COSTS) -> tuple[float, float, float]:
    """(C0, C1, C2) of the revised 2021 t-DCF: tDCF = C0 + C1·Pmiss_cm + C2·Pfa_cm.

    Uses `cmiss_asv` and `cfa_asv` as the 2021 package's single Cmiss and Cfa.
    """
    c0 = cost.ptar * cost.cmiss_asv * asv.pmiss + cost.pnon * cost.cfa_asv * asv.pfa
    c1 = cost.ptar * cost.cmiss_asv - c0
    c2 = cost.pspoof * cost.cfa_spoof * asv.pfa_spoof
    if c1 < 0 or c2 < 0:
        raise MetricError(
            f"t-DCF constants must be non-negative (C1 {c1}, C2 {c2}): the ASV error rates are too high",
            source="asv",
        )
    return c0, c1, c2


def min_tdcf_from_det(
    cm_det: DetCurve, asv: AsvRates, cost: CostModel = DEFAULT_COSTS, revised: bool = False
) -> float:
    """Normalised min t-DCF over the CM DET points (bona fide positive); legacy 2019 or revised 2021."""
    if revised:
        c0, c1, c2 = tdcf_2021_constants(asv, cost)
        tdcf = c0 + c1 * cm_det.frr + c2 * cm_det.far
        return float(np.min(tdcf / (c0 + min(c1, c2))))
    c1, c2 = tdcf_legacy_constants(asv, cost)
    tdcf = c1 * cm_det.frr + c2 * cm_det.far
    return float(np.min(tdcf / min(c1, c2)))


def check_cm_scores(trials: SortedTrials, group: str | None = None) -> None:
    """The official checks on CM scores: finite, and at least 3 distinct values (soft scores)."""
    if not np.all(np.isfinite(trials.scores)):
        raise MetricError("the CM scores contain NaN or inf")
    if trials.n_unique(group) < 3:
        raise MetricError("the CM scores have fewer than 3 distinct values: give soft scores, not decisions")


def min_tdcf(
    bonafide_scores: np.ndarray,
    spoof_scores: np.ndarray,
    asv: AsvRates,
    cost: CostModel = DEFAULT_COSTS,
    revised: bool = False,
) -> float:
    """Normalised min t-DCF of CM scores (higher = bona fide), with the official input checks."""
    trials = SortedTrials(bonafide_scores, spoof_scores)
    check_cm_scores(trials)
    return min_tdcf_from_det(trials.det(), asv, cost, revised)


# ASVspoof 5 measures (docs/evaluation.md); the scores are bona fide-vs-spoof LLRs for actDCF and Cllr.


@dataclass(frozen=True)
class DcfCosts:
    """ASVspoof 5 cost model: spoof prior, cost of rejecting bona fide, cost of accepting spoof."""

    pspoof: float = 0.05
    cmiss: float = 1.0
    cfa: float = 10.0


ASVSPOOF5_COSTS = DcfCosts()


def normalised_dcf(pmiss, pfa, pspoof: float, cmiss: float, cfa: float):
    """ASVspoof 5 DCF Cmiss·(1−Pspoof)·Pmiss + Cfa·Pspoof·Pfa over min(Cmiss·(1−Pspoof), Cfa·Pspoof)."""
    return (cmiss * (1 - pspoof) * pmiss + cfa * pspoof * pfa) / min(cmiss * (1 - pspoof), cfa * pspoof)


def min_dcf(
    bonafide_scores: np.ndarray,
    spoof_scores: np.ndarray,
    pspoof: float = 0.05,
    cmiss: float = 1.0,
    cfa: float = 10.0,
) -> tuple[float, float]:
    """(minDCF, threshold) of ASVspoof 5: min over DET points of Cmiss·(1−Pspoof)·Pmiss + Cfa·Pspoof·Pfa,

    normalised by min(Cmiss·(1−Pspoof), Cfa·Pspoof) (= 0.5 with the defaults).
    """
    det = det_curve(bonafide_scores, spoof_scores)
    dcf = normalised_dcf(det.frr, det.far, pspoof, cmiss, cfa)
    k = int(np.argmin(dcf))
    return float(dcf[k]), float(det.thresholds[k])


def act_dcf(
    bonafide_scores: np.ndarray,
    spoof_scores: np.ndarray,
    pspoof: float = 0.05,
    cmiss: float = 1.0,
    cfa: float = 10.0,
) -> tuple[float, float]:
    """(actDCF, threshold) of ASVspoof 5: DCF at the Bayes threshold −ln(Cmiss·(1−Pspoof)/(Cfa·Pspoof))."""
    bona = np.asarray(bonafide_scores, dtype=np.float64)
    spoof = np.asarray(spoof_scores, dtype=np.float64)
    threshold = -np.log(cmiss * (1 - pspoof) / (cfa * pspoof))
    pmiss = np.count_nonzero(bona < threshold) / bona.size
    pfa = np.count_nonzero(spoof >= threshold) / spoof.size
    return float(normalised_dcf(pmiss, pfa, pspoof, cmiss, cfa)), float(threshold)


def cllr(bonafide_scores: np.ndarray, spoof_scores: np.ndarray) -> float:
    """Cllr in bits: ½[mean log2(1 + e^−s) over bona fide + mean log2(1 + e^s) over spoof]; s = LLR (nats)."""
    bona = np.asarray(bonafide_scores, dtype=np.float64)
    spoof = np.asarray(spoof_scores, dtype=np.float64)
    # logaddexp(0, x) = ln(1 + e^x) without overflow for large |x|.
    return float(0.5 * (np.mean(np.logaddexp(0, -bona)) + np.mean(np.logaddexp(0, spoof))) / np.log(2))


def evaluate_cm(
    bonafide: np.ndarray,
    spoof: np.ndarray,
    spoof_attacks: np.ndarray | None = None,
    asv_tar: np.ndarray | None = None,
    asv_non: np.ndarray | None = None,
    asv_spoof: np.ndarray | None = None,
    asv_spoof_attacks: np.ndarray | None = None,
    cost: CostModel = DEFAULT_COSTS,
) -> dict:
    """Pooled and per-attack EER and min t-DCF of CM scores (higher = bona fide); all rates are fractions.

    `spoof_attacks` (one attack id per spoof score) enables the per-attack breakdown. With the ASV
    scores (target, nontarget, spoof, and the attack id of each ASV spoof score) the legacy and 2021
    min t-DCF are computed; the ASV threshold is the pooled ASV EER threshold and each attack's t-DCF
    uses that attack's ASV spoof scores. Without them the t-DCF values are None.
    Returns the dict written by ``evaluate_tDCF_asvspoof19.py --json``.
    """
    trials = SortedTrials(bonafide, spoof, spoof_attacks)
    check_cm_scores(trials)
    det = trials.det()
    eer, threshold = eer_from_det(det)
    result: dict = {
        "eer": eer,
        "eer_threshold": threshold,
        "min_tdcf": None,
        "min_tdcf_2021": None,
        "n_bonafide": trials.n_pos,
        "n_spoof": trials.n_neg,
        "asv": None,
        "per_attack": {},
    }
    asv: AsvRates | None = None
    if asv_tar is not None and asv_non is not None and asv_spoof is not None:
        asv = asv_error_rates(asv_tar, asv_non, asv_spoof)
        result["asv"] = {
            "eer": asv.eer,
            "threshold": asv.threshold,
            "pfa": asv.pfa,
            "pmiss": asv.pmiss,
            "pmiss_spoof": asv.pmiss_spoof,
        }
        result["min_tdcf"] = min_tdcf_from_det(det, asv, cost)
        result["min_tdcf_2021"] = min_tdcf_from_det(det, asv, cost, revised=True)
    if spoof_attacks is None:
        return result
    for attack in trials.group_names.tolist():
        attack_det = trials.det(attack)
        attack_eer, attack_threshold = eer_from_det(attack_det)
        row = {
            "eer": attack_eer,
            "eer_threshold": attack_threshold,
            "min_tdcf": None,
            "min_tdcf_2021": None,
            "n": int(attack_det.frr.size - 1 - trials.n_pos),
        }
        if asv is not None:
            if asv_spoof_attacks is None:
                raise ValueError("per-attack t-DCF needs asv_spoof_attacks")
            attack_asv_spoof = np.asarray(asv_spoof)[np.asarray(asv_spoof_attacks) == attack]
            if attack_asv_spoof.size == 0:
                raise MetricError(
                    f"the ASV scores have no spoof trials of attack {attack} "
                    "(is it the ASV file of the same partition as the CM scores?)",
                    source="asv",
                )
            check_cm_scores(trials, attack)
            attack_asv = asv_rates_at(asv_tar, asv_non, attack_asv_spoof, asv.threshold, asv.eer)
            row["min_tdcf"] = min_tdcf_from_det(attack_det, attack_asv, cost)
            row["min_tdcf_2021"] = min_tdcf_from_det(attack_det, attack_asv, cost, revised=True)
        result["per_attack"][attack] = row
    return result


def min_cllr(bonafide_scores: np.ndarray, spoof_scores: np.ndarray) -> float:
    """minCllr in bits: Cllr after the optimal monotonic (PAV) calibration of the scores (docs/evaluation.md).

    Tied scores form one block before pooling, so the result does not depend on the order of tied
    trials. PAV gives each block the posterior P = n_bonafide/n of the block; its LLR is
    logit(P) − ln(N_bonafide/N_spoof). Pure blocks (P = 0 or 1) have infinite LLRs that cost 0 bits.
    """
    bona = np.asarray(bonafide_scores, dtype=np.float64).ravel()
    spoof = np.asarray(spoof_scores, dtype=np.float64).ravel()
    if bona.size == 0 or spoof.size == 0:
        raise MetricError(f"minCllr needs both classes (got {bona.size} bona fide, {spoof.size} spoof)")
    values, inverse = np.unique(np.concatenate((bona, spoof)), return_inverse=True)
    n_bona = np.bincount(inverse[: bona.size], minlength=values.size)
    n_all = np.bincount(inverse, minlength=values.size)
    return min_cllr_from_counts(n_bona, n_all)


def hull_candidates(x: np.ndarray, y: np.ndarray, fixed: np.ndarray, passes: int = 50) -> np.ndarray:
    """Indices of the points of cumulative (trials, bona fide) diagrams that PAV may still need: a block
    boundary whose left block's posterior is not below the right block's lies above the diagram's convex
    minorant, so PAV pools across it whatever else it pools; removing every such boundary at once, a few
    vectorised passes over, leaves the sequential loop little to do (the same blocks in the end).

    ``x``, ``y``: the points (m,) int64 of one diagram, or of several one after another; ``fixed`` (m,)
    bool marks the points never removed: each diagram's first and last (the segment between two diagrams
    is then never looked at)."""
    index = np.arange(x.size)
    for _ in range(passes):
        dx, dy = x[1:] - x[:-1], y[1:] - y[:-1]
        # interior point k+1 goes when dy[k]/dx[k] >= dy[k+1]/dx[k+1] (integer cross-multiplication)
        drop = (dy[:-1] * dx[1:] >= dy[1:] * dx[:-1]) & ~fixed[1:-1]
        if not drop.any():
            break
        keep = np.concatenate(([True], ~drop, [True]))
        x, y, fixed, index = x[keep], y[keep], fixed[keep], index[keep]
    return index


def min_cllr_from_counts(n_bona: np.ndarray, n_all: np.ndarray) -> float:
    """`min_cllr` from the trial counts per distinct score in ascending score order: bona fide trials and
    all trials, (n_values,) integers each (both classes present)."""
    x = np.concatenate(([0], np.cumsum(n_all, dtype=np.int64)))
    y = np.concatenate(([0], np.cumsum(n_bona, dtype=np.int64)))
    return min_cllr_from_diagram(x, y)


def min_cllr_from_diagram(x: np.ndarray, y: np.ndarray) -> float:
    """`min_cllr` from the cumulative (trials, bona fide) diagram in ascending score order: points (k + 1,)
    int64 from (0, 0) to (N, N_bonafide), one wherever a run of tied scores ends (more, or fewer where the
    dropped ones cannot be corners of its convex minorant, give the same value)."""
    fixed = np.zeros(x.size, dtype=bool)
    fixed[[0, -1]] = True
    # Pure runs (all bona fide or all spoof) are collinear and go in the first vectorised pass.
    kept = hull_candidates(x, y, fixed)
    return min_cllr_from_blocks(np.diff(y[kept]).tolist(), np.diff(x[kept]).tolist())


def min_cllr_from_blocks(block_bona: list[int], block_all: list[int]) -> float:
    """`min_cllr` from the bona fide and trial counts of consecutive blocks in ascending score order, the
    blocks that PAV starts from (lists of ints; pooling them all gives every trial)."""
    n_bona_total, n_all_total = sum(block_bona), sum(block_all)
    n_spoof_total = n_all_total - n_bona_total
    stack_bona: list[int] = []
    stack_all: list[int] = []
    for b, n in zip(block_bona, block_all, strict=True):
        # Pool while the previous block's posterior is not below this one's (integer cross-multiplication).
        while stack_bona and stack_bona[-1] * n >= b * stack_all[-1]:
            b += stack_bona.pop()
            n += stack_all.pop()
        stack_bona.append(b)
        stack_all.append(n)
    nb = np.array(stack_bona, dtype=np.float64)
    ns = np.array(stack_all, dtype=np.float64) - nb
    mixed = (nb > 0) & (ns > 0)
    nb, ns = nb[mixed], ns[mixed]
    llr = np.log(nb / ns) - np.log(n_bona_total / n_spoof_total)
    bits = (nb @ np.logaddexp(0, -llr) / n_bona_total + ns @ np.logaddexp(0, llr) / n_spoof_total) / np.log(2)
    return float(0.5 * bits)


def asvspoof5_measures(
    bonafide_scores: np.ndarray, spoof_scores: np.ndarray, costs: DcfCosts = ASVSPOOF5_COSTS
) -> dict:
    """The ASVspoof 5 measures of bona fide vs spoof scores (docs/evaluation.md) as the evaluator's JSON keys:

    ``min_dcf``, ``min_dcf_threshold``, ``act_dcf``, ``act_threshold`` (= −ln β), ``cllr``, ``min_cllr``
    (bits). actDCF and Cllr are meaningful only for calibrated LLRs (natural log).
    """
    c = (costs.pspoof, costs.cmiss, costs.cfa)
    mindcf, mindcf_threshold = min_dcf(bonafide_scores, spoof_scores, *c)
    actdcf, act_threshold = act_dcf(bonafide_scores, spoof_scores, *c)
    return {
        "min_dcf": mindcf,
        "min_dcf_threshold": mindcf_threshold,
        "act_dcf": actdcf,
        "act_threshold": act_threshold,
        "cllr": cllr(bonafide_scores, spoof_scores),
        "min_cllr": min_cllr(bonafide_scores, spoof_scores),
    }
