"""DET curves on normal-deviate axes (as in the ASVspoof papers) and CM score histograms.

matplotlib (Agg backend) and scipy are imported inside the functions, so importing this module is
cheap and the evaluator only pays for them when a plot is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from utils.io import atomic_path
from utils.metrics import DetCurve, eer_from_det

# Axis range of the DET plot, as rates (fractions); points beyond it are clipped onto the border.
DET_LIMITS = (5e-5, 0.6)
DET_TICKS = (0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def _save_png(fig: Any, path: str | os.PathLike, dpi: int) -> None:
    """Lay out ``fig``, write it to ``path`` as PNG atomically, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def det_corners(det: DetCurve) -> tuple[np.ndarray, np.ndarray]:
    """(far, frr) at the corners of the DET staircase only: the same curve with far fewer points.

    Consecutive points move along one axis at a time; only points where the direction changes
    (plus both ends) are needed to draw it.
    """
    moves_frr = np.diff(det.frr) != 0
    keep = np.concatenate(([True], moves_frr[1:] != moves_frr[:-1], [True]))
    return det.far[keep], det.frr[keep]


def plot_evaluation(
    path: str | os.PathLike,
    dets: Mapping[str, DetCurve],
    bonafide: np.ndarray,
    spoof: np.ndarray,
    title: str = "",
    threshold: float | None = None,
) -> None:
    """Write a PNG: DET curves (first entry of `dets` drawn bold, e.g. "pooled") and score histograms.

    `dets` maps a curve name to its DET curve (bona fide positive); `bonafide`/`spoof` are the CM
    scores for the histograms; `threshold` (e.g. the EER threshold) is marked on the histogram.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    lo, hi = norm.ppf(DET_LIMITS)
    fig, (ax_det, ax_hist) = plt.subplots(1, 2, figsize=(13, 6))
    colours = plt.get_cmap("tab20")
    for i, (name, det) in enumerate(dets.items()):
        far, frr = det_corners(det)
        x = np.clip(norm.ppf(far), lo, hi)
        y = np.clip(norm.ppf(frr), lo, hi)
        eer_pct = 100 * eer_from_det(det)[0]
        style = (
            {"color": "black", "linewidth": 2.2} if i == 0 else {"color": colours(i % 20), "linewidth": 1.1}
        )
        ax_det.plot(x, y, label=f"{name} (EER {eer_pct:.3f} %)", **style)
    ax_det.plot([lo, hi], [lo, hi], color="grey", linestyle=":", linewidth=0.8)
    ticks = norm.ppf(DET_TICKS)
    labels = [f"{100 * t:g}" for t in DET_TICKS]
    ax_det.set_xticks(ticks, labels)
    ax_det.set_yticks(ticks, labels)
    ax_det.set_xlim(lo, hi)
    ax_det.set_ylim(lo, hi)
    ax_det.set_xlabel("spoof accepted: false alarm rate (%)")
    ax_det.set_ylabel("bona fide rejected: miss rate (%)")
    ax_det.set_title("DET (normal-deviate axes)")
    ax_det.grid(True, linewidth=0.4, alpha=0.6)
    ax_det.legend(fontsize=7, loc="upper right", ncol=2 if len(dets) > 8 else 1)

    bins = np.histogram_bin_edges(np.concatenate((bonafide, spoof)), bins=100)
    ax_hist.hist(
        spoof, bins=bins, histtype="stepfilled", alpha=0.5, color="tab:red", label=f"spoof ({spoof.size:,})"
    )
    ax_hist.hist(
        bonafide,
        bins=bins,
        histtype="stepfilled",
        alpha=0.5,
        color="tab:blue",
        label=f"bona fide ({bonafide.size:,})",
    )
    if threshold is not None:
        ax_hist.axvline(
            threshold, color="black", linestyle="--", linewidth=1, label=f"EER threshold {threshold:.4g}"
        )
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("CM score (higher = more bona fide)")
    ax_hist.set_ylabel("trials (log scale)")
    ax_hist.set_title("CM score histograms")
    ax_hist.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    _save_png(fig, path, dpi=110)


def plot_window_scores(
    path: str | os.PathLike,
    starts: np.ndarray,
    ends: np.ndarray,
    scores: np.ndarray,
    threshold: float | None = None,
    title: str = "",
    what: str = "score",
) -> None:
    """Write a PNG of one recording's window scores over time: each window (``starts``..``ends``, seconds)
    as a horizontal segment at its score, the window centres joined by a line, and the decision
    ``threshold`` (windows below it, where the recording looks spoofed, drawn red). ``what`` names the
    score on the y axis (e.g. "calibrated LLR")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts, ends, scores = (np.asarray(a, dtype=np.float64) for a in (starts, ends, scores))
    spoofed = scores < threshold if threshold is not None else np.zeros(scores.shape, dtype=bool)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot((starts + ends) / 2, scores, color="grey", linewidth=0.8)
    for colour, mask, label in (("tab:blue", ~spoofed, "window (bona fide side)"),
                                ("tab:red", spoofed, "window (spoof side)")):
        if mask.any():
            ax.hlines(scores[mask], starts[mask], ends[mask], colors=colour, linewidth=2.5, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.4g}")
    ax.set_xlim(0, max(float(ends.max()), 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{what} (higher = more bona fide)")
    ax.grid(True, linewidth=0.4, alpha=0.6)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    _save_png(fig, path, dpi=100)
