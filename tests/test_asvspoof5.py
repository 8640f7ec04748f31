"""ASVspoof 5: the corpus layout (data/corpora/asvspoof5.py) on generated protocols, and the Track 1
evaluation (utils/track1.py, evaluate_tDCF_asvspoof19.py) against the evaluation package's arithmetic
(tests/official_asvspoof5_track1.py) on a few hundred generated trials with ties and an empty cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_tiny_f0_recipe
from official_asvspoof5_track1 import track1, track1_full

from data.corpora import detect_corpus, get_corpus, read_protocol
from data.corpora.__main__ import main as check_main
from evaluate_tDCF_asvspoof19 import main as evaluate_main
from utils import track1 as track1_module
from utils.errors import UserError, run_cli
from utils.scorefiles import read_scores, write_scores
from utils.track1 import SortedSide, cells_measures, track1_tables

ATTACKS = ("A17", "A18", "A19", "A20")
CODECS = ("-", "C01", "C02", "C03")


def generate_trials(n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Generated eval trials: ids, speakers, keys, attacks ('bonafide' for bona fide rows, as the package's
    keys), codecs and scores rounded to 0.1 (many ties). Attack A20 never appears with codec C03 (an empty
    cell); C03 has bona fide trials only for the other attacks."""
    rng = np.random.default_rng(seed)
    keys = np.where(rng.random(n) < 0.3, "bonafide", "spoof")
    attacks = np.where(keys == "bonafide", "bonafide", rng.choice(ATTACKS, n))
    codecs = rng.choice(CODECS, n)
    attacks[(attacks == "A20") & (codecs == "C03")] = "A19"
    scores = np.round(rng.normal(0, 1.2, n) + np.where(keys == "bonafide", 1.5, -1.0), 1)
    return {
        "ids": np.array([f"E_{i:010d}" for i in range(n)]),
        "speakers": np.array([f"E_{i % 7:04d}" for i in range(n)]),
        "keys": keys,
        "attacks": attacks,
        "codecs": codecs,
        "scores": scores,
    }


def protocol_text(t: dict[str, np.ndarray]) -> str:
    """The 10-column protocol lines of generated trials."""
    lines = []
    columns = (t[k] for k in ("ids", "speakers", "keys", "attacks", "codecs"))
    for utt, spk, key, attack, codec in zip(*columns, strict=True):
        label = "bonafide" if key == "bonafide" else attack
        tag = "-" if key == "bonafide" else "AT01"
        q = "-" if codec == "-" else "3"
        lines.append(f"{spk} {utt} F {codec} {q} - {tag} {label} {key} -\n")
    return "".join(lines)


def write_layout(root: Path, n_per_partition: int = 6, eval_folder: str = "flac_E_eval") -> None:
    """A tiny ASVspoof 5 tree: three protocols and their FLACs (1 s of noise, louder for spoof)."""
    (root / "ASVspoof5_protocols").mkdir(parents=True)
    for prefix, folder, name in (
        ("T", "flac_T", "ASVspoof5.train.tsv"),
        ("D", "flac_D", "ASVspoof5.dev.track_1.tsv"),
        ("E", eval_folder, "ASVspoof5.eval.track_1.tsv"),
    ):
        (root / folder).mkdir()
        lines = []
        for i in range(n_per_partition):
            utt = f"{prefix}_{i:010d}"
            key = "bonafide" if i % 3 == 0 else "spoof"
            label = "bonafide" if key == "bonafide" else f"A{i % 4 + 1:02d}"
            codec = "-" if i % 2 else "C01"
            lines.append(f"{prefix}_{i % 2:04d} {utt} M {codec} - - - {label} {key} -\n")
            noise = np.random.default_rng(i).standard_normal(16000) * (0.05 if key == "bonafide" else 0.2)
            sf.write(root / folder / f"{utt}.flac", noise, 16000, format="FLAC", subtype="PCM_16")
        (root / "ASVspoof5_protocols" / name).write_text("".join(lines))


# ----------------------------------------------------------------------------------------- the layout


def test_protocol_rows_carry_attack_and_codec(tmp_path: Path) -> None:
    path = tmp_path / "ASVspoof5.eval.track_1.tsv"
    path.write_text(
        "E_0001 E_0000000001 F C05 4 123 AT17 A17 spoof -\n\n"
        "E_0002 E_0000000002 M - - - - bonafide bonafide -\n"
    )
    first, second = read_protocol(path)
    assert (first.speaker, first.utt_id, first.attack, first.key, dict(first.extra)) == (
        "E_0001", "E_0000000001", "A17", "spoof", {"codec": "C05"}
    )
    assert (second.attack, second.key, dict(second.extra)) == ("-", "bonafide", {"codec": "-"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("E_1 E_01 F - - - - bonafide bonafide -\nE_1 E_02 F - - - A17 spoof -\n",
         "x.tsv:2: expected 10 columns 'SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q CODEC_SEED "
         "ATTACK_TAG ATTACK_LABEL KEY TMP', got 9"),
        ("E_1 E_01 F - - - - bonafide bonafide -\nE_1 E_02 F - - - AT A17 fake -\n",
         "x.tsv:2: key 'fake' is not one of bonafide, spoof"),
        ("E_1 E_01 F - - - - bonafide bonafide -\n\nE_1 E_01 F - - - - bonafide bonafide -\n",
         "duplicate utt_id 'E_01'"),
    ],
)
def test_bad_protocol_lines_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.tsv"
    path.write_text(text)
    for read in (lambda c: c.parse(path, text), lambda c: c.trial_columns(path)):  # (the latter: from bytes)
        with pytest.raises(UserError) as info:
            read(get_corpus("asvspoof5"))
        assert message in str(info.value) and "\n" not in str(info.value)
        assert str(info.value).startswith(str(path))


def test_the_package_key_file_is_read_and_detected(tmp_path: Path) -> None:
    path = tmp_path / "keys.tsv"
    path.write_text("filename\tcm-label\nE_01\tbonafide\nE_02\tspoof\n")
    assert detect_corpus(path, path.read_text()) is get_corpus("asvspoof5")
    assert [(r.utt_id, r.key) for r in read_protocol(path)] == [("E_01", "bonafide"), ("E_02", "spoof")]
    path.write_text("filename\tcm-label\nE_01\tbonafide\nE_02\tmaybe\n")
    with pytest.raises(UserError, match=r"keys.tsv:3: cm-label 'maybe' is not one of bonafide, spoof$"):
        read_protocol(path)


@pytest.mark.parametrize("eval_folder", ["flac_E_eval", "flac_E"])
def test_check_a_generated_tree(tmp_path: Path, capsys, eval_folder: str) -> None:
    write_layout(tmp_path, eval_folder=eval_folder)
    assert run_cli(check_main, ["check", "asvspoof5", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"asvspoof5 (ASVspoof 5) under {tmp_path}"
    assert out.count("audio: all 6 files present") == 3 and out.endswith("ok\n")
    rows = get_corpus("asvspoof5").read(tmp_path, "eval")
    assert rows[0].path == str(tmp_path / eval_folder / "E_0000000000.flac")
    (tmp_path / eval_folder / "E_0000000001.flac").unlink()
    assert run_cli(check_main, ["check", "asvspoof5", str(tmp_path), "--partitions", "eval"]) == 1
    assert f"missing {tmp_path / eval_folder / 'E_0000000001.flac'}" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ Track 1 tables


def brute_min_cllr(bona: np.ndarray, spoof: np.ndarray) -> float:
    """minCllr by the textbook PAV: one block per distinct score, merge the first adjacent pair whose
    posteriors do not increase until none is left; LLR = logit(P) − ln(N_bona/N_spoof); pure blocks cost 0."""
    values = np.unique(np.concatenate((bona, spoof)))
    blocks = [[int(np.sum(bona == v)), int(np.sum(spoof == v))] for v in values]
    merged = True
    while merged:
        merged = False
        for k in range(len(blocks) - 1):
            (b1, s1), (b2, s2) = blocks[k], blocks[k + 1]
            if b1 / (b1 + s1) >= b2 / (b2 + s2):
                blocks[k : k + 2] = [[b1 + b2, s1 + s2]]
                merged = True
                break
    total = 0.0
    for b, s in blocks:
        if b and s:
            llr = np.log(b / s) - np.log(bona.size / spoof.size)
            total += b * np.log1p(np.exp(-llr)) / bona.size + s * np.log1p(np.exp(llr)) / spoof.size
    return float(0.5 * total / np.log(2))


def test_track1_tables_equal_the_package_arithmetic() -> None:
    t = generate_trials()
    ours = track1_tables(t["scores"], t["keys"] == "bonafide", t["attacks"], t["codecs"])
    oracle = track1_full(t["scores"], t["keys"], t["attacks"], t["codecs"])
    assert ours["attacks"] == list(ATTACKS) and ours["codecs"] == list(CODECS)
    assert list(ours["per_cell"]) == ["pooled", *ATTACKS]
    assert ours["per_cell"]["A20"]["C03"] is None and oracle["A20"]["C03"] is None
    n_cells = 0
    for attack, row in oracle.items():
        assert list(ours["per_cell"][attack]) == ["pooled", *CODECS]
        for codec, expected in row.items():
            got = ours["per_cell"][attack][codec]
            if expected is None:
                assert got is None
                continue
            n_cells += 1
            for key, value in expected.items():
                assert got[key] == pytest.approx(value, abs=1e-12, rel=0), (attack, codec, key)
            in_codec = np.ones(t["scores"].size, bool) if codec == "pooled" else t["codecs"] == codec
            spoof = t["keys"] == "spoof" if attack == "pooled" else t["attacks"] == attack
            bona = t["scores"][in_codec & (t["keys"] == "bonafide")]
            expected_min_cllr = brute_min_cllr(bona, t["scores"][in_codec & spoof])
            assert got["min_cllr"] == pytest.approx(expected_min_cllr, abs=1e-12)
    assert n_cells == 5 * 5 - 1
    assert ours["pooled"] == ours["per_cell"]["pooled"]["pooled"]


@pytest.mark.parametrize("resolution", [1.0, 0.25, 0.01])
def test_cell_measures_equal_the_package_on_small_cells_with_ties(resolution: float) -> None:
    # cells_measures never builds the merged DET curve (minDCF at run starts, the EER crossing located,
    # minCllr's hull corners where spoof values end); every cell below, uneven sizes, one class much
    # larger, all scores tied in some, must give the package's EER and minDCF, our minCllr oracle.
    rng = np.random.default_rng(int(resolution * 100))
    for _ in range(150):
        n_bona, n_spoof = rng.integers(1, 40, 2)
        bona = np.round(rng.normal(rng.normal(1, 1), 1.5, n_bona) / resolution) * resolution
        spoof = np.round(rng.normal(-1, 1.5, n_spoof) / resolution) * resolution
        if rng.random() < 0.1:
            bona, spoof = bona * 0, spoof * 0
        got = track1_tables(np.concatenate((bona, spoof)), np.arange(n_bona + n_spoof) < n_bona,
                            np.array(["A1"] * (n_bona + n_spoof)))["pooled"]  # fmt: skip
        expected = track1(bona, spoof)
        for key in ("eer", "min_dcf", "act_dcf"):
            assert got[key] == pytest.approx(expected[key], abs=1e-15), (key, bona, spoof)
        assert got["min_cllr"] == pytest.approx(brute_min_cllr(bona, spoof), abs=1e-12)


@pytest.mark.parametrize("batch", [1, 50, 1 << 18])
def test_cells_in_one_batch_equal_cells_one_by_one(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    # Batched cells share arrays (segments, stretches of equal bona fide counts, one hull pass): each
    # cell's measures must be exactly those it has alone, empty cells None, whatever the batch size.
    rng = np.random.default_rng(batch)
    cells = []
    for _ in range(40):
        n_bona, n_spoof = rng.integers(0, 60, 2)
        bona = np.sort(np.round(rng.normal(1, 1.5, n_bona), int(rng.integers(0, 3))))
        spoof = np.sort(np.round(rng.normal(-1, 1.5, n_spoof), int(rng.integers(0, 3))))
        cells.append((SortedSide(bona, True), SortedSide(spoof, False)))
    alone = [cells_measures([cell])[0] for cell in cells]
    monkeypatch.setattr(track1_module, "_BATCH_TRIALS", batch)
    assert cells_measures(cells) == alone
    assert cells_measures(cells, workers=2) == alone  # (forked processes where the system has fork)
    empty = sum(b.scores.size == 0 or s.scores.size == 0 for b, s in cells)
    assert sum(m is None for m in alone) == empty > 0
    for (bona, spoof), measures in zip(cells, alone, strict=True):
        if measures is not None:
            expected = track1(bona.scores, spoof.scores)
            for key in ("eer", "min_dcf", "act_dcf"):
                assert measures[key] == pytest.approx(expected[key], abs=1e-15)
            assert measures["min_cllr"] == pytest.approx(brute_min_cllr(bona.scores, spoof.scores), abs=1e-12)


def test_bona_fide_counts_below_each_spoof_score_merged_or_searched() -> None:
    rng = np.random.default_rng(3)
    for n_bona, n_spoof in ((100, 10), (100, 40), (10, 100), (0, 5), (5, 1)):
        bona = np.sort(np.round(rng.normal(0, 1, n_bona), 1))
        spoof = np.sort(np.round(rng.normal(0, 1, n_spoof), 1))
        got = track1_module._bona_before(bona, spoof)
        assert got.tolist() == [int(np.count_nonzero(bona <= s)) for s in spoof]


def test_track1_ties_count_bona_fide_first() -> None:
    # Every score tied: the package (and we) puts bona fide first among equal scores.
    scores = np.zeros(6)
    is_bona = np.array([True, False, True, False, False, False])
    cell = track1_tables(scores, is_bona, np.array(["-", "A1", "-", "A1", "A1", "A1"]))["pooled"]
    # minDCF: min(accept all = Cfa·Pspoof/0.5 = 1.0, reject all = Cmiss·(1−Pspoof)/0.5 = 1.9) = 1.0
    # actDCF at τ = −ln 1.9 < 0: every trial accepted -> Pfa = 1 -> 1.0; Cllr and minCllr: 1 bit.
    # EER: with the bona fide trials rejected first, |frr − far| first reaches 0 at frr = far = 1.
    assert cell == {"min_dcf": 1.0, "act_dcf": 1.0, "cllr": 1.0, "min_cllr": 1.0, "eer": 1.0}
    oracle = track1_full(scores, np.where(is_bona, "bonafide", "spoof"), np.array(["bonafide", "A1"] * 3),
                         np.array(["-"] * 6))["pooled"]["pooled"]
    assert oracle == {"min_dcf": 1.0, "act_dcf": 1.0, "cllr": 1.0, "eer": 1.0}


# --------------------------------------------------------------------------------- the evaluator CLI


def run_eval(argv: list, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_cli(evaluate_main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def write_eval_files(tmp_path: Path, t: dict[str, np.ndarray]) -> dict[str, Path]:
    """The protocol, our 'utt_id attack key score' file, the package's score and key files (shuffled)."""
    protocol = tmp_path / "ASVspoof5.eval.track_1.tsv"
    protocol.write_text(protocol_text(t))
    ours = tmp_path / "scores.txt"
    write_scores(ours, t["ids"].tolist(), t["scores"], t["attacks"].tolist(), t["keys"].tolist())
    order = np.random.default_rng(1).permutation(t["ids"].size)
    package_scores = tmp_path / "package_scores.tsv"
    package_scores.write_text(
        "filename\tcm-score\n" + "".join(f"{t['ids'][i]}\t{t['scores'][i]}\n" for i in order)
    )
    package_keys = tmp_path / "package_keys.tsv"
    package_keys.write_text(
        "filename\tcm-label\n" + "".join(f"{t['ids'][i]}\t{t['keys'][i]}\n" for i in order)
    )
    return {"protocol": protocol, "ours": ours, "scores": package_scores, "keys": package_keys}


def test_track1_cli_json_equals_the_package(tmp_path: Path, capsys) -> None:
    t = generate_trials()
    files = write_eval_files(tmp_path, t)
    oracle = track1_full(t["scores"], t["keys"], t["attacks"], t["codecs"])
    for scores in (files["ours"], files["scores"]):
        out_json = tmp_path / "r.json"
        code, out, err = run_eval([scores, "--protocol", files["protocol"], "--json", out_json], capsys)
        assert (code, err) == (0, "")
        result = json.loads(out_json.read_text())
        assert result["format"] == ("asvspoof5" if scores == files["scores"] else "id-attack-key-score")
        assert (result["n_bonafide"], result["n_spoof"]) == (int(np.sum(t["keys"] == "bonafide")),
                                                            int(np.sum(t["keys"] == "spoof")))
        for key, value in oracle["pooled"]["pooled"].items():
            assert result[key] == pytest.approx(value, abs=1e-12, rel=0)
        assert result["per_cell"]["A20"]["C03"] is None
        assert set(result["per_cell"]["A17"]["C01"]) == {"min_dcf", "act_dcf", "cllr", "min_cllr", "eer"}
        for attack, row in oracle.items():
            for codec, expected in row.items():
                for key, value in (expected or {}).items():
                    assert result["per_cell"][attack][codec][key] == pytest.approx(value, abs=1e-12, rel=0)
        pooled = oracle["pooled"]["pooled"]
        assert f"pooled: minDCF {pooled['min_dcf']:.6f}   actDCF {pooled['act_dcf']:.6f}" in out
        assert "minDCF: attack x codec" in out and out.count("\nA20 ") == 5


def test_the_package_key_file_gives_the_pooled_measures(tmp_path: Path, capsys) -> None:
    t = generate_trials()
    files = write_eval_files(tmp_path, t)
    out_json = tmp_path / "r.json"
    code, _, err = run_eval([files["scores"], "--protocol", files["keys"], "--json", out_json], capsys)
    assert (code, err) == (0, "")
    result = json.loads(out_json.read_text())
    expected = track1_full(t["scores"], t["keys"], t["attacks"], t["codecs"])["pooled"]["pooled"]
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12, rel=0)
    assert result["codecs"] == [] and list(result["per_cell"]["pooled"]) == ["pooled"]


def test_bad_package_files_are_one_line_errors(tmp_path: Path, capsys) -> None:
    t = generate_trials(20)
    files = write_eval_files(tmp_path, t)
    bad = tmp_path / "bad.tsv"
    bad.write_text("filename\tcm-score\nE_0000000000\t0.5\nE_0000000001\tlow\n")
    code, out, err = run_eval([bad, "--protocol", files["protocol"]], capsys)
    assert (code, out, err) == (2, "", f"error: {bad}:3: score 'low' is not a number\n")
    bad.write_text("filename\tcm-score\n")
    assert run_eval([bad, "--protocol", files["protocol"]], capsys)[2] == (
        f"error: {bad}:1: no scores after the header\n"
    )
    bad.write_text("filename\tcm-score\nE_0000000000\t0.5\n")
    err = run_eval([bad, "--protocol", files["protocol"]], capsys)[2]
    assert err == f"error: {files['protocol']}: 19 of 20 protocol trials have no score in {bad} " \
        "(first: E_0000000001, E_0000000002, E_0000000003, ...)\n"


def test_generate_score_format_asvspoof5_round_trips(checkpoint, tiny_corpus: Path, tmp_path: Path) -> None:
    import generate_score

    path, _, _ = checkpoint
    argv = ["--checkpoint", str(path), "--features", str(tiny_corpus / "feats"), "--partition", "eval",
            "--no-progress"]
    ours, package = tmp_path / "ours.txt", tmp_path / "package.tsv"
    assert generate_score.main([*argv, "--output", str(ours)]) == 0
    assert generate_score.main([*argv, "--output", str(package), "--format", "asvspoof5"]) == 0
    lines = package.read_text().splitlines()
    assert lines[0] == "filename\tcm-score" and all(len(line.split("\t")) == 2 for line in lines[1:])
    a, b = read_scores(ours), read_scores(package)
    assert b.fmt == "asvspoof5" and b.keys is None
    assert b.utt_ids.tolist() == a.utt_ids.tolist() and b.scores.tolist() == a.scores.tolist()


def test_a_generated_asvspoof5_corpus_runs_the_whole_recipe(tmp_path: Path) -> None:
    """preprocess -> train -> score -> evaluate with run_recipe.py on the asvspoof5 layout; the evaluation
    is the Track 1 one (per attack x codec)."""
    root = tmp_path / "ASVspoof5"
    write_layout(root, n_per_partition=9)
    out = run_tiny_f0_recipe(tmp_path, root, "asvspoof5", "a5")
    scores = read_scores(out / "scores" / "a5_eval.txt")
    assert scores.utt_ids.tolist() == [f"E_{i:010d}" for i in range(9)]
    result = json.loads((out / "eval" / "a5_eval.json").read_text())
    assert result["protocol"] == str(root / "ASVspoof5_protocols" / "ASVspoof5.eval.track_1.tsv")
    assert (result["n_bonafide"], result["n_spoof"], result["codecs"]) == (3, 6, ["-", "C01"])
    attacks = np.where(scores.keys == "bonafide", "bonafide", scores.attacks)
    codecs = np.array(["C01", "-"] * 4 + ["C01"])
    expected = track1_full(scores.scores, scores.keys, attacks, codecs)
    for attack, row in expected.items():
        for codec, cell in row.items():
            for key, value in (cell or {}).items():
                assert result["per_cell"][attack][codec][key] == pytest.approx(value, abs=1e-12)
