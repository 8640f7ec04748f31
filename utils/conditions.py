"""Per-condition tables of CM scores: EER (and min t-DCF) per attack (group) × codec, as the official
ASVspoof 2021 evaluation package (`eval-package/main.py`) computes them (docs/evaluation.md).

A `ConditionLayout` names a corpus's rows (spoof-trial groups: attacks, or vocoder types) and columns (codec
values, ids ``C1``...); the corpora define theirs (`data.corpora.la2021`: attacks A07…A19 × C1…C7 with the
revised 2021 min t-DCF, C0/C1/C2 recomputed per cell from the ASV target/nontarget trials of the cell's codec
and the ASV spoof trials of its attack and codec; `data.corpora.df2021`: five vocoder groups × C1…C9, EER
only).

Cell (row r, column c): bona fide = every bona fide trial with codec c; spoof = row r and codec c.
An empty cell is NaN (None in JSON). Unlike the official package, which stops when any cell has fewer
than 3 distinct CM scores, only the pooled scores are checked; a cell is computed regardless.
Plain numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from utils.metrics import (
    DEFAULT_COSTS,
    CostModel,
    SortedTrials,
    asv_rates_at,
    check_cm_scores,
    compute_eer,
    eer_from_det,
    min_tdcf_from_det,
)

POOLED = "pooled"


@dataclass(frozen=True)
class ConditionLayout:
    """One track's table: rows (metadata value, label) over spoof trials, columns (codec value, id);
    ``label`` names the track in reports (e.g. ``LA 2021``)."""

    track: str
    row_title: str
    rows: tuple[tuple[str, str], ...]
    columns: tuple[tuple[str, str], ...]
    tdcf: bool
    label: str = ""

    def codec_ids(self) -> dict[str, str]:
        """Metadata codec value -> condition id (``C1``...)."""
        return dict(self.columns)




@dataclass(frozen=True)
class Trials:
    """Scores with the row value (attack / group; unused for bona fide) and codec of each trial; (n,)."""

    scores: np.ndarray
    rows: np.ndarray
    codecs: np.ndarray

    def where(self, mask: np.ndarray) -> Trials:
        return Trials(self.scores[mask], self.rows[mask], self.codecs[mask])


@dataclass(frozen=True)
class AsvTrials:
    """ASV scores of the chosen subset, split by ASV key; rows/codecs as in `Trials`."""

    target: Trials
    nontarget: Trials
    spoof: Trials


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _codec_mask(trials: Trials, codec: str | None) -> np.ndarray:
    return np.ones(trials.scores.size, bool) if codec is None else trials.codecs == codec


def condition_tables(
    layout: ConditionLayout,
    bonafide: Trials,
    spoof: Trials,
    asv: AsvTrials | None = None,
    cost: CostModel = DEFAULT_COSTS,
) -> dict:
    """The official per-condition tables of CM scores (higher = bona fide); rates are fractions.

    Returns ``{"eer", "eer_threshold", "min_tdcf", "asv", "per_condition", "per_cell"}``: the pooled
    cell's EER (and revised 2021 min t-DCF with `asv`, else None), the pooled ASV operating point,
    ``per_condition[cid] = {name, eer, eer_threshold, n_bonafide, n_spoof, min_tdcf}`` pooled over rows,
    and ``per_cell[measure][row label][cid or "pooled"]`` for measure ``eer`` (and ``min_tdcf``).
    """
    check_cm_scores(SortedTrials(bonafide.scores, spoof.scores))
    columns = [*layout.columns, (None, POOLED)]
    rows = [*layout.rows, (None, POOLED)]
    with_tdcf = layout.tdcf and asv is not None
    measures = ("eer", "min_tdcf") if with_tdcf else ("eer",)
    per_cell: dict[str, dict[str, dict[str, float | None]]] = {
        m: {label: {} for _, label in rows} for m in measures
    }
    result: dict = {"min_tdcf": None, "asv": None, "per_condition": {}, "per_cell": per_cell}
    for codec, cid in columns:
        bona = bonafide.scores[_codec_mask(bonafide, codec)]
        spoof_c = spoof.where(_codec_mask(spoof, codec))
        trials = (
            SortedTrials(bona, spoof_c.scores, spoof_c.rows) if bona.size and spoof_c.scores.size else None
        )
        asv_threshold = asv_eer = math.nan
        if with_tdcf:
            tar = asv.target.scores[_codec_mask(asv.target, codec)]
            non = asv.nontarget.scores[_codec_mask(asv.nontarget, codec)]
            if tar.size and non.size:
                asv_eer, asv_threshold = compute_eer(tar, non)
            asv_spoof_c = asv.spoof.where(_codec_mask(asv.spoof, codec))
        for value, label in rows:
            eer = threshold = tdcf = math.nan
            group = None if value is None else value
            if trials is not None and (group is None or group in trials.group_names):
                det = trials.det(group)
                eer, threshold = eer_from_det(det)
                if with_tdcf and not math.isnan(asv_threshold):
                    asv_spoof = (
                        asv_spoof_c.scores if group is None else asv_spoof_c.scores[asv_spoof_c.rows == group]
                    )
                    if asv_spoof.size:
                        rates = asv_rates_at(tar, non, asv_spoof, asv_threshold, asv_eer)
                        tdcf = min_tdcf_from_det(det, rates, cost, revised=True)
                        if codec is None and group is None:
                            result["asv"] = {
                                "eer": rates.eer,
                                "threshold": rates.threshold,
                                "pfa": rates.pfa,
                                "pmiss": rates.pmiss,
                                "pmiss_spoof": rates.pmiss_spoof,
                                "pfa_spoof": rates.pfa_spoof,
                            }
            per_cell["eer"][label][cid] = _nan_to_none(eer)
            if with_tdcf:
                per_cell["min_tdcf"][label][cid] = _nan_to_none(tdcf)
            if group is None:
                entry = {
                    "eer": _nan_to_none(eer),
                    "eer_threshold": _nan_to_none(threshold),
                    "n_bonafide": int(bona.size),
                    "n_spoof": int(spoof_c.scores.size),
                    "min_tdcf": _nan_to_none(tdcf),
                }
                if codec is None:
                    result.update(
                        eer=entry["eer"], eer_threshold=entry["eer_threshold"], min_tdcf=entry["min_tdcf"]
                    )
                else:
                    result["per_condition"][cid] = {"name": codec, **entry}
    return result


def _cell(x: float | None, scale: float, digits: int) -> str:
    return "-" if x is None else f"{scale * x:.{digits}f}"


def format_condition_tables(layout: ConditionLayout, tables: dict) -> str:
    """The per-cell tables as plain text: EER % (2 dp) and, where present, min t-DCF (4 dp)."""
    cids = [cid for _, cid in layout.columns] + [POOLED]
    width = max(len(label) for _, label in (*layout.rows, (None, POOLED))) + 1
    lines: list[str] = []
    for measure, title, scale, digits in (
        ("eer", "EER %", 100.0, 2),
        ("min_tdcf", "min t-DCF (2021)", 1.0, 4),
    ):
        table = tables["per_cell"].get(measure)
        if table is None:
            continue
        lines += [
            "",
            f"{title}: {layout.row_title} x condition",
            f"{'':<{width}}" + "".join(f"{c:>8}" for c in cids),
        ]
        for label, row in table.items():
            lines.append(f"{label:<{width}}" + "".join(f"{_cell(row[c], scale, digits):>8}" for c in cids))
    names = ", ".join(f"{cid} {codec}" for codec, cid in layout.columns)
    lines.append(f"conditions: {names}")
    return "\n".join(lines)
