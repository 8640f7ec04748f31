"""Measures per value of protocol columns (the evaluator's ``--group-by``): for each column, each value
(sorted) and ``pooled``, the counts and the EER of that group's trials, with the ASVspoof 5 measures when
asked.

A group is every trial whose column has that value. A column that bona fide trials do not carry (all ``-``,
as ``attack``) groups the spoof trials only: each value's spoof trials against every bona fide trial, as
per-attack results do (docs/evaluation.md). A measure needs both classes: None where a group lacks one.
The measures are those of `utils.metrics` (no torch).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from utils.metrics import asvspoof5_measures, compute_eer

POOLED = "pooled"
#: The value of a column on trials that do not carry it (bona fide attack).
NOT_CARRIED = "-"
ASVSPOOF5_KEYS = ("min_dcf", "act_dcf", "cllr", "min_cllr")


def group_measures(bonafide: np.ndarray, spoof: np.ndarray, asvspoof5: bool = False) -> dict:
    """``n_bonafide``, ``n_spoof``, ``eer`` (fraction) and with ``asvspoof5`` min_dcf, act_dcf, cllr, min_cllr
    (bits) of one group's bona fide and spoof scores; the measures are None without both classes."""
    keys = ("eer", *ASVSPOOF5_KEYS) if asvspoof5 else ("eer",)
    out: dict = {"n_bonafide": int(bonafide.size), "n_spoof": int(spoof.size), **dict.fromkeys(keys)}
    if bonafide.size and spoof.size:
        out["eer"] = compute_eer(bonafide, spoof)[0]
        if asvspoof5:
            measures = asvspoof5_measures(bonafide, spoof)
            out.update({key: measures[key] for key in ASVSPOOF5_KEYS})
    return out


def group_tables(
    scores: np.ndarray, is_bona: np.ndarray, columns: Mapping[str, np.ndarray], asvspoof5: bool = False
) -> dict[str, dict[str, dict]]:
    """``{column: {"pooled": measures, value: measures, ...}}`` (values sorted) of scores (n,) (higher =
    bona fide), classes (n,) bool and each column's values (n,) str; measures as in `group_measures`."""
    scores = np.asarray(scores, dtype=np.float64)
    is_bona = np.asarray(is_bona, dtype=bool)
    pooled = group_measures(scores[is_bona], scores[~is_bona], asvspoof5)
    tables: dict[str, dict[str, dict]] = {}
    for column, values in columns.items():
        values = np.asarray(values).astype(str)
        spoof_only = bool(is_bona.any()) and bool(np.all(values[is_bona] == NOT_CARRIED))
        table = {POOLED: pooled}
        for value in sorted(set(values[~is_bona].tolist() if spoof_only else values.tolist())):
            chosen = values == value
            bona = is_bona if spoof_only else is_bona & chosen
            table[value] = group_measures(scores[bona], scores[~is_bona & chosen], asvspoof5)
        tables[column] = table
    return tables


def _cell(x: float | None, scale: float = 1.0) -> str:
    return "-" if x is None else f"{scale * x:.4f}"


def format_group_tables(tables: Mapping[str, Mapping[str, dict]]) -> str:
    """The tables of `group_tables` as plain text, one per column (EER in %)."""
    lines: list[str] = []
    for column, table in tables.items():
        extra = [key for key in ASVSPOOF5_KEYS if key in table[POOLED]]
        width = max(len(column), *(len(v) for v in table)) + 2
        head = f"{'n bona':>8} {'n spoof':>8} {'EER %':>8}" + "".join(f" {k:>8}" for k in extra)
        lines += ["", f"by {column}", f"{'':<{width}}{head}"]
        for value, m in table.items():
            cells = "".join(f" {_cell(m[k]):>8}" for k in extra)
            lines.append(f"{value:<{width}}{m['n_bonafide']:>8,} {m['n_spoof']:>8,} "
                         f"{_cell(m['eer'], 100):>8}{cells}")
    return "\n".join(lines)
