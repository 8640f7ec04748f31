"""What evaluate_tDCF_asvspoof19.py computes for ASVspoof 5 Track 2 (SASV): a-DCF (primary), min t-DCF and
the concurrent t-EER, pooled and per attack × codec (docs/evaluation.md, "Track 2 (SASV)"). No torch.

Conditions follow the official package's full mode: for codec c (or all codecs, ``pooled``) the target
and nontarget trials of c against the spoof trials of c of one attack (or all, ``pooled``); a cell
without target, nontarget or spoof trials is None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from utils.metrics import AsvRates, MetricError
from utils.sasv import ORGANISER_ASV_RATES, TandemTrials, a_dcf, asv_rates_from_scores, sasv_measures
from utils.sasv_files import SasvTrials, read_asv_only, read_sasv
from utils.scorefiles import ASV_KEYS

POOLED = "pooled"
SASV_ONLY_NOTE = (
    "note: the score file gives only SASV scores: a_dcf only (min_tdcf and t_eer need CM and ASV scores)"
)


@dataclass(frozen=True)
class SasvRequest:
    """Input files: SASV scores and keys, optionally the organisers' ASV scores (the t-DCF's ASV rates)."""

    scores: str | os.PathLike
    keys: str | os.PathLike
    asv_scores: str | os.PathLike | None = None


@dataclass
class SasvEvaluation:
    """The JSON-ready result (fractions) and the notes to print."""

    result: dict
    notes: list[str] = field(default_factory=list)


def _cell(
    trials: SasvTrials, tar: np.ndarray, non: np.ndarray, spf: np.ndarray, org: tuple | None, approx: bool
) -> dict | None:
    """Measures of one condition from boolean row masks (n,); None if a class has no trials."""
    if not (tar.any() and non.any() and spf.any()):
        return None
    sasv = (trials.sasv[tar], trials.sasv[non], trials.sasv[spf])
    if trials.cm is None or trials.asv is None:
        return {"a_dcf": a_dcf(*sasv), "min_tdcf": None, "t_eer": None}
    rates: AsvRates = ORGANISER_ASV_RATES
    if org is not None:
        labels, scores = org
        in_cell = tar | non | spf
        rates = asv_rates_from_scores(*(scores[in_cell & (labels == k)] for k in ASV_KEYS))
    cm, asv = trials.cm, trials.asv
    tandem = TandemTrials(cm[tar], cm[non], cm[spf], asv[tar], asv[non], asv[spf])
    return sasv_measures(tandem, sasv, rates, approx)


def _groups(values: np.ndarray | None, keep: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sorted names of `values[keep]` and every row's index among them (-1 if not one of them)."""
    if values is None:
        return [], np.full(keep.size, -1)
    names, codes = np.unique(values, return_inverse=True)
    wanted = np.unique(codes[keep])
    remap = np.full(names.size, -1)
    remap[wanted] = np.arange(wanted.size)
    return names[wanted].tolist(), remap[codes]


def _per_cell(trials: SasvTrials, org: tuple | None) -> dict:
    """per_cell[attack][codec] with ``pooled`` first on both axes, as the package's full tables."""
    is_spoof = trials.cm_label == "spoof"
    attacks, attack_of = _groups(trials.attack, is_spoof)
    codecs, codec_of = _groups(trials.codec, np.ones(is_spoof.size, dtype=bool))
    table: dict = {attack: {} for attack in (POOLED, *attacks)}
    is_tar, is_non = trials.asv_label == "target", trials.asv_label == "nontarget"
    for c, codec in enumerate((POOLED, *codecs)):
        in_codec = np.ones(is_spoof.size, dtype=bool) if c == 0 else codec_of == c - 1
        tar, non = in_codec & is_tar, in_codec & is_non
        for a, attack in enumerate((POOLED, *attacks)):
            spf = in_codec & (is_spoof if a == 0 else attack_of == a - 1)
            try:
                table[attack][codec] = _cell(trials, tar, non, spf, org, approx=False)
            except MetricError as exc:
                raise MetricError(f"attack {attack}, codec {codec}: {exc}", exc.source) from None
    return table


def evaluate_sasv(req: SasvRequest) -> SasvEvaluation:
    """Track 2 measures of a SASV score file: top-level pooled a_dcf, min_tdcf, t_eer (+ per_cell)."""
    trials = read_sasv(req.scores, req.keys)
    org = read_asv_only(req.asv_scores, req.keys) if req.asv_scores is not None else None
    is_spoof = trials.cm_label == "spoof"
    tar, non = trials.asv_label == "target", trials.asv_label == "nontarget"
    try:
        pooled = _cell(trials, tar, non, is_spoof, org, approx=True)
    except MetricError as exc:
        bad = req.asv_scores if exc.source == "asv" and req.asv_scores is not None else req.scores
        raise MetricError(f"{bad}: {exc}", exc.source) from None
    if pooled is None:
        raise MetricError(f"{req.keys}: need target, nontarget and spoof trials")
    ev = SasvEvaluation(
        {
            "track": "asvspoof5-sasv",
            "sasv_scores": str(req.scores),
            "sasv_keys": str(req.keys),
            "asv_rates": str(req.asv_scores) if org is not None else "organisers' pooled ASV error rates",
            "n_target": int(tar.sum()),
            "n_nontarget": int(non.sum()),
            "n_spoof": int(is_spoof.sum()),
            "min_tdcf": None,
            "t_eer": None,
            **pooled,
        }
    )
    if trials.cm is None or trials.asv is None:
        ev.notes.append(SASV_ONLY_NOTE)
    if trials.attack is not None or trials.codec is not None:
        try:
            ev.result["per_cell"] = _per_cell(trials, org)
        except MetricError as exc:
            raise MetricError(f"{req.scores}: {exc}", exc.source) from None
    return ev
