"""utils/metrics.py: the docs/evaluation.md test vectors, published score files and the official code."""

from __future__ import annotations

import numpy as np
import pytest

# The official ASVspoof 2019 script's computation (also bench/bench_evaluate.py's baseline) is the oracle.
from official_asvspoof2019 import compute_det_curve as official_det_curve

from utils.metrics import (
    AsvRates,
    CostModel,
    MetricError,
    SortedTrials,
    act_dcf,
    asv_error_rates,
    cllr,
    compute_eer,
    det_curve,
    evaluate_cm,
    min_dcf,
    min_tdcf,
    tdcf_2021_constants,
    tdcf_legacy_constants,
)
from utils.scorefiles import read_asv_scores, read_scores

REL = 1e-9
# docs/evaluation.md: ASV rates of the 2019 LA eval ASV scores.
EVAL_ASV = AsvRates(
    eer=0.02457783738686887,
    threshold=-5.680051,
    pfa=0.024604674888228765,
    pmiss=0.024581005586592177,
    pmiss_spoof=0.23934754703985472,
    pfa_spoof=1 - 0.23934754703985472,
)


def asv_arrays(path):
    asv = read_asv_scores(path)
    return asv, asv.of("target"), asv.of("nontarget"), asv.of("spoof")


def test_ties_count_one_point_per_trial() -> None:
    eer, threshold = compute_eer(np.array([1.0, 1, 2, 3]), np.array([0.0, 1, 1, 2]))
    assert eer == pytest.approx(0.5, rel=REL)  # one point per unique score would give 0.375
    assert threshold == 1.0


def test_small_vector_eer_and_legacy_tdcf() -> None:
    bona, spoof = np.array([0.9, 0.8, 0.7, 0.3]), np.array([0.6, 0.4, 0.2, 0.1, 0.75])
    eer, threshold = compute_eer(bona, spoof)
    assert eer == pytest.approx(0.225, rel=REL)
    assert threshold == 0.6
    assert min_tdcf(bona, spoof, EVAL_ASV) == pytest.approx(0.6, rel=REL)


def test_det_curve_has_one_point_per_trial_plus_one() -> None:
    det = det_curve(np.array([1.0, 1, 2, 3]), np.array([0.0, 1, 1, 2]))
    # Sorted, bona fide first on ties: 0s 1b 1b 1s 1s 2b 2s 3b.
    assert det.frr.tolist() == [0, 0, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 1]
    assert det.far.tolist() == [1, 0.75, 0.75, 0.75, 0.5, 0.25, 0.25, 0, 0]
    assert det.thresholds[0] == pytest.approx(-0.001)


@pytest.mark.parametrize(
    "partition, expected",
    [
        (
            "eval",
            dict(
                eer=0.02457783738686887,
                threshold=-5.680051,
                pfa=0.024604674888228765,
                pmiss=0.024581005586592177,
                pmiss_spoof=0.23934754703985472,
                c1=0.9150441201314283,
                c2=0.38032622648007264,
                c0=0.025455879868571674,
                norm2021=0.4057821063486443,
            ),
        ),
        (
            "dev",
            dict(
                eer=0.02426530238400544,
                threshold=-3.548998,
                pfa=0.02444521497919556,
                pmiss=0.02425876010781671,
                pmiss_spoof=0.23972909939002512,
                c1=0.9153623406955749,
                c2=0.3801354503049874,
            ),
        ),
    ],
)
def test_asv_test_vectors(shared_dir, partition: str, expected: dict) -> None:
    _, tar, non, spoof = asv_arrays(
        shared_dir / f"asvspoof2019_la/asv_scores/ASVspoof2019.LA.asv.{partition}.gi.trl.scores.txt"
    )
    rates = asv_error_rates(tar, non, spoof)
    for name in ("eer", "threshold", "pfa", "pmiss", "pmiss_spoof"):
        assert getattr(rates, name) == pytest.approx(expected[name], rel=REL), name
    c1, c2 = tdcf_legacy_constants(rates)
    assert (c1, c2) == (pytest.approx(expected["c1"], rel=REL), pytest.approx(expected["c2"], rel=REL))
    if "c0" in expected:
        c0, c1_21, c2_21 = tdcf_2021_constants(rates)
        assert c0 == pytest.approx(expected["c0"], rel=REL)
        assert c0 + min(c1_21, c2_21) == pytest.approx(expected["norm2021"], rel=REL)


def test_xlsr_lcnn_published_eval_scores(shared_dir) -> None:
    cm = read_scores(shared_dir / "asvspoof2019_la/cm_scores/xlsr_lcnn_eval_scores.txt")
    _, tar, non, spoof = asv_arrays(
        shared_dir / "asvspoof2019_la/asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    )
    asv = read_asv_scores(
        shared_dir / "asvspoof2019_la/asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    )
    is_bona = cm.keys == "bonafide"
    is_spoof_asv = asv.asv_keys == "spoof"
    result = evaluate_cm(
        cm.scores[is_bona],
        cm.scores[~is_bona],
        cm.attacks[~is_bona],
        tar,
        non,
        asv.scores[is_spoof_asv],
        asv.cm_keys[is_spoof_asv],
    )
    assert result["eer"] == pytest.approx(0.006357185455653269, rel=REL)
    assert result["eer_threshold"] == pytest.approx(0.3306903541088104, rel=REL)
    assert result["min_tdcf"] == pytest.approx(0.01903686213690652, rel=REL)
    assert result["min_tdcf_2021"] == pytest.approx(0.08057550418704394, rel=REL)
    published = {
        "A07": 0.122,
        "A08": 0.635,
        "A09": 0.041,
        "A10": 0.791,
        "A11": 0.187,
        "A12": 0.122,
        "A13": 0.017,
        "A14": 0.105,
        "A15": 0.187,
        "A16": 0.221,
        "A17": 1.402,
        "A18": 0.676,
        "A19": 1.165,
    }
    assert {a: round(100 * r["eer"], 3) for a, r in result["per_attack"].items()} == published
    assert {r["n"] for r in result["per_attack"].values()} == {4914}
    # The per-attack t-DCF equals a fresh computation with that attack's ASV spoof scores.
    a17 = cm.attacks[~is_bona] == "A17"
    asv_a17 = asv_error_rates(tar, non, asv.spoof_of("A17"))
    assert result["per_attack"]["A17"]["min_tdcf"] == min_tdcf(
        cm.scores[is_bona], cm.scores[~is_bona][a17], asv_a17
    )


def test_cqcc_gmm_published_dev_scores(shared_dir) -> None:
    cm = read_scores(shared_dir / "asvspoof2019_la/cm_scores/cqcc_gmm_dev_scores.txt")
    _, tar, non, spoof = asv_arrays(
        shared_dir / "asvspoof2019_la/asv_scores/ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"
    )
    is_bona = cm.keys == "bonafide"
    eer, threshold = compute_eer(cm.scores[is_bona], cm.scores[~is_bona])
    assert eer == pytest.approx(0.004311408259586024, rel=REL)
    assert threshold == pytest.approx(1.252953, rel=REL)
    legacy = min_tdcf(cm.scores[is_bona], cm.scores[~is_bona], asv_error_rates(tar, non, spoof))
    assert legacy == pytest.approx(0.012266594872011987, rel=REL)


def test_subset_det_from_one_sort_equals_official_resort() -> None:
    rng = np.random.default_rng(0)
    # Rounded scores make many ties across classes and attacks, where the order matters.
    bona = np.round(rng.normal(1, 1, 300), 1)
    spoof = np.round(rng.normal(-1, 1, 900), 1)
    attacks = rng.choice(["A01", "A02", "A03"], size=spoof.size)
    trials = SortedTrials(bona, spoof, attacks)
    for attack in ("A01", "A02", "A03", None):
        neg = spoof if attack is None else spoof[attacks == attack]
        ours = trials.det(attack)
        frr, far, thr = official_det_curve(bona, neg)
        assert (
            np.array_equal(ours.frr, frr)
            and np.array_equal(ours.far, far)
            and np.array_equal(ours.thresholds, thr)
        )
        assert trials.n_unique(attack) == np.unique(np.concatenate((bona, neg))).size


def test_priors_must_sum_to_one() -> None:
    with pytest.raises(MetricError, match="sum to one"):
        CostModel(ptar=0.9, pnon=0.01, pspoof=0.05)
    assert CostModel(pspoof=0.1).ptar == pytest.approx(0.9 * 0.99)


def test_official_checks() -> None:
    bona, spoof = np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="NaN or inf"):
        min_tdcf(np.array([np.nan, 1, 2]), spoof, EVAL_ASV)
    with pytest.raises(MetricError, match="fewer than 3 distinct"):
        min_tdcf(np.array([1.0, 1.0]), np.array([0.0, 0.0]), EVAL_ASV)
    with pytest.raises(MetricError, match="no spoof trials") as info:
        asv_error_rates(np.array([3.0, 4]), np.array([0.0, 1]), np.array([]))
    assert info.value.source == "asv"
    # Targets below all nontargets (keys swapped): EER 1, Pmiss 0.95, Pfa 1, so C1 < 0.
    swapped = asv_error_rates(np.arange(20.0), np.array([30.0, 31]), np.array([2.0]))
    assert (swapped.eer, swapped.pmiss, swapped.pfa) == (1.0, 0.95, 1.0)
    with pytest.raises(MetricError, match="non-negative"):
        min_tdcf(bona, spoof, swapped)


def test_asvspoof5_measures() -> None:
    bona, spoof = np.array([-1.0, 2.0]), np.array([-3.0, 0.0])
    # DET points (frr, far): (0,1) (0,.5) (.5,.5) (.5,0) (1,0); cost .95·frr + .5·far, normalised by 0.5.
    assert min_dcf(bona, spoof) == (pytest.approx(0.5, rel=REL), -3.0)
    # Threshold −ln(1.9) ≈ −0.642: one bona fide missed, one spoof accepted.
    dcf, threshold = act_dcf(bona, spoof)
    assert threshold == pytest.approx(-np.log(1.9), rel=REL)
    assert dcf == pytest.approx((0.95 * 0.5 + 0.5 * 0.5) / 0.5, rel=REL)
    assert cllr(np.zeros(3), np.zeros(5)) == pytest.approx(1.0, rel=REL)
    assert cllr(np.array([50.0]), np.array([-50.0])) == pytest.approx(0.0, abs=1e-20)
    assert cllr(np.array([np.log(3)]), np.array([np.log(3)])) == pytest.approx(
        0.5 * (np.log2(4 / 3) + 2), rel=REL
    )
