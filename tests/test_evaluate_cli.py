"""evaluate_tDCF_asvspoof19.py and utils/scorefiles.py: published numbers via the CLI, layouts.

The `toy` score files are in conftest.py; malformed score, ASV and protocol files are in test_reliability.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from official_asvspoof2019 import score_file_eer

from evaluate_tDCF_asvspoof19 import main
from utils.errors import run_cli
from utils.scorefiles import read_asv_scores, read_scores, write_scores

REPO = Path(__file__).resolve().parents[1]
REL = 1e-9
XLSR = "asvspoof2019_la/cm_scores/xlsr_lcnn_eval_scores.txt"
CQCC = "asvspoof2019_la/cm_scores/cqcc_gmm_dev_scores.txt"
EVAL_ASV = "asvspoof2019_la/asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
DEV_ASV = "asvspoof2019_la/asv_scores/ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"
EVAL_PROTOCOL = "asvspoof2019_la/protocols/ASVspoof2019.LA.cm.eval.trl.txt"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_cli(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_published_xlsr_lcnn_eval(
    shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "r.json"
    code, out, err = run(
        [shared_dir / XLSR, "--asv-scores", shared_dir / EVAL_ASV, "--json", out_json], capsys
    )
    assert (code, err) == (0, "")
    r = json.loads(out_json.read_text())
    assert r["eer"] == pytest.approx(0.006357185455653269, rel=REL)
    assert r["eer_threshold"] == pytest.approx(0.3306903541088104, rel=REL)
    assert r["min_tdcf"] == pytest.approx(0.01903686213690652, rel=REL)
    assert r["min_tdcf_2021"] == pytest.approx(0.08057550418704394, rel=REL)
    assert (r["n_bonafide"], r["n_spoof"], r["negated"]) == (7355, 63882, False)
    assert r["asv"] == {
        "eer": pytest.approx(0.02457783738686887, rel=REL),
        "threshold": -5.680051,
        "pfa": pytest.approx(0.024604674888228765, rel=REL),
        "pmiss": pytest.approx(0.024581005586592177, rel=REL),
        "pmiss_spoof": pytest.approx(0.23934754703985472, rel=REL),
    }
    assert round(100 * r["per_attack"]["A17"]["eer"], 3) == 1.402
    assert round(100 * r["per_attack"]["A13"]["eer"], 3) == 0.017
    assert len(r["per_attack"]) == 13
    assert "pooled      63,882   0.6357      0.33069    0.01904     0.08058" in out
    assert "A17          4,914   1.4023" in out
    assert "note" not in out

    # The same through the protocol join: keys and attacks now come from the CM protocol.
    out_json2 = tmp_path / "r2.json"
    code, _, err = run(
        [
            shared_dir / XLSR,
            "--protocol",
            shared_dir / EVAL_PROTOCOL,
            "--asv-scores",
            shared_dir / EVAL_ASV,
            "--json",
            out_json2,
        ],
        capsys,
    )
    assert (code, err) == (0, "")
    r2 = json.loads(out_json2.read_text())
    assert {k: r2[k] for k in ("eer", "min_tdcf", "min_tdcf_2021", "per_attack")} == {
        k: r[k] for k in ("eer", "min_tdcf", "min_tdcf_2021", "per_attack")
    }


def test_published_cqcc_gmm_dev(shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "r.json"
    code, out, err = run(
        [shared_dir / CQCC, "--asv-scores", shared_dir / DEV_ASV, "--json", out_json], capsys
    )
    assert (code, err) == (0, "")
    # This file uses the pre-release attack names; the dev protocol maps them to A01-A06.
    assert "note: renamed the pre-release 2019 LA attack names SS_1->A01, SS_2->A02, SS_4->A03" in out
    r = json.loads(out_json.read_text())
    assert r["format"] == "id-attack-key-score"
    assert r["eer"] == pytest.approx(0.004311408259586024, rel=REL)
    assert r["eer_threshold"] == pytest.approx(1.252953, rel=REL)
    assert r["min_tdcf"] == pytest.approx(0.012266594872011987, rel=REL)
    assert sorted(r["per_attack"]) == [f"A0{i}" for i in range(1, 7)]
    protocol = shared_dir / "asvspoof2019_la/protocols/ASVspoof2019.LA.cm.dev.trl.txt"
    code, out, err = run(
        [shared_dir / CQCC, "--protocol", protocol, "--asv-scores", shared_dir / DEV_ASV, "--json", out_json],
        capsys,
    )
    assert (code, err) == (0, "") and "renamed" not in out
    r2 = json.loads(out_json.read_text())
    assert (r2["min_tdcf"], r2["per_attack"]) == (r["min_tdcf"], r["per_attack"])


def test_every_layout_gives_the_same_numbers(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for name in ("official", "plain", "lcnn"):
        extra = ["--protocol", toy["protocol"]] if name == "plain" else []
        code, _, err = run(
            [toy[name], "--asv-scores", toy["asv"], "--json", tmp_path / f"{name}.json", *extra], capsys
        )
        assert (code, err) == (0, "")
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert [results[n]["format"] for n in results] == [
        "id-attack-key-score",
        "id-score",
        "idattack-score-key",
    ]
    numbers = [
        {k: r[k] for k in ("eer", "eer_threshold", "min_tdcf", "min_tdcf_2021", "asv", "per_attack")}
        for r in results.values()
    ]
    assert numbers[0] == numbers[1] == numbers[2]
    assert numbers[0]["per_attack"]["A01"]["n"] == 30


def test_without_asv_scores_eer_only(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run([toy["official"], "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["min_tdcf"] is None and r["min_tdcf_2021"] is None and r["asv"] is None
    assert r["per_attack"]["A02"]["min_tdcf"] is None
    assert r["per_attack"]["A02"]["eer"] == pytest.approx(score_file_eer(toy["official"], "A02"), rel=1e-12)
    assert "note: no --asv-scores given, so EER only" in out


def test_allow_negated(toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cm = read_scores(toy["official"])
    flipped = tmp_path / "flipped.txt"
    write_scores(flipped, cm.utt_ids.tolist(), -cm.scores, cm.attacks.tolist(), cm.keys.tolist())
    run([toy["official"], "--json", tmp_path / "a.json"], capsys)
    code, out, _ = run([flipped, "--json", tmp_path / "b.json"], capsys)
    assert code == 0 and "--allow-negated" not in out
    code, out, _ = run([flipped, "--allow-negated", "--json", tmp_path / "c.json"], capsys)
    assert code == 0 and "note: --allow-negated NEGATED the scores" in out
    a, b, c = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc")
    assert b["eer"] > 0.5 and (c["negated"], c["eer"]) == (True, a["eer"])
    code, out, _ = run([toy["official"], "--allow-negated"], capsys)
    assert "kept the scores as given" in out


def test_plot_png(toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "plots" / "det.png"
    assert run([toy["official"], "--asv-scores", toy["asv"], "--plot", png], capsys)[0] == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert list(png.parent.iterdir()) == [png]  # no temp file left behind


def test_score_file_reading(toy: dict[str, Path]) -> None:
    official, lcnn = read_scores(toy["official"]), read_scores(toy["lcnn"])
    assert lcnn.fmt == "idattack-score-key"
    assert lcnn.utt_ids.tolist() == official.utt_ids.tolist()
    assert lcnn.attacks.tolist() == official.attacks.tolist()
    # write_scores keeps full float64 precision.
    assert np.array_equal(lcnn.scores, official.scores)
    asv = read_asv_scores(toy["asv"])
    assert (asv.of("target").size, asv.of("nontarget").size, asv.spoof_of("A02").size) == (40, 40, 20)


def test_score_file_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("\nU1 - bonafide 1.5\n\nU2 A01 spoof 0.25\nU3 A01 spoof x\n")
    with pytest.raises(Exception, match=r"s.txt:5: score 'x' is not a number"):
        read_scores(path)


def test_cli_in_a_subprocess_imports_no_torch(toy: dict[str, Path], tmp_path: Path) -> None:
    # Runs the evaluation in a fresh interpreter and lists the heavy modules it imported.
    code = (
        "import sys, runpy; sys.argv = ['evaluate_tDCF_asvspoof19.py', *sys.argv[1:]]\n"
        "try:\n    runpy.run_path('evaluate_tDCF_asvspoof19.py', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'scipy', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(toy["official"]), "--asv-scores", str(toy["asv"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"
    assert "pooled" in out.stdout

    bad = tmp_path / "bad.txt"
    bad.write_text("U1 - bonafide 1\nU2 A01 spoof 1e400x\n")
    out = subprocess.run(
        [sys.executable, "evaluate_tDCF_asvspoof19.py", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr == f"error: {bad}:2: score '1e400x' is not a number\n"
