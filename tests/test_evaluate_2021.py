"""evaluate_tDCF_asvspoof19.py beyond 2019 LA: 2021 LA/DF phases and per-condition tables, In-the-Wild,
--metrics asvspoof5 and --calibrate, on generated 2021-style metadata (and the published 2019 scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data.corpora.df2021 import LAYOUT as DF2021_LAYOUT
from data.corpora.la2021 import LAYOUT as LA2021_LAYOUT
from evaluate_tDCF_asvspoof19 import main
from utils.errors import run_cli
from utils.metrics import asv_rates_at, compute_eer, min_tdcf

XLSR = "asvspoof2019_la/cm_scores/xlsr_lcnn_eval_scores.txt"
EVAL_PROTOCOL = "asvspoof2019_la/protocols/ASVspoof2019.LA.cm.eval.trl.txt"
LA_CODECS = [codec for codec, _ in LA2021_LAYOUT.columns]
LA_ATTACKS = [attack for attack, _ in LA2021_LAYOUT.rows]


def run(argv: list, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_cli(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def brute_eer(bona: np.ndarray, spoof: np.ndarray) -> float:
    """EER of tie-free scores by trying every threshold: reject scores < t; one point per trial."""
    thresholds = np.concatenate((np.sort(np.concatenate((bona, spoof))), [np.inf]))
    frr = np.array([np.mean(bona < t) for t in thresholds])
    far = np.array([np.mean(spoof >= t) for t in thresholds])
    k = int(np.argmin(np.abs(frr - far)))
    return float((frr[k] + far[k]) / 2)


@pytest.fixture(scope="module")
def la2021(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Generated 2021 LA keys: CM metadata over three phases, CM scores, ASV metadata and ASV scores.

    Each bona fide trial is an ASV target trial of one model and a nontarget trial of another (trial ids
    repeat across models); A19 has no opus (C7) trials, so that cell is empty.
    """
    folder = tmp_path_factory.mktemp("la2021")
    rng = np.random.default_rng(3)
    cm_lines, asv_meta, asv_scores, score_lines = [], [], [], []
    rows = []  # (trial, codec, attack, key, subset, score)
    n = 0
    for subset, n_bona, n_spoof in (("eval", 9, 4), ("progress", 3, 1), ("hidden", 2, 1)):
        for codec in LA_CODECS:
            for _ in range(n_bona):
                rows.append((f"LA_E_{n:07d}", codec, "bonafide", "bonafide", subset, rng.normal(2, 1)))
                n += 1
            for a, attack in enumerate(LA_ATTACKS):
                if attack == "A19" and codec == "opus":
                    continue
                for _ in range(n_spoof):
                    rows.append((f"LA_E_{n:07d}", codec, attack, "spoof", subset, rng.normal(a / 10, 1)))
                    n += 1
    for k, (trial, codec, attack, key, subset, score) in enumerate(rows):
        cm_lines.append(f"LA_{k % 40:04d} {trial} {codec} ita_tx {attack} {key} notrim {subset}\n")
        score_lines.append(f"{trial} {score!r}\n")
        if key == "bonafide":
            pairs = [
                (f"LA_{k % 40:04d}", "target", rng.normal(5, 1.5)),
                (f"LA_{(k + 7) % 40:04d}", "nontarget", rng.normal(-3, 1.5)),
            ]
        else:
            pairs = [(f"LA_{k % 40:04d}", "spoof", rng.normal(attack_level(attack), 2))]
        for model, asv_key, asv_score in pairs:
            asv_meta.append(f"{model} {trial} {codec} ita_tx {attack} {asv_key} notrim {subset}\n")
            asv_scores.append(f"{model} {trial} {asv_score!r}\n")
    order = rng.permutation(len(asv_scores))  # the join is on (model, trial), not on line order
    paths = {name: folder / f"{name}.txt" for name in ("cm_meta", "scores", "asv_meta", "asv_scores")}
    paths["cm_meta"].write_text("".join(cm_lines))
    paths["scores"].write_text("".join(score_lines))
    paths["asv_meta"].write_text("".join(asv_meta))
    paths["asv_scores"].write_text("".join(asv_scores[i] for i in order))
    return {
        "paths": paths,
        "rows": rows,
        "asv": [line.split() for line in asv_meta],
        "asv_scores": asv_scores,
    }


def attack_level(attack: str) -> float:
    return 1.0 + int(attack[1:]) / 4


def test_la2021_per_condition_eer_and_tdcf(la2021: dict, tmp_path: Path, capsys) -> None:
    p = la2021["paths"]
    out_json = tmp_path / "r.json"
    args = [p["scores"], "--protocol", p["cm_meta"], "--json", out_json]
    code, out, err = run([*args, "--asv-scores", p["asv_scores"], "--asv-metadata", p["asv_meta"]], capsys)
    assert (code, err) == (0, "")
    r = json.loads(out_json.read_text())
    assert (r["track"], r["subset"]) == ("la2021", "eval")
    rows = [row for row in la2021["rows"] if row[4] == "eval"]
    asv_score = {(m, t): float(s) for m, t, s in (line.split() for line in la2021["asv_scores"])}

    def cm(codec: str | None, attack: str | None) -> tuple[np.ndarray, np.ndarray]:
        bona = [s for t, c, a, k, _, s in rows if k == "bonafide" and codec in (None, c)]
        spoof = [
            s for t, c, a, k, _, s in rows if k == "spoof" and codec in (None, c) and attack in (None, a)
        ]
        return np.array(bona), np.array(spoof)

    for codec, cid in LA2021_LAYOUT.columns:
        entry = r["per_condition"][cid]
        bona, spoof = cm(codec, None)
        assert (entry["name"], entry["n_bonafide"], entry["n_spoof"]) == (codec, bona.size, spoof.size)
        assert entry["eer"] == pytest.approx(brute_eer(bona, spoof), abs=1e-12)
        for attack in LA_ATTACKS:
            cell = r["per_cell"]["eer"][attack][cid]
            if attack == "A19" and codec == "opus":
                assert cell is None and r["per_cell"]["min_tdcf"][attack][cid] is None
            else:
                assert cell == pytest.approx(brute_eer(*cm(codec, attack)), abs=1e-12)
    assert r["eer"] == pytest.approx(brute_eer(*cm(None, None)), abs=1e-12)
    assert r["per_cell"]["eer"]["pooled"]["pooled"] == r["eer"]
    assert r["per_cell"]["eer"]["A08"]["pooled"] == pytest.approx(brute_eer(*cm(None, "A08")), abs=1e-12)

    # min t-DCF of a cell: ASV threshold from the cell codec's target/nontarget, spoof of attack and codec.
    asv = [(m, t, c, a, k) for m, t, c, _, a, k, _, sub in la2021["asv"] if sub == "eval"]

    def asv_of(key: str, codec: str | None, attack: str | None = None) -> np.ndarray:
        return np.array(
            [
                asv_score[(m, t)]
                for m, t, c, a, k in asv
                if k == key and codec in (None, c) and attack in (None, a)
            ]
        )

    for codec, attack, cid in (
        ("alaw", "A10", "C2"),
        (None, "A17", "pooled"),
        ("gsm", None, "C6"),
        (None, None, "pooled"),
    ):
        tar, non = asv_of("target", codec), asv_of("nontarget", codec)
        eer, threshold = compute_eer(tar, non)
        rates = asv_rates_at(tar, non, asv_of("spoof", codec, attack), threshold, eer)
        expected = min_tdcf(*cm(codec, attack), rates, revised=True)
        assert r["per_cell"]["min_tdcf"][attack or "pooled"][cid] == pytest.approx(expected, rel=1e-12)
    assert r["min_tdcf"] == r["min_tdcf_2021"] == r["per_cell"]["min_tdcf"]["pooled"]["pooled"]
    assert r["per_condition"]["C6"]["min_tdcf"] == r["per_cell"]["min_tdcf"]["pooled"]["C6"]
    assert 0 < r["min_tdcf"] < 1 and r["asv"]["pfa_spoof"] > 0
    assert "EER %: attack x condition" in out and "min t-DCF (2021): attack x condition" in out
    assert f"({r['n_bonafide']:,} bona fide, {r['n_spoof']:,} spoof; LA 2021, subset eval)" in out
    assert "C7 opus" in out

    # Phases: each subset alone, hidden_track = hidden, all = everything; no ASV -> EER only with a note.
    counts = {}
    for subset in ("progress", "hidden", "hidden_track", "all"):
        code, out, _ = run([*args, "--subset", subset], capsys)
        assert code == 0 and "note: no --asv-scores/--asv-metadata given, so EER only" in out
        r = json.loads(out_json.read_text())
        assert r["min_tdcf"] is None and "min_tdcf" not in r["per_cell"]
        counts[subset] = (r["subset"], r["n_bonafide"], r["n_spoof"])
    assert counts["progress"] == ("progress", 21, 90)
    assert counts["hidden"] == counts["hidden_track"] == ("hidden", 14, 90)
    assert counts["all"] == ("all", 98, 540)


def test_la2021_score_file_with_only_the_subset(la2021: dict, tmp_path: Path, capsys) -> None:
    p = la2021["paths"]
    eval_ids = {row[0] for row in la2021["rows"] if row[4] == "eval"}
    only_eval = tmp_path / "eval_only.txt"
    only_eval.write_text(
        "".join(line for line in p["scores"].read_text().splitlines(True) if line.split()[0] in eval_ids)
    )
    code, _, _ = run([only_eval, "--protocol", p["cm_meta"], "--json", tmp_path / "a.json"], capsys)
    assert code == 0
    code, out, err = run(
        [only_eval, "--protocol", p["cm_meta"], "--subset", "progress", "--json", tmp_path / "b.json"], capsys
    )
    assert code == 2 and not (tmp_path / "b.json").exists()
    assert err.startswith(f"error: {p['cm_meta']}: 111 of 111 trials have no score in {only_eval} (first: ")


def write_df2021(folder: Path, rng: np.random.Generator) -> tuple[Path, Path, list[tuple]]:
    groups = [value for value, _ in DF2021_LAYOUT.rows]
    rows, meta, scores = [], [], []
    for c, (codec, _) in enumerate(DF2021_LAYOUT.columns):
        for _ in range(8):
            rows.append((f"DF_E_{len(rows):07d}", codec, "bonafide", "bonafide", rng.normal(1 + c / 5, 1)))
        for g, group in enumerate(groups):
            for _ in range(3):
                rows.append((f"DF_E_{len(rows):07d}", codec, group, "spoof", rng.normal(g / 3, 1)))
    for trial, codec, group, key, score in rows:
        attack = "bonafide" if key == "bonafide" else "A14"
        meta.append(f"LA_0023 {trial} {codec} asvspoof {attack} {key} notrim eval {group} - - - -\n")
        scores.append(f"{trial} {score!r}\n")
    meta.append("LA_0024 DF_E_9999999 nocodec asvspoof A14 spoof notrim progress unknown - - - -\n")
    (folder / "df_meta.txt").write_text("".join(meta))
    (folder / "df_scores.txt").write_text("".join(scores))
    return folder / "df_meta.txt", folder / "df_scores.txt", rows


def test_df2021_attack_group_by_codec_eer(tmp_path: Path, capsys) -> None:
    meta, scores, rows = write_df2021(tmp_path, np.random.default_rng(5))
    out_json = tmp_path / "r.json"
    code, out, err = run([scores, "--protocol", meta, "--json", out_json], capsys)
    assert (code, err) == (0, "")
    r = json.loads(out_json.read_text())
    assert r["track"] == "df2021" and list(r["per_cell"]) == ["eer"]
    assert list(r["per_condition"]) == [f"C{i}" for i in range(1, 10)]
    for codec, cid in DF2021_LAYOUT.columns:
        bona = np.array([s for _, c, _, k, s in rows if k == "bonafide" and c == codec])
        for group, label in DF2021_LAYOUT.rows:
            spoof = np.array([s for _, c, g, k, s in rows if k == "spoof" and c == codec and g == group])
            assert r["per_cell"]["eer"][label][cid] == pytest.approx(brute_eer(bona, spoof), abs=1e-12)
    assert "EER %: attack group x condition" in out and "Neural non-AR" in out
    assert f"({r['n_bonafide']:,} bona fide, {r['n_spoof']:,} spoof; DF 2021, subset eval)" in out
    assert "note" not in out

    code, _, err = run([scores, "--protocol", meta, "--asv-scores", scores, "--json", out_json], capsys)
    assert (
        code == 2
        and err == f"error: {meta}: 2021 DF is evaluated by EER only (no t-DCF); drop --asv-scores\n"
    )


def test_in_the_wild_pooled_eer_and_histogram(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(2)
    labels = ["bona-fide"] * 30 + ["spoof"] * 50
    scores = np.concatenate((rng.normal(1, 1, 30), rng.normal(-1, 1, 50)))
    (tmp_path / "meta.csv").write_text(
        "file,speaker,label\n" + "".join(f"{i}.wav,S{i % 3},{lab}\n" for i, lab in enumerate(labels))
    )
    (tmp_path / "s.txt").write_text("".join(f"{i} {float(s)!r}\n" for i, s in enumerate(scores)))
    out_json = tmp_path / "r.json"
    code, out, err = run(
        [tmp_path / "s.txt", "--protocol", tmp_path / "meta.csv", "--json", out_json], capsys
    )
    assert (code, err) == (0, "")
    r = json.loads(out_json.read_text())
    assert r["eer"] == pytest.approx(brute_eer(scores[:30], scores[30:]), abs=1e-12)
    assert r["per_attack"] == {} and r["min_tdcf"] is None
    h = r["histogram"]
    assert (sum(h["bonafide"]), sum(h["spoof"]), len(h["edges"])) == (30, 50, 21)
    assert h["edges"][0] == scores.min() and h["edges"][-1] == scores.max()
    assert "score histogram" in out and "note: In-the-Wild has no ASV scores, so EER only" in out


def test_published_xlsr_lcnn_asvspoof5_measures(shared_dir: Path, tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "r.json"
    code, out, err = run([shared_dir / XLSR, "--metrics", "asvspoof5", "--json", out_json], capsys)
    assert (code, err) == (0, "")
    r = json.loads(out_json.read_text())
    assert round(r["min_dcf"], 7) == 0.0170405
    assert round(r["cllr"], 6) == 0.730815
    assert r["act_dcf"] == 1.0 and r["act_threshold"] == pytest.approx(-0.641854, abs=1e-6)
    assert 0 < r["min_cllr"] <= r["cllr"]
    assert r["eer"] == pytest.approx(0.006357185455653269, rel=1e-12)  # the 2019 numbers are untouched
    assert "minDCF 0.01704   actDCF 1.00000" in out


def write_dev(path: Path, bona: np.ndarray, spoof: np.ndarray) -> Path:
    lines = [f"D{i} - bonafide {float(s)!r}\n" for i, s in enumerate(bona)]
    lines += [f"D{len(bona) + i} A01 spoof {float(s)!r}\n" for i, s in enumerate(spoof)]
    path.write_text("".join(lines))
    return path


def test_calibrate_overlapping_scores(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(4)

    def raw_scores(n_bona: int, n_spoof: int) -> tuple[np.ndarray, np.ndarray]:
        # Overlapping classes on a scale far from LLRs: uncalibrated Cllr is well above 1 bit.
        return 8 * rng.normal(2, 1, n_bona) + 30, 8 * rng.normal(-1, 1, n_spoof) + 30

    dev = write_dev(tmp_path / "dev.txt", *raw_scores(300, 600))
    scores = write_dev(tmp_path / "eval.txt", *raw_scores(200, 400))
    raw, cal = tmp_path / "raw.json", tmp_path / "cal.json"
    assert run([scores, "--metrics", "asvspoof5", "--json", raw], capsys)[0] == 0
    code, out, err = run([scores, "--metrics", "asvspoof5", "--calibrate", dev, "--json", cal], capsys)
    assert (code, err) == (0, "")
    r0, r1 = json.loads(raw.read_text()), json.loads(cal.read_text())
    assert r0["cllr"] > 1
    assert r1["cllr"] < 1 and r1["cllr"] < r0["cllr"]
    assert r1["min_cllr"] <= r1["cllr"]
    assert r1["min_cllr"] == pytest.approx(r0["min_cllr"], rel=1e-12)  # monotonic map: minCllr unchanged
    assert (r1["eer"], r1["per_attack"]["A01"]["eer"]) == (r0["eer"], r0["per_attack"]["A01"]["eer"])
    c = r1["calibration"]
    assert (c["n_bonafide"], c["n_spoof"], c["separable"], c["dev_scores"]) == (300, 600, False, str(dev))
    assert 0 < c["scale"] < 1
    assert "note: scores calibrated to LLRs as" in out

    # The dev scores may also come without keys, with their protocol.
    plain = tmp_path / "dev_plain.txt"
    plain.write_text(
        "".join(f"{u} {s}\n" for u, _, _, s in (ln.split() for ln in dev.read_text().splitlines()))
    )
    protocol = tmp_path / "dev_protocol.txt"
    protocol.write_text(
        "".join(f"S {u} - {a} {k}\n" for u, a, k, _ in (ln.split() for ln in dev.read_text().splitlines()))
    )
    code, _, _ = run([scores, "--calibrate", plain, "--calibrate-protocol", protocol, "--json", cal], capsys)
    assert code == 0 and json.loads(cal.read_text())["calibration"]["scale"] == c["scale"]


def test_calibrate_separable_dev_warns_and_stays_finite(toy: dict[str, Path], tmp_path: Path, capsys) -> None:
    dev = write_dev(tmp_path / "dev.txt", np.linspace(5, 9, 40), np.linspace(-9, 1, 80))
    out_json = tmp_path / "r.json"
    code, _, err = run(
        [toy["official"], "--metrics", "asvspoof5", "--calibrate", dev, "--json", out_json], capsys
    )
    assert code == 0
    assert err.startswith(f"warning: {dev}: the development scores separate bona fide and spoof perfectly")
    r = json.loads(out_json.read_text())
    assert r["calibration"]["separable"] is True
    assert np.isfinite([r["calibration"]["scale"], r["calibration"]["offset"], r["cllr"]]).all()
    assert 0 < r["calibration"]["scale"] < 100


BAD_2021 = [
    (
        ["--subset", "phase2"],
        "unknown subset 'phase2'; expected one of eval, progress, hidden, hidden_track, all",
    ),
    (["--asv-scores", "{asv_scores}"], "the 2021 LA t-DCF needs both --asv-scores"),
    (["--asv-metadata", "{cm_meta}", "--asv-scores", "{asv_scores}"], "{cm_meta}:1: ASV key 'spoof' is not"),
]


def test_bad_2021_input_is_one_line_and_writes_nothing(la2021: dict, tmp_path: Path, capsys) -> None:
    p = {k: str(v) for k, v in la2021["paths"].items()}
    out_json = tmp_path / "r.json"

    def error(*argv: str) -> str:
        code, _, err = run([*argv, "--json", out_json], capsys)
        assert code == 2 and not out_json.exists() and err.count("\n") == 1
        return err

    base = [p["scores"], "--protocol", p["cm_meta"]]
    assert "unknown subset 'phase2'; expected one of eval, progress, hidden, hidden_track, all" in error(
        *base, "--subset", "phase2"
    )
    assert "the 2021 LA t-DCF needs both --asv-scores" in error(*base, "--asv-scores", p["asv_scores"])
    # The CM metadata given as the ASV keys, and the ASV keys given as the CM metadata.
    err = error(*base, "--asv-scores", p["asv_scores"], "--asv-metadata", p["cm_meta"])
    assert err.startswith(
        f"error: {p['cm_meta']}:1: ASV key 'bonafide' is not one of target, nontarget, spoof"
    )
    err = error(p["scores"], "--protocol", p["asv_meta"])
    assert err.startswith(f"error: {p['asv_meta']}:1: key 'target' is not one of bonafide, spoof")
    # Metadata of another phase: a file with progress trials only, asked for eval.
    progress = tmp_path / "progress.txt"
    progress.write_text(
        "".join(ln for ln in Path(p["cm_meta"]).read_text().splitlines(True) if ln.endswith("progress\n"))
    )
    err = error(p["scores"], "--protocol", progress)
    assert err.startswith(f"error: {progress}: no trials of subset 'eval' (this file has: progress)")
    # A DF metadata file read as LA (wrong track).
    df_meta, df_scores, _ = write_df2021(tmp_path, np.random.default_rng(0))
    err = error(df_scores, "--protocol", df_meta, "--protocol-format", "la2021")
    assert err.startswith(f"error: {df_meta}:1: codec (LA 2021) 'nocodec' is not one of none, alaw")
    # ASV scores of other (model, trial) pairs; --subset with a 2019 protocol; dev without spoof.
    other = tmp_path / "asv_other.txt"
    other.write_text("LA_9999 LA_E_0000000 1.5\n")
    err = error(*base, "--asv-scores", other, "--asv-metadata", p["asv_meta"])
    assert err.startswith(
        f"error: {other}:1: (LA_9999, LA_E_0000000) and 0 more (model, trial) pairs are not"
    )
    assert "--subset applies to 2021 LA/DF" in error(p["scores"], "--subset", "eval")
    dev = write_dev(tmp_path / "dev.txt", np.array([1.0, 2.0, 3.0]), np.array([]))
    err = error(p["scores"], "--protocol", p["cm_meta"], "--calibrate", dev)
    assert err == f"error: {dev}: calibration needs bona fide and spoof scores (got 3 bona fide, 0 spoof)\n"
