"""Calibration stored in checkpoints (engine/calibrate_checkpoint.py, generate_score.py --llr) and the
cross-corpus runner (engine/cross_corpus.py) on the tiny corpus and In-the-Wild / 2021 LA layouts made from
its eval audio.

The checkpoint is the untrained demo XLS-R-LCNN of conftest.make_checkpoint (random:narrow SSL front end);
its dev scores come from the tiny corpus's feature store.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import THRESHOLD, make_checkpoint

import generate_score
from data.corpora import get_corpus, read_protocol
from engine.calibrate_checkpoint import calibrate_checkpoint, read_calibration, store_calibration
from engine.calibrate_checkpoint import main as calibrate_main
from engine.cross_corpus import Corpus, run_cross_corpus
from engine.cross_corpus import main as cross_corpus_main
from engine.evaluation import fit_file_calibration
from engine.scoring_model import load_scoring_model
from evaluate_tDCF_asvspoof19 import main as evaluate_main
from utils.calibration import Calibration, bayes_threshold
from utils.checkpoint import load_checkpoint
from utils.errors import run_cli
from utils.scorefiles import read_scores

COMMON = ["--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def calibrated(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A checkpoint, its dev scores beside it (from the store), the calibration fitted into it by the CLI."""
    folder = tmp_path_factory.mktemp("calibrated")
    ckpt, _, _ = make_checkpoint(folder / "best.pt")
    before = load_checkpoint(ckpt)
    dev = folder / "scores_dev.txt"
    argv = ["--checkpoint", ckpt, "--features", tiny_corpus / "feats", "--partition", "dev", "--output", dev]
    assert generate_score.main([str(a) for a in argv] + COMMON) == 0
    assert run_cli(calibrate_main, ["--checkpoint", str(ckpt)]) == 0
    return {"ckpt": ckpt, "dev": dev, "before": before}


def test_calibration_round_trip_through_the_checkpoint(calibrated: dict, tmp_path: Path) -> None:
    ckpt, dev = calibrated["ckpt"], calibrated["dev"]
    expected, _ = fit_file_calibration(dev)
    stored = load_checkpoint(ckpt)
    assert stored["calibration"]["dev_scores"] == str(dev)
    assert read_calibration(ckpt) == expected and math.isfinite(expected.scale * expected.offset)
    assert load_scoring_model(ckpt, torch.device("cpu")).calibration == expected
    # nothing else in the checkpoint changed
    before = calibrated["before"]
    assert set(stored) - set(before) == {"calibration"}
    for key, value in before["model"].items():
        assert torch.equal(stored["model"][key], value), key
    # the evaluator's --calibrate on the same dev file fits the same map
    out = tmp_path / "eval.json"
    assert run_cli(evaluate_main, [str(dev), "--calibrate", str(dev), "--json", str(out)]) == 0
    assert Calibration.from_dict(json.loads(out.read_text())["calibration"]) == expected
    # a dev file with one class changes nothing and says why
    one_class = tmp_path / "one_class.txt"
    one_class.write_text("".join(ln for ln in dev.read_text().splitlines(True) if ln.split()[2] == "spoof"))
    copy = tmp_path / "copy.pt"
    shutil.copy(ckpt, copy)
    with pytest.raises(Exception, match="needs bona fide and spoof scores"):
        calibrate_checkpoint(copy, one_class)
    assert copy.read_bytes() == ckpt.read_bytes()


def test_llr_without_calibration_exits_2_and_writes_nothing(
    tiny_corpus: Path, clips: dict, tmp_path: Path, capsys
) -> None:
    ckpt, _, _ = make_checkpoint(tmp_path / "plain.pt")
    for source in (
        ["--features", str(tiny_corpus / "feats"), "--partition", "dev"],
        ["--audio", str(clips["short"])],
    ):
        out = tmp_path / ("scores.txt" if source[0] == "--features" else "results.csv")
        argv = ["--checkpoint", str(ckpt), *source, "--output", str(out), "--llr", *COMMON]
        assert run_cli(generate_score.main, argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {ckpt}: no score calibration stored") and err.count("\n") == 1
        assert not out.exists()


def test_llr_scores_and_decisions_at_the_bayes_threshold(
    tiny_corpus: Path, clips: dict, tmp_path: Path, capsys
) -> None:
    ckpt, _, _ = make_checkpoint(tmp_path / "best.pt")
    files = [str(clips["short"]), str(clips["stereo"])]  # one window each
    raw_out = tmp_path / "raw.csv"
    assert (
        generate_score.main(["--checkpoint", str(ckpt), "--audio", *files, "--output", str(raw_out), *COMMON])
        == 0
    )
    raw = {r["file"]: float(r["score"]) for r in csv.DictReader(raw_out.open())}
    # a calibration that puts the Bayes threshold between the two scores (decisions must split)
    mid = sum(raw.values()) / 2
    cal = Calibration(
        scale=2.0, offset=bayes_threshold() - 2.0 * mid, prior=0.655, separable=False, n_bonafide=1, n_spoof=1
    )
    store_calibration(ckpt, cal, "hand-made")
    capsys.readouterr()
    out = tmp_path / "llr.json"
    assert (
        generate_score.main(
            ["--checkpoint", str(ckpt), "--audio", *files, "--llr", "--output", str(out), *COMMON]
        )
        == 0
    )
    assert "decisions at the Bayes threshold -ln(beta) on calibrated LLRs (ASVspoof 5 costs) -0.641854" in (
        capsys.readouterr().err
    )
    rows = json.loads(out.read_text())
    assert [r["score"] for r in rows] == [raw[r["file"]] for r in rows]
    for r in rows:
        assert r["llr"] == pytest.approx(2.0 * r["score"] + cal.offset, abs=1e-12)
        assert r["threshold"] == -math.log(1.9)
        assert r["decision"] == ("bonafide" if r["score"] > mid else "spoof")
    assert sorted(r["decision"] for r in rows) == ["bonafide", "spoof"]
    # without --llr the same files are decided at the checkpoint's dev-EER threshold
    assert {float(r["threshold"]) for r in csv.DictReader(raw_out.open())} == {THRESHOLD}
    # partitions: the score file holds the LLRs
    raw_txt, llr_txt = tmp_path / "raw.txt", tmp_path / "llr.txt"
    base = [
        "--checkpoint",
        str(ckpt),
        "--features",
        str(tiny_corpus / "feats"),
        "--partition",
        "dev",
        *COMMON,
    ]
    assert generate_score.main([*base, "--output", str(raw_txt)]) == 0
    assert generate_score.main([*base, "--output", str(llr_txt), "--llr"]) == 0
    a, b = read_scores(raw_txt), read_scores(llr_txt)
    assert list(a.utt_ids) == list(b.utt_ids)
    np.testing.assert_allclose(b.scores, cal.apply(a.scores), rtol=0, atol=1e-12)


# --- corpora in the In-the-Wild and 2021 LA layouts, made from the tiny corpus's eval audio ---------------


def eval_rows(la_root: Path, n_spoof: int) -> list:
    """The bona fide and the first ``n_spoof`` spoof rows of the tiny corpus's eval protocol (fewer trials
    to score: the SSL front end is the slow part)."""
    rows = read_protocol(la_root / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt")
    return [r for r in rows if r.key == "bonafide"] + [r for r in rows if r.key == "spoof"][:n_spoof]


def make_itw(la_root: Path, root: Path) -> None:
    rows = eval_rows(la_root, 2)
    root.mkdir()
    lines = ["file,speaker,label"]
    for k, row in enumerate(rows):
        wave, rate = sf.read(la_root / "ASVspoof2019_LA_eval" / "flac" / f"{row.utt_id}.flac")
        sf.write(root / f"{k}.wav", wave, rate)
        lines.append(f"{k}.wav,spk{k % 3},{'bona-fide' if row.key == 'bonafide' else 'spoof'}")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")


def make_la2021(la_root: Path, root: Path) -> None:
    """Every eval utterance as a 2021 LA trial (codec by position, attacks renamed A07...), phases eval and
    progress, and ASV keys and scores: bona fide = a target and a nontarget trial, spoof = a spoof one."""
    rows = eval_rows(la_root, 3)
    flac = root / "ASVspoof2021_LA_eval" / "flac"
    flac.mkdir(parents=True)
    layout = get_corpus("la2021").conditions
    codecs = [c for c, _ in layout.columns]
    attacks = [a for a, _ in layout.rows]
    rng = np.random.default_rng(5)
    cm, asv_meta, asv_scores = [], [], []
    for k, row in enumerate(rows):
        trial = f"LA_E_{k:07d}"
        shutil.copy(la_root / "ASVspoof2019_LA_eval" / "flac" / f"{row.utt_id}.flac", flac / f"{trial}.flac")
        codec, subset = codecs[k % 2], "progress" if k == len(rows) - 1 else "eval"
        attack = "bonafide" if row.key == "bonafide" else attacks[k % 3]
        cm.append(f"LA_0001 {trial} {codec} ita_tx {attack} {row.key} notrim {subset}")
        pairs = [("target", 4.0), ("nontarget", -4.0)] if row.key == "bonafide" else [("spoof", 0.0)]
        for j, (key, mean) in enumerate(pairs):
            model = f"LA_{j:04d}"
            asv_meta.append(f"{model} {trial} {codec} ita_tx {attack} {key} notrim {subset}")
            asv_scores.append(f"{model} {trial} {rng.normal(mean, 1.0)!r}")
    keys = root / "keys" / "LA"
    (keys / "CM").mkdir(parents=True)
    (keys / "ASV" / "ASVTorch_Kaldi").mkdir(parents=True)
    (keys / "CM" / "trial_metadata.txt").write_text("\n".join(cm) + "\n")
    (keys / "ASV" / "trial_metadata.txt").write_text("\n".join(asv_meta) + "\n")
    (keys / "ASV" / "ASVTorch_Kaldi" / "score.txt").write_text("\n".join(asv_scores) + "\n")


NUMBERS = (
    "eer",
    "eer_threshold",
    "min_tdcf",
    "n_bonafide",
    "n_spoof",
    "min_dcf",
    "act_dcf",
    "cllr",
    "min_cllr",
)


def test_cross_corpus_table_equals_the_evaluator(
    calibrated: dict, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    la = tiny_corpus / "LA"
    make_itw(la, tmp_path / "itw")
    make_la2021(la, tmp_path / "la21")
    out = tmp_path / "table"
    argv = [
        "--checkpoint",
        calibrated["ckpt"],
        "--corpus",
        f"la2019={la}",
        "--corpus",
        f"itw={tmp_path / 'itw'}",
        "--corpus",
        f"la2021={tmp_path / 'la21'}",
        "--features",
        tiny_corpus / "feats",
        "--out",
        out,
        *COMMON,
    ]
    assert run_cli(cross_corpus_main, [str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    assert (
        "[1/3] la2019: scoring 7 trials (store" in captured.err
        and "[2/3] itw: scoring 4 trials (audio" in captured.err
    )
    table = (out / "results.md").read_text()
    assert captured.out == table and "Scores calibrated to LLRs before every measure" in table
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["corpus"] for r in rows] == ["2019 LA eval", "In-the-Wild", "2021 LA eval"]

    dev = str(calibrated["dev"])
    separately = {
        "la2019": [
            out / "scores_la2019.txt",
            "--protocol",
            la / "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt",
            "--asv-scores",
            la / "ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt",
        ],
        "itw": [out / "scores_itw.txt", "--protocol", tmp_path / "itw/meta.csv"],
        "la2021": [
            out / "scores_la2021.txt",
            "--protocol",
            tmp_path / "la21/keys/LA/CM/trial_metadata.txt",
            "--asv-scores",
            tmp_path / "la21/keys/LA/ASV/ASVTorch_Kaldi/score.txt",
            "--asv-metadata",
            tmp_path / "la21/keys/LA/ASV/trial_metadata.txt",
        ],
    }
    for row, (name, argv) in zip(rows, separately.items(), strict=True):
        target = tmp_path / f"{name}.json"
        code = run_cli(
            evaluate_main,
            [str(a) for a in argv] + ["--metrics", "asvspoof5", "--calibrate", dev, "--json", str(target)],
        )
        assert code == 0
        expected, got = json.loads(target.read_text()), json.loads((out / f"{name}.json").read_text())
        assert {k: got[k] for k in NUMBERS} == {k: expected[k] for k in NUMBERS}, name
        assert expected["min_tdcf"] is not None or name == "itw"
        for key in ("eer", "min_tdcf", "min_dcf", "act_dcf", "cllr"):
            assert row[key] == ("" if expected[key] is None else repr(expected[key])), (name, key)
        assert int(row["n_trials"]) == expected["n_bonafide"] + expected["n_spoof"]
    assert rows[2]["n_trials"] == "4"  # the 2021 eval phase: the progress trial is left out
    # the runner's score file is what generate_score.py writes for the same corpus and store
    la_scores = tmp_path / "la_scores.txt"
    argv = ["--checkpoint", calibrated["ckpt"], "--features", tiny_corpus / "feats", "--output", la_scores]
    assert generate_score.main([str(a) for a in argv] + COMMON) == 0
    assert la_scores.read_text() == (out / "scores_la2019.txt").read_text()


def test_cross_corpus_scores_a_manifest_corpus_like_the_same_audio_as_in_the_wild(
    calibrated: dict, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    """``--corpus manifest=FILE``: the manifest's trials are scored from their audio and evaluated as the
    evaluator does with the manifest as protocol; the same audio as an In-the-Wild root gives the same
    numbers."""
    make_itw(tiny_corpus / "LA", tmp_path / "itw")
    manifest = tmp_path / "lists" / "eval.csv"
    manifest.parent.mkdir()
    meta = [line.split(",") for line in (tmp_path / "itw" / "meta.csv").read_text().splitlines()[1:]]
    # paths relative to the manifest's folder; utt_ids given, as In-the-Wild's (the file without .wav)
    manifest.write_text("utt_id,path,label,codec\n" + "".join(
        f"{file[:-4]},../itw/{file},{label},{'mp3' if k % 2 else 'none'}\n"
        for k, (file, _, label) in enumerate(meta)))
    out = tmp_path / "table"
    argv = ["--checkpoint", calibrated["ckpt"], "--corpus", f"manifest={manifest}", "--corpus",
            f"itw={tmp_path / 'itw'}", "--out", out, *COMMON]
    assert run_cli(cross_corpus_main, [str(a) for a in argv]) == 0
    assert "[1/2] manifest: scoring 4 trials (audio" in capsys.readouterr().err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["corpus"], r["n_trials"]) for r in rows] == [("Manifest eval.csv", "4"), ("In-the-Wild", "4")]
    got, itw = (json.loads((out / f"{name}.json").read_text()) for name in ("manifest", "itw"))
    assert (got["n_bonafide"], got["n_spoof"]) == (2, 2)
    assert {k: got[k] for k in NUMBERS} == {k: itw[k] for k in NUMBERS}
    assert (out / "scores_manifest.txt").read_text() == (out / "scores_itw.txt").read_text()
    target = tmp_path / "manifest.json"
    argv = [out / "scores_manifest.txt", "--protocol", manifest, "--metrics", "asvspoof5", "--calibrate",
            calibrated["dev"], "--json", target]
    assert run_cli(evaluate_main, [str(a) for a in argv]) == 0
    expected = json.loads(target.read_text())
    assert {k: got[k] for k in NUMBERS} == {k: expected[k] for k in NUMBERS}
    assert 0 <= got["eer"] <= 1 and rows[0]["eer"] == repr(expected["eer"])


def test_cross_corpus_bad_input_is_one_line_and_writes_nothing(
    calibrated: dict, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"

    def error(*corpora: str) -> str:
        argv = [
            "--checkpoint",
            str(calibrated["ckpt"]),
            *(a for c in corpora for a in ("--corpus", c)),
            "--out",
            str(out),
            *COMMON,
        ]
        assert run_cli(cross_corpus_main, argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and not out.exists()
        return err

    expected = "unknown corpus 'df2019'; expected one of asvspoof5, df2021, itw, la2019, la2021, manifest"
    assert expected in error("df2019=x")
    empty = tmp_path / "empty_itw"
    empty.mkdir()
    assert error(f"la2019={tiny_corpus / 'LA'}", f"itw={empty}") == (
        f"error: {empty / 'meta.csv'}: protocol not found (the eval protocol of itw under {empty})\n"
    )
    assert f"error: {tmp_path / 'nowhere'}: data root not found" in error(f"la2021={tmp_path / 'nowhere'}")
    partial = tmp_path / "partial_itw"
    partial.mkdir()
    (partial / "meta.csv").write_text("file,speaker,label\n0.wav,a,spoof\n1.wav,a,bona-fide\n")
    assert error(f"itw={partial}") == (
        f"error: {partial / '0.wav'}: audio file not found "
        f"(2 of 2 itw trials have no audio under {partial})\n"
    )
    with pytest.raises(Exception, match="given more than once"):
        run_cross_corpus(calibrated["ckpt"], [Corpus("itw", partial)] * 2, out)
