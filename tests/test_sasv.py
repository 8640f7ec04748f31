"""ASVspoof 5 Track 2 (SASV): utils/sasv.py and `evaluate_tDCF_asvspoof19.py --sasv-scores` against the
official package's arithmetic (tests/official_asvspoof5_track2.py), on generated trials with tied scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import official_asvspoof5_track2 as official
import pytest

from evaluate_tDCF_asvspoof19 import format_sasv, main
from utils.errors import run_cli
from utils.sasv import TandemTrials, a_dcf, asv_rates_from_scores, sasv_min_tdcf, t_eer, teer_accelerated

TOL = 1e-9
ATTACKS = ("A17", "A18", "A19")
CODECS = ("-", "C01", "C02")


def random_trials(seed: int, decimals: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """CM and ASV scores of target, nontarget, spoof trials; `decimals` rounds them to force ties."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 150, size=3)

    def draw(means: tuple[float, float, float]) -> list[np.ndarray]:
        out = [rng.normal(m, 1.2, n) for m, n in zip(means, sizes, strict=True)]
        return [np.round(x, decimals) if decimals is not None else x for x in out]

    return draw((2.0, 1.5, -1.0)), draw((2.0, -1.5, 0.7))


@pytest.mark.parametrize("seed", range(8))
def test_measures_equal_the_package(seed: int) -> None:
    cm, asv = random_trials(seed, decimals=(None, 1, 2)[seed % 3])
    sasv = [c + a for c, a in zip(cm, asv, strict=True)]
    assert a_dcf(*sasv) == pytest.approx(official.a_dcf(*sasv), abs=TOL)
    bona = np.concatenate(cm[:2])
    assert sasv_min_tdcf(bona, cm[2]) == pytest.approx(official.min_tdcf(bona, cm[2]), abs=TOL)
    own_asv = sasv_min_tdcf(bona, cm[2], asv_rates_from_scores(*asv))
    assert own_asv == pytest.approx(official.min_tdcf(bona, cm[2], *official.asv_rates(*asv)), abs=TOL)
    teer = t_eer(TandemTrials(*cm, *asv))
    expected = official.compute_teer(*official.teer_inputs(*cm, *asv)) / 100
    assert teer.exact == pytest.approx(expected, abs=TOL)
    # Fewer points than the package decimates to: its search is the exact one.
    assert teer.approx == teer.exact


@pytest.mark.parametrize("seed", range(4))
def test_a_dcf_with_heavy_ties(seed: int) -> None:
    """Integer scores: most DET points lie inside tie groups, where the package's order decides."""
    rng = np.random.default_rng(50 + seed)
    sizes = rng.integers(5, 200, size=3)
    sasv = [np.round(rng.normal(m, 2, n)) for m, n in zip((2, -1, 0.5), sizes, strict=True)]
    assert a_dcf(*sasv) == pytest.approx(official.a_dcf(*sasv), abs=TOL)


@pytest.mark.parametrize("seed", range(2))
def test_exact_teer_on_thousands_of_trials(seed: int) -> None:
    """Enough ASV thresholds for the bracketed bisection to use many brackets; ties in both systems."""
    rng = np.random.default_rng(100 + seed)
    sizes = rng.integers(600, 1500, size=3)
    cm = [np.round(rng.normal(m, 1, n), 1 + seed) for m, n in zip((2, 1.5, -1), sizes, strict=True)]
    asv = [np.round(rng.normal(m, 1, n), 1 + seed) for m, n in zip((2, -1, 0.8), sizes, strict=True)]
    expected = official.compute_teer(*official.teer_inputs(*cm, *asv)) / 100
    assert t_eer(TandemTrials(*cm, *asv), with_approx=False).exact == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("seed", range(6))
def test_decimated_search_equals_the_package(seed: int) -> None:
    """With a small decimation size the package's coarse-to-fine search runs, and we follow it."""
    cm, asv = random_trials(seed, decimals=(None, 1)[seed % 2])
    curves = TandemTrials(*cm, *asv).curves()
    got = teer_accelerated(*curves, size_decimated=9, bin_width=6)
    expected = official.compute_teer_accelerated(*official.teer_inputs(*cm, *asv), size=9, bw=6) / 100
    assert got == pytest.approx(expected, abs=TOL)


def test_the_decimated_search_can_miss() -> None:
    """The reason for the exact search: on these trials the package's decimated search is off."""
    cm, asv = random_trials(3, decimals=None)
    curves = TandemTrials(*cm, *asv).curves()
    exact = official.compute_teer(*official.teer_inputs(*cm, *asv)) / 100
    approx = teer_accelerated(*curves, size_decimated=9, bin_width=6)
    assert abs(approx - exact) > 0.01
    text = format_sasv(
        {"sasv_scores": "s", "n_target": 1, "n_nontarget": 1, "n_spoof": 1, "asv_rates": "r", "a_dcf": 0.5,
         "min_tdcf": 0.25, "t_eer": exact, "t_eer_package": approx}
    )  # fmt: skip
    assert f"decimated t-EER search gives {100 * approx:.5f} %" in text


def write_files(tmp_path: Path, seed: int = 0, sasv_only: bool = False) -> tuple[Path, Path, dict]:
    """A SASV score file and a full key table (attack, codec, one dummy row) with tied scores.

    A19 is only in codec C02 and C02 has no nontarget trials, so some cells are empty.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(360):
        codec = CODECS[k % 3]
        label = ("target", "nontarget", "spoof", "spoof")[k % 4]
        if codec == "C02" and label == "nontarget":
            label = "target"
        attack = "bonafide" if label != "spoof" else ATTACKS[(k // 4) % 2 if codec != "C02" else 2]
        mean_cm, mean_asv = {"target": (2, 2), "nontarget": (1.5, -1.5), "spoof": (-1, 0.7)}[label]
        rows.append((f"E_{k % 7:04d}", f"E_{k:010d}", label, attack, codec,
                     round(rng.normal(mean_cm, 1.3), 1), round(rng.normal(mean_asv, 1.3), 1)))  # fmt: skip
    scores, keys = tmp_path / "sasv_scores.tsv", tmp_path / "sasv_keys.txt"
    score_lines = ["spk\tfilename\tcm-score\tasv-score\tsasv-score"]
    key_lines = ["tar_spk_anon trial_anon cm-label asv-label attack_anon codec track_2_tag"]
    for spk, name, label, attack, codec, c, a in rows:
        cm_text, asv_text = ("-", "-") if sasv_only else (repr(c), repr(a))
        score_lines.append(f"{spk}\t{name}\t{cm_text}\t{asv_text}\t{c + a!r}")
        cm_label = "spoof" if label == "spoof" else "bonafide"
        key_lines.append(f"{spk} {name} {cm_label} {label} {attack} {codec} track2")
    score_lines.append("E_0000\tE_dummy\t-\t-\t1.0" if sasv_only else "E_0000\tE_dummy\t0.5\t0.5\t1.0")
    key_lines.append("E_0000 E_dummy bonafide target bonafide - dummy")
    scores.write_text("\n".join(score_lines) + "\n")
    keys.write_text("\n".join(key_lines) + "\n")
    return scores, keys, {"rows": rows}


def oracle_cell(rows: list, attack: str, codec: str, asv_org: dict | None = None) -> dict | None:
    """The package's full-mode cell, computed from the generated rows with the oracle."""
    sel = [r for r in rows if codec == "pooled" or r[4] == codec]
    tar = [r for r in sel if r[2] == "target"]
    non = [r for r in sel if r[2] == "nontarget"]
    spf = [r for r in sel if r[2] == "spoof" and (attack == "pooled" or r[3] == attack)]
    if not (tar and non and spf):
        return None
    cm = [np.array([r[5] for r in g]) for g in (tar, non, spf)]
    asv = [np.array([r[6] for r in g]) for g in (tar, non, spf)]
    sasv = [np.array([r[5] + r[6] for r in g]) for g in (tar, non, spf)]
    rates = official.asv_rates(*asv) if asv_org else ()
    return {
        "a_dcf": official.a_dcf(*sasv),
        "min_tdcf": official.min_tdcf(np.concatenate(cm[:2]), cm[2], *rates),
        "t_eer": official.compute_teer(*official.teer_inputs(*cm, *asv)) / 100,
    }


def run(argv: list, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_cli(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def check_result(result: dict, rows: list, asv_org: bool = False) -> None:
    pooled = oracle_cell(rows, "pooled", "pooled", {"own": True} if asv_org else None)
    for key in ("a_dcf", "min_tdcf", "t_eer"):
        assert result[key] == pytest.approx(pooled[key], abs=TOL)
    table = result["per_cell"]
    assert list(table) == ["pooled", *ATTACKS]
    assert list(table["pooled"]) == ["pooled", *sorted(CODECS)]
    for attack, row in table.items():
        for codec, cell in row.items():
            expected = oracle_cell(rows, attack, codec, {"own": True} if asv_org else None)
            if expected is None:
                assert cell is None, (attack, codec)
                continue
            for key in ("a_dcf", "min_tdcf", "t_eer"):
                assert cell[key] == pytest.approx(expected[key], abs=TOL), (attack, codec, key)
    assert table["A19"]["C02"] is None and table["pooled"]["C02"] is None  # no nontargets in C02
    assert table["A17"]["C01"] is not None


def test_cli_pooled_and_per_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores, keys, gen = write_files(tmp_path)
    argv = ["--sasv-scores", scores, "--sasv-keys", keys, "--json", tmp_path / "r.json"]
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["n_target"], result["n_nontarget"], result["n_spoof"]) == (120, 60, 180)
    check_result(result, gen["rows"])
    assert f"a-DCF {result['a_dcf']:.5f}" in out


def test_cli_with_organiser_asv_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--asv-scores: the t-DCF's ASV rates come from that file, per cell (here: the system's ASV scores)."""
    scores, keys, gen = write_files(tmp_path)
    asv_file = tmp_path / "asv_org.tsv"
    lines = scores.read_text().splitlines()
    asv_file.write_text("\n".join("\t".join(line.split("\t")[:2] + [line.split("\t")[3]]) for line in lines))
    argv = ["--sasv-scores", scores, "--sasv-keys", keys, "--asv-scores", asv_file]
    argv += ["--json", tmp_path / "r.json"]
    assert run(argv, capsys)[0] == 0
    check_result(json.loads((tmp_path / "r.json").read_text()), gen["rows"], asv_org=True)


def test_cli_sasv_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores, keys, gen = write_files(tmp_path, sasv_only=True)
    code, out, _ = run(["--sasv-scores", scores, "--sasv-keys", keys, "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["a_dcf"] == pytest.approx(oracle_cell(gen["rows"], "pooled", "pooled")["a_dcf"], abs=TOL)
    assert (result["min_tdcf"], result["t_eer"]) == (None, None)
    assert result["per_cell"]["A18"]["-"]["min_tdcf"] is None
    assert "only SASV scores: a_dcf only" in out


def corrupt(path: Path, line: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("which", "line", "text", "message"),
    [
        ("scores", 5, "E_0003\tE_0000000003\t0.1\t0.2", "sasv_scores.tsv:5: expected 5 columns"),
        ("scores", 5, "E_0003\tE_0000000003\t0.1\t0.2\tnan", "sasv_scores.tsv:5: score 'nan' is not finite"),
        ("scores", 5, "E_0003\tE_0000000003\t0.1\t0.2\tx", "sasv_scores.tsv:5: score 'x' is not a number"),
        ("scores", 5, "E_0003\tE_9999999999\t0.1\t0.2\t0.3", "sasv_keys.txt:5: trial 'E_0003 E_00"),
        ("scores", 1, "spk\tfilename\tcm-score\tsasv-score", "sasv_scores.tsv:1: the header must name"),
        ("keys", 4, "E_0002 E_0000000002 bonafide impostor bonafide - track2", "sasv_keys.txt:4: asv-label"),
        ("keys", 4, "E_0002 E_0000000002 bonafide spoof A17 - track2", "sasv_keys.txt:4: asv-label 'spoof'"),
        ("keys", 3, "E_0000 E_0000000000 bonafide target bonafide - track2", "sasv_keys.txt:3: duplicate"),
    ],
)
def test_bad_inputs_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, line: int, text: str, message: str
) -> None:
    scores, keys, _ = write_files(tmp_path)
    corrupt(scores if which == "scores" else keys, line, text)
    out_json = tmp_path / "r.json"
    code, _, err = run(["--sasv-scores", scores, "--sasv-keys", keys, "--json", out_json], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert not out_json.exists()


def test_extra_score_trial_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores, keys, _ = write_files(tmp_path)
    scores.write_text(scores.read_text() + "E_0001\tE_extra\t0.1\t0.2\t0.3\n")
    code, _, err = run(["--sasv-scores", scores, "--sasv-keys", keys], capsys)
    assert code == 2
    assert "sasv_scores.tsv:363: trial 'E_0001 E_extra' is not in" in err


def test_flags_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores, _, _ = write_files(tmp_path)
    code, _, err = run(["--sasv-scores", scores], capsys)
    assert code == 2 and "--sasv-scores and --sasv-keys go together" in err


def test_cm_flags_are_refused_with_sasv_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores, keys, _ = write_files(tmp_path)
    code, _, err = run(["--sasv-scores", scores, "--sasv-keys", keys, "--plot", tmp_path / "p.png"], capsys)
    assert code == 2 and "--plot is for CM score files" in err
