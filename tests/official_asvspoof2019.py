"""The official ASVspoof 2019 evaluation script's computation, in its structure: np.genfromtxt parsing,
compute_det_curve re-sorting on every call, obtain_asv_error_rates with Python's sum(), compute_tDCF with its
checks, and a per-attack loop that re-parses both files.

It is the oracle that tests/test_metrics.py checks utils/metrics.py against, and the baseline that
bench/bench_evaluate.py times our evaluator against.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

PTAR, PNON, PSPOOF = (1 - 0.05) * 0.99, (1 - 0.05) * 0.01, 0.05


def compute_det_curve(target_scores: np.ndarray, nontarget_scores: np.ndarray):
    n_scores = target_scores.size + nontarget_scores.size
    all_scores = np.concatenate((target_scores, nontarget_scores))
    labels = np.concatenate((np.ones(target_scores.size), np.zeros(nontarget_scores.size)))
    indices = np.argsort(all_scores, kind="mergesort")
    labels = labels[indices]
    tar_trial_sums = np.cumsum(labels)
    nontarget_trial_sums = nontarget_scores.size - (np.arange(1, n_scores + 1) - tar_trial_sums)
    frr = np.concatenate((np.atleast_1d(0), tar_trial_sums / target_scores.size))
    far = np.concatenate((np.atleast_1d(1), nontarget_trial_sums / nontarget_scores.size))
    thresholds = np.concatenate((np.atleast_1d(all_scores[indices[0]] - 0.001), all_scores[indices]))
    return frr, far, thresholds


def compute_eer(target_scores: np.ndarray, nontarget_scores: np.ndarray):
    frr, far, thresholds = compute_det_curve(target_scores, nontarget_scores)
    min_index = np.argmin(np.abs(frr - far))
    return np.mean((frr[min_index], far[min_index])), thresholds[min_index]


def obtain_asv_error_rates(tar_asv, non_asv, spoof_asv, asv_threshold):
    pfa_asv = sum(non_asv >= asv_threshold) / non_asv.size
    pmiss_asv = sum(tar_asv < asv_threshold) / tar_asv.size
    pmiss_spoof_asv = np.sum(spoof_asv < asv_threshold) / spoof_asv.size
    return pfa_asv, pmiss_asv, pmiss_spoof_asv


def compute_tdcf(bona_cm, spoof_cm, pfa_asv, pmiss_asv, pmiss_spoof_asv, revised: bool) -> float:
    if abs(PTAR + PNON + PSPOOF - 1) > 1e-10:
        sys.exit("ERROR: priors")
    combined = np.concatenate((bona_cm, spoof_cm))
    if np.isnan(combined).any() or np.isinf(combined).any():
        sys.exit("ERROR: Your scores contain nan or inf.")
    if np.unique(combined).size < 3:
        sys.exit("ERROR: You should provide soft CM scores - not binary decisions")
    pmiss_cm, pfa_cm, _ = compute_det_curve(bona_cm, spoof_cm)
    if revised:
        c0 = PTAR * 1 * pmiss_asv + PNON * 10 * pfa_asv
        c1 = PTAR * 1 - c0
        c2 = PSPOOF * 10 * (1 - pmiss_spoof_asv)
        return float(np.min((c0 + c1 * pmiss_cm + c2 * pfa_cm) / (c0 + np.minimum(c1, c2))))
    c1 = PTAR * (1 - 1 * pmiss_asv) - PNON * 10 * pfa_asv
    c2 = 10 * PSPOOF * (1 - pmiss_spoof_asv)
    if c1 < 0 or c2 < 0:
        sys.exit("You should never see this error")
    return float(np.min((c1 * pmiss_cm + c2 * pfa_cm) / np.minimum(c1, c2)))


def load_files(cm_file: str, asv_file: str):
    asv = np.genfromtxt(asv_file, dtype=str)
    cm = np.genfromtxt(cm_file, dtype=str)
    if cm.shape[1] == 3:  # uttid_attack score key
        sources = np.array([u.rsplit("_", 1)[1] for u in cm[:, 0]])
        keys, scores = cm[:, 2], cm[:, 1].astype(np.float64)
    else:  # utt_id attack key score
        sources, keys, scores = cm[:, 1], cm[:, 2], cm[:, 3].astype(np.float64)
    return asv[:, 0], asv[:, 1], asv[:, 2].astype(np.float64), sources, keys, scores


def evaluate(cm_file: str, asv_file: str, attack: str | None = None) -> dict:
    asv_sources, asv_keys, asv_scores, sources, keys, scores = load_files(cm_file, asv_file)
    tar_asv, non_asv = asv_scores[asv_keys == "target"], asv_scores[asv_keys == "nontarget"]
    spoof_asv = asv_scores[(asv_keys == "spoof") & ((asv_sources == attack) if attack else True)]
    bona_cm = scores[keys == "bonafide"]
    spoof_cm = scores[(keys == "spoof") & ((sources == attack) if attack else True)]
    _, asv_threshold = compute_eer(tar_asv, non_asv)
    pfa, pmiss, pmiss_spoof = obtain_asv_error_rates(tar_asv, non_asv, spoof_asv, asv_threshold)
    eer = float(compute_eer(bona_cm, spoof_cm)[0])
    return {
        "eer": eer,
        "min_tdcf": compute_tdcf(bona_cm, spoof_cm, pfa, pmiss, pmiss_spoof, revised=False),
        "min_tdcf_2021": compute_tdcf(bona_cm, spoof_cm, pfa, pmiss, pmiss_spoof, revised=True),
    }


def baseline(cm_file: str, asv_file: str, out: str) -> None:
    result = evaluate(cm_file, asv_file)
    sources = load_files(cm_file, asv_file)[3]
    attacks = sorted(set(sources.tolist()) - {"-"})
    result["per_attack"] = {a: evaluate(cm_file, asv_file, a) for a in attacks}
    Path(out).write_text(json.dumps(result))


def score_file_eer(cm_file: str | Path, attack: str | None = None) -> float:
    """The official EER of a CM score file (either layout), bona fide vs all spoofs or one attack's."""
    cm = np.genfromtxt(str(cm_file), dtype=str, ndmin=2)
    if cm.shape[1] == 3:
        sources, keys, scores = np.array([u.rsplit("_", 1)[1] for u in cm[:, 0]]), cm[:, 2], cm[:, 1]
    else:
        sources, keys, scores = cm[:, 1], cm[:, 2], cm[:, 3]
    scores = scores.astype(np.float64)
    spoof = (keys == "spoof") & ((sources == attack) if attack else True)
    return float(compute_eer(scores[keys == "bonafide"], scores[spoof])[0])
