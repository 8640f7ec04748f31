"""An independent oracle: the ASVspoof 5 evaluation package's Track 1 arithmetic, transcribed from its
public functions (asvspoof-challenge/asvspoof5, ``evaluation-package/calculate_modules.py``:
``compute_det_curve``, ``compute_eer``, ``compute_mindcf``, ``compute_actDCF``, ``calculate_CLLR``; and
``calculate_metrics_full.py``: the per-condition loop with one query per cell) in plain numpy, so the tests
and bench/bench_evaluate.py compare our vectorised tables with what the package computes.

Written from the definitions, not copied; the per-cell loop selects with boolean masks where the package
runs pandas queries (the same rows in the same order). minCllr is not part of the package: the tests check
it against a brute-force PAV written there.
"""

from __future__ import annotations

import numpy as np

# The ASVspoof 5 package's compute_det_curve has the 2019 script's arithmetic.
from official_asvspoof2019 import compute_det_curve as det_curve

PSPOOF, CMISS, CFA = 0.05, 1, 10


def eer(frr: np.ndarray, far: np.ndarray) -> float:
    k = np.argmin(np.abs(frr - far))
    return float(np.mean((frr[k], far[k])))


def min_dcf(frr: np.ndarray, far: np.ndarray) -> float:
    """The package's loop: the first strictly smallest cost, normalised by min(Cmiss·Ptar, Cfa·Pspoof)."""
    p_target = 1 - PSPOOF
    best = float("inf")
    for miss, fa in zip(frr.tolist(), far.tolist(), strict=True):
        cost = CMISS * miss * p_target + CFA * fa * (1 - p_target)
        best = min(best, cost)
    return best / min(CMISS * p_target, CFA * (1 - p_target))


def act_dcf(bona: np.ndarray, spoof: np.ndarray) -> float:
    threshold = -np.log(CMISS * (1 - PSPOOF) / (CFA * PSPOOF))
    miss = np.sum(bona < threshold) / bona.size
    fa = np.sum(spoof >= threshold) / spoof.size
    return float((CMISS * (1 - PSPOOF) * miss + CFA * PSPOOF * fa) / min(CFA * PSPOOF, CMISS * (1 - PSPOOF)))


def cllr(bona: np.ndarray, spoof: np.ndarray) -> float:
    def neg_log_sigmoid(x: np.ndarray) -> np.ndarray:
        return np.log1p(np.exp(-x))

    return float(0.5 * (np.mean(neg_log_sigmoid(bona)) + np.mean(neg_log_sigmoid(-spoof))) / np.log(2))


def track1(bona: np.ndarray, spoof: np.ndarray) -> dict[str, float]:
    """``calculate_minDCF_EER_CLLR_actDCF`` of one set of bona fide and spoof scores."""
    frr, far, _ = det_curve(bona, spoof)
    return {"min_dcf": min_dcf(frr, far), "act_dcf": act_dcf(bona, spoof), "cllr": cllr(bona, spoof),
            "eer": eer(frr, far)}


def track1_full(
    scores: np.ndarray, labels: np.ndarray, attacks: np.ndarray, codecs: np.ndarray
) -> dict[str, dict[str, dict[str, float] | None]]:
    """The full-mode tables: ``table[attack or "pooled"][codec or "pooled"]``, None for an empty cell.
    ``labels``: 'bonafide'/'spoof'; ``attacks``: 'bonafide' on bona fide rows, as in the package's keys."""
    attack_list = ["pooled", *sorted(set(attacks.tolist()))[:-1]]  # drops 'bonafide', sorted last
    codec_list = ["pooled", *sorted(set(codecs.tolist()))]
    table: dict[str, dict[str, dict[str, float] | None]] = {a: {} for a in attack_list}
    for codec in codec_list:
        in_codec = np.ones(scores.size, bool) if codec == "pooled" else codecs == codec
        bona = scores[in_codec & (labels == "bonafide")]
        for attack in attack_list:
            chosen = labels == "spoof" if attack == "pooled" else attacks == attack
            spoof = scores[in_codec & chosen]
            table[attack][codec] = track1(bona, spoof) if bona.size and spoof.size else None
    return table


def track1_full_frame(frame) -> dict[str, dict[str, dict[str, float] | None]]:
    """`track1_full` as the package runs it: pandas queries per cell on a frame with the package's columns
    ``cm-score``, ``cm_label``, ``attack_anon`` ('bonafide' on bona fide rows) and ``codec``."""
    attack_list = ["pooled", *sorted(frame["attack_anon"].unique())[:-1]]
    codec_list = ["pooled", *sorted(frame["codec"].unique())]
    table: dict[str, dict[str, dict[str, float] | None]] = {a: {} for a in attack_list}
    for codec in codec_list:
        part = frame if codec == "pooled" else frame.query(f'codec == "{codec}"')
        bona = part.query('cm_label == "bonafide"')["cm-score"].to_numpy()
        for attack in attack_list:
            query = 'cm_label == "spoof"' if attack == "pooled" else f'attack_anon == "{attack}"'
            spoof = part.query(query)["cm-score"].to_numpy()
            table[attack][codec] = track1(bona, spoof) if bona.size and spoof.size else None
    return table
