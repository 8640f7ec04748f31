"""Result tables and score histograms as text: the cross-corpus table papers print, in Markdown and CSV.

A results row is ``{"corpus", "eer", "min_tdcf", "min_dcf", "act_dcf", "cllr", "n_trials"}`` (fractions;
None where a measure is not defined, e.g. the t-DCF of 2021 DF and In-the-Wild); `results_row` makes
one from the dict that ``evaluate_tDCF_asvspoof19.py --json`` writes. Plain numpy.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

import numpy as np

from utils.io import atomic_write_text

#: (key, Markdown header, format of the Markdown cell, scale) of each column after "corpus".
RESULT_COLUMNS = (
    ("eer", "EER %", "{:.3f}", 100.0),
    ("min_tdcf", "min t-DCF", "{:.4f}", 1.0),
    ("min_dcf", "minDCF", "{:.4f}", 1.0),
    ("act_dcf", "actDCF", "{:.4f}", 1.0),
    ("cllr", "Cllr (bits)", "{:.3f}", 1.0),
    ("n_trials", "trials", "{:,}", 1),
)


def results_row(corpus: str, result: dict) -> dict:
    """One table row from an evaluator result dict; ASVspoof 5 measures are None unless computed."""
    return {
        "corpus": corpus,
        "eer": result.get("eer"),
        "min_tdcf": result.get("min_tdcf"),
        "min_dcf": result.get("min_dcf"),
        "act_dcf": result.get("act_dcf"),
        "cllr": result.get("cllr"),
        "n_trials": int(result["n_bonafide"]) + int(result["n_spoof"]),
    }


def results_markdown(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table (EER in %, other measures as is; '-' where undefined)."""
    lines = [
        "| corpus | " + " | ".join(header for _, header, _, _ in RESULT_COLUMNS) + " |",
        "|---|" + "---:|" * len(RESULT_COLUMNS),
    ]
    for row in rows:
        cells = [
            "-" if row.get(key) is None else fmt.format(scale * row[key])
            for key, _, fmt, scale in RESULT_COLUMNS
        ]
        lines.append(f"| {row['corpus']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_csv(rows: Sequence[dict]) -> str:
    """The rows as CSV at full precision, as fractions like the JSON (EER too); empty where undefined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["corpus", *(key for key, _, _, _ in RESULT_COLUMNS)])
    for row in rows:
        values = ["" if row.get(key) is None else repr(row[key]) for key, _, _, _ in RESULT_COLUMNS]
        writer.writerow([row["corpus"], *values])
    return out.getvalue()


def write_results_table(
    rows: Sequence[dict],
    markdown_path: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
) -> None:
    """Write the table atomically as Markdown and/or CSV."""
    if markdown_path is not None:
        atomic_write_text(markdown_path, results_markdown(rows))
    if csv_path is not None:
        atomic_write_text(csv_path, results_csv(rows))


def score_histogram(bonafide: np.ndarray, spoof: np.ndarray, bins: int = 20) -> dict:
    """Counts of bona fide and spoof scores over `bins` equal-width bins spanning all scores.

    Returns ``{"edges": (bins + 1,), "bonafide": (bins,), "spoof": (bins,)}`` as lists (JSON-ready).
    """
    both = np.concatenate((bonafide, spoof))
    edges = np.histogram_bin_edges(both, bins=bins)
    return {
        "edges": edges.tolist(),
        "bonafide": np.histogram(bonafide, bins=edges)[0].tolist(),
        "spoof": np.histogram(spoof, bins=edges)[0].tolist(),
    }


def format_histogram(histogram: dict) -> str:
    """A score histogram as text lines ``[lo, hi)  bona fide  spoof``."""
    edges = histogram["edges"]
    lines = [f"{'score bin':>27} {'bona fide':>10} {'spoof':>10}"]
    last = len(histogram["bonafide"]) - 1
    for k, (nb, ns) in enumerate(zip(histogram["bonafide"], histogram["spoof"], strict=True)):
        close = "]" if k == last else ")"  # numpy's last bin includes its right edge
        lines.append(f"[{edges[k]:>12.5g}, {edges[k + 1]:>12.5g}{close} {nb:>10,} {ns:>10,}")
    return "\n".join(lines)
