"""The ASVspoof 5 evaluation package's Track 2 computation, in its structure (asvspoof-challenge/asvspoof5,
`evaluation-package/a_dcf.py` and `calculate_modules.py`): the per-trial Python loop of the a-DCF DET curve,
the ASV-constrained t-DCF, the quadratic concurrent t-EER and its decimated coarse-to-fine variant.

It is the oracle that tests/test_sasv.py checks utils/sasv.py against, and the baseline that
bench/bench_sasv.py times the exact t-EER against. t-EER values are percent, as the package returns them.
"""

from __future__ import annotations

import numpy as np

# The ASVspoof 5 package's compute_det_curve has the 2019 script's arithmetic.
from official_asvspoof2019 import compute_det_curve as det_curve

PSPOOF = 0.05
PTAR, PNON = (1 - PSPOOF) * 0.99, (1 - PSPOOF) * 0.01
ORG_PFA_NON, ORG_PMISS, ORG_PFA_SPF = 0.01881016557566423, 0.01880141010575793, 0.4607082907604729


def a_dcf(trg: np.ndarray, nontrg: np.ndarray, spf: np.ndarray) -> float:
    scores = np.concatenate((trg, nontrg, spf))
    labels = np.concatenate((np.ones_like(trg), np.zeros_like(nontrg), np.ones_like(spf) + 1))
    labels = labels[np.argsort(scores, kind="mergesort")]
    fp_non, fp_spf, fn = len(nontrg), len(spf), 0
    far_asv, far_cm, frr = [1.0], [1.0], [0.0]
    for lab in labels:
        if lab == 0:
            fp_non -= 1
        elif lab == 1:
            fn += 1
        else:
            fp_spf -= 1
        far_asv.append(fp_non / len(nontrg))
        far_cm.append(fp_spf / len(spf))
        frr.append(fn / len(trg))
    cost = (
        np.array([1 * PTAR]) * np.array(frr)
        + np.array([10 * PNON]) * np.array(far_asv)
        + np.array([10 * PSPOOF]) * np.array(far_cm)
    )
    normed = cost / min(np.array([10 * PNON + 10 * PSPOOF]), np.array([1 * PTAR]))
    return float(normed[np.argmin(normed)])


def asv_curves(tar: np.ndarray, non: np.ndarray, spf: np.ndarray):
    scores = np.concatenate((tar, non, spf))
    labels = np.concatenate((np.ones(tar.size), np.zeros(non.size), -1 * np.ones(spf.size)))
    idx = np.argsort(scores, kind="mergesort")
    labels = labels[idx]
    pmiss = np.concatenate((np.atleast_1d(0), np.cumsum(labels == 1) / tar.size))
    pfa_non = np.concatenate((np.atleast_1d(1), 1 - (np.cumsum(labels == 0) / non.size)))
    pfa_spf = np.concatenate((np.atleast_1d(1), 1 - (np.cumsum(labels == -1) / spf.size)))
    thr = np.concatenate((np.atleast_1d(scores[idx[0]] - 0.001), scores[idx]))
    return pmiss, pfa_non, pfa_spf, thr


def asv_rates(tar: np.ndarray, non: np.ndarray, spf: np.ndarray) -> tuple[float, float, float]:
    """(Pfa_non, Pmiss, Pfa_spf) as calculate_aDCF_tdcf_tEER takes them (its third value: spoofs rejected)."""
    frr, far, thr = det_curve(tar, non)
    t = thr[np.argmin(np.abs(frr - far))]
    pfa = sum(non >= t) / non.size
    pmiss = sum(tar < t) / tar.size
    pmiss_spoof = np.sum(spf < t) / spf.size
    return pfa, pmiss, pmiss_spoof


def min_tdcf(bona_cm, spoof_cm, pfa_non=ORG_PFA_NON, pmiss=ORG_PMISS, pfa_spf=ORG_PFA_SPF) -> float:
    assert np.unique(np.concatenate((bona_cm, spoof_cm))).size >= 3
    pmiss_cm, pfa_cm, _ = det_curve(bona_cm, spoof_cm)
    c0 = PTAR * 1 * pmiss + PNON * 10 * pfa_non
    c1 = PTAR * 1 - (PTAR * 1 * pmiss + PNON * 10 * pfa_non)
    c2 = PSPOOF * 10 * pfa_spf
    curve = (c0 + c1 * pmiss_cm + c2 * pfa_cm) / (c0 + np.minimum(c1, c2))
    return float(curve[np.argmin(curve)])


def compute_teer(pmiss_cm, pfa_cm, tau_cm, pmiss_asv, pfa_non_asv, pfa_spf_asv, tau_asv, return_index=False):
    """Quadratic: every CM point at every ASV point. Raises UnboundLocalError where the package does."""
    rho = 0.5
    best = np.inf
    for j in range(len(tau_asv)):
        pmiss_tdm = pmiss_cm + (1 - pmiss_cm) * pmiss_asv[j]
        pfa_tdm = (1 - rho) * (1 - pmiss_cm) * pfa_non_asv[j] + rho * pfa_cm * pfa_spf_asv[j]
        tmp = np.argmin(abs(pmiss_tdm - pfa_tdm))
        if pmiss_asv[j] < (1 - rho) * pfa_non_asv[j] + rho * pfa_spf_asv[j]:
            with np.errstate(divide="ignore", invalid="ignore"):
                crit = abs(pfa_non_asv[j] / pfa_spf_asv[j] - pfa_cm[tmp] / (1 - pmiss_cm[tmp]))
            if crit < best:
                best = crit
                teer = pfa_spf_asv[j] * pfa_cm[tmp]
                index = [j, tmp]
    return (teer * 100, index) if return_index else teer * 100  # noqa: F821 (unbound as in the package)


def compute_teer_accelerated(
    pmiss_cm, pfa_cm, tau_cm, pmiss_asv, pfa_non, pfa_spf, tau_asv, size=3000, bw=1600
):
    ds_asv, ds_cm = tau_asv.shape[0] // size, tau_cm.shape[0] // size
    if ds_asv > 0 and ds_cm > 0:
        a, c = np.arange(tau_asv.shape[0])[::ds_asv], np.arange(tau_cm.shape[0])[::ds_cm]
        _, index = compute_teer(
            pmiss_cm[c], pfa_cm[c], tau_cm[c], pmiss_asv[a], pfa_non[a], pfa_spf[a], tau_asv[a], True
        )
        j, i = index[0] * ds_asv, index[1] * ds_cm
        a = slice(np.max([j - bw, 0]), np.min([j + bw, len(tau_asv)]))
        c = slice(np.max([i - bw, 0]), np.min([i + bw, len(tau_cm)]))
        cm_part = (pmiss_cm[c], pfa_cm[c], tau_cm[c])
        return compute_teer(*cm_part, pmiss_asv[a], pfa_non[a], pfa_spf[a], tau_asv[a])
    return compute_teer(pmiss_cm, pfa_cm, tau_cm, pmiss_asv, pfa_non, pfa_spf, tau_asv)


def teer_inputs(cm_tar, cm_non, cm_spf, asv_tar, asv_non, asv_spf):
    """The seven curves calculate_aDCF_tdcf_tEER passes to the t-EER functions."""
    pmiss_asv, pfa_non, pfa_spf, tau_asv = asv_curves(asv_tar, asv_non, asv_spf)
    pmiss_cm, pfa_cm, tau_cm = det_curve(np.concatenate([cm_tar, cm_non]), cm_spf)
    return pmiss_cm, pfa_cm, tau_cm, pmiss_asv, pfa_non, pfa_spf, tau_asv
