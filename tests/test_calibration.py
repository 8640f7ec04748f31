"""utils/calibration.py, the ASVspoof 5 measures in utils/metrics.py (actDCF, minCllr by PAV) and
utils/report.py (the cross-corpus results table)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from utils.calibration import Calibration, SeparableScoresWarning, effective_prior, fit_calibration
from utils.errors import UserError
from utils.metrics import MetricError, act_dcf, asvspoof5_measures, cllr, min_cllr
from utils.report import results_csv, results_markdown, results_row, write_results_table


def test_act_dcf_at_the_bayes_threshold_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    bona, spoof = rng.normal(1, 1.5, 400), rng.normal(-2, 1.5, 900)
    bona[:5] = spoof[:5] = -math.log(1.9)  # trials exactly at the threshold are accepted
    value, threshold = act_dcf(bona, spoof)
    assert threshold == pytest.approx(-0.641854, abs=1e-6)
    # Brute force: decide each trial, sum the costs of the errors with the priors, normalise by 0.5.
    cost = 0.0
    for s in bona:
        cost += 1.0 * 0.95 * (s < threshold) / bona.size
    for s in spoof:
        cost += 10.0 * 0.05 * (s >= threshold) / spoof.size
    assert value == pytest.approx(cost / min(0.95, 0.5), rel=1e-12)


def test_min_cllr_pav_with_ties_by_hand() -> None:
    # Sorted unique scores 0 1 2 3 4 with (bona, spoof) counts (0,1) (1,0) (1,2) (0,1) (1,0). PAV pools
    # the blocks at 1, 2 and 3 into one block of 2 bona fide + 3 spoof (P = 2/5); the end blocks are pure.
    bona, spoof = np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 2.0, 3.0])
    llr = math.log(2 / 3) - math.log(3 / 4)
    by_hand = 0.5 * (2 * math.log2(1 + math.exp(-llr)) / 3 + 3 * math.log2(1 + math.exp(llr)) / 4)
    assert by_hand == pytest.approx(0.5 * (2 / 3 * math.log2(17 / 8) + 3 / 4 * math.log2(17 / 9)), rel=1e-15)
    assert min_cllr(bona, spoof) == pytest.approx(by_hand, rel=1e-12)
    # The order of the (tied) trials does not matter.
    rng = np.random.default_rng(1)
    for _ in range(5):
        assert min_cllr(rng.permutation(bona), rng.permutation(spoof)) == pytest.approx(by_hand, rel=1e-12)
    # Separated classes: every block is pure, minCllr is 0; a lone tie of one bona fide and one spoof
    # trial is a block with P = 1/2.
    assert min_cllr(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert min_cllr(np.array([1.0, 3.0]), np.array([0.0, 1.0])) == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(MetricError, match="minCllr needs both classes"):
        min_cllr(np.array([1.0]), np.array([]))


def test_min_cllr_is_below_cllr_and_invariant_to_monotonic_maps() -> None:
    rng = np.random.default_rng(2)
    bona, spoof = rng.normal(1, 1, 3000), rng.normal(-1, 1, 5000)
    value = min_cllr(bona, spoof)
    assert 0 < value <= cllr(bona, spoof)
    assert min_cllr(np.exp(bona), np.exp(spoof)) == pytest.approx(value, rel=1e-12)
    # Gaussian classes, equal variance, means ±1: the true LLR is 2s, whose Cllr minCllr approaches.
    assert value == pytest.approx(cllr(2 * bona, 2 * spoof), abs=0.01)
    m = asvspoof5_measures(bona, spoof)
    assert (m["cllr"], m["min_cllr"]) == (cllr(bona, spoof), value)
    assert set(m) == {"min_dcf", "min_dcf_threshold", "act_dcf", "act_threshold", "cllr", "min_cllr"}


def test_calibration_of_overlapping_classes_lowers_cllr() -> None:
    rng = np.random.default_rng(3)
    # Gaussian classes with σ = 10 and means 22 and 7: the true LLR is 0.15·(s − 14.5).
    bona, spoof = rng.normal(22, 10, 4000), rng.normal(7, 10, 6000)
    cal = fit_calibration(bona, spoof)
    assert cal.prior == pytest.approx(effective_prior()) and effective_prior() == pytest.approx(0.95 / 1.45)
    assert cal.scale == pytest.approx(0.15, rel=0.08) and cal.offset == pytest.approx(-2.175, abs=0.25)
    eval_bona, eval_spoof = rng.normal(22, 10, 2000), rng.normal(7, 10, 3000)
    raw = cllr(eval_bona, eval_spoof)
    calibrated = cllr(cal.apply(eval_bona), cal.apply(eval_spoof))
    assert calibrated < 1 < raw
    assert min_cllr(eval_bona, eval_spoof) <= calibrated
    assert Calibration.from_dict(cal.as_dict()) == cal
    with pytest.raises(UserError, match="calibration is missing offset"):
        Calibration.from_dict({"scale": 1.0})


def test_separable_and_degenerate_development_scores() -> None:
    with pytest.warns(SeparableScoresWarning, match="separate bona fide and spoof perfectly"):
        cal = fit_calibration(np.array([3.0, 4.0, 5.0]), np.array([-1.0, 0.0, 1.0]))
    assert cal.separable and np.isfinite([cal.scale, cal.offset]).all() and 0 < cal.scale < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not fit_calibration(np.array([1.0, 4.0]), np.array([0.0, 2.0])).separable
    with pytest.raises(MetricError, match=r"needs bona fide and spoof scores \(got 0 bona fide, 2 spoof\)"):
        fit_calibration(np.array([]), np.array([0.0, 1.0]))
    with pytest.raises(MetricError, match="all equal"):
        fit_calibration(np.array([1.0, 1.0]), np.array([1.0]))


def test_results_table_markdown_and_csv(tmp_path: Path) -> None:
    rows = [
        results_row(
            "2019 LA eval",
            {"eer": 0.006357, "min_tdcf": 0.019037, "n_bonafide": 7355, "n_spoof": 63882, "cllr": 0.73},
        ),
        {
            "corpus": "In-the-Wild",
            "eer": 0.1234,
            "min_tdcf": None,
            "min_dcf": 0.2,
            "act_dcf": 0.3,
            "cllr": None,
            "n_trials": 31779,
        },
    ]
    assert results_markdown(rows) == (
        "| corpus | EER % | min t-DCF | minDCF | actDCF | Cllr (bits) | trials |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| 2019 LA eval | 0.636 | 0.0190 | - | - | 0.730 | 71,237 |\n"
        "| In-the-Wild | 12.340 | - | 0.2000 | 0.3000 | - | 31,779 |\n"
    )
    assert results_csv(rows).splitlines() == [
        "corpus,eer,min_tdcf,min_dcf,act_dcf,cllr,n_trials",
        "2019 LA eval,0.006357,0.019037,,,0.73,71237",
        "In-the-Wild,0.1234,,0.2,0.3,,31779",
    ]
    write_results_table(rows, tmp_path / "t.md", tmp_path / "t.csv")
    assert (tmp_path / "t.md").read_text() == results_markdown(rows)
    assert (tmp_path / "t.csv").read_text() == results_csv(rows)
