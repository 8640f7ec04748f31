"""What the toolkit guarantees when a run is killed or is given bad input, in one place.

Kill and resume
- preprocess.py killed with SIGKILL mid-run resumes to a store byte-identical to an uninterrupted run
  and recomputes nothing that was already committed (F0 and SSL front ends); a third run has nothing to do.
- Training (main_train.py) killed with SIGKILL between epochs resumes with --resume to the same weights,
  optimizer state and history as a run that was never interrupted; also from audio with on-the-fly
  augmentation (RawBoost) computed in DataLoader workers.

Bad audio
- Reading a missing file, a directory, an empty file, a text file named .flac, a truncated FLAC, a
  zero-length WAV or a WAV with NaN samples is a one-line error that names the file.
- preprocess.py stops at the first bad file with a one-line error naming it and exit code 2, keeping the
  rows already done; with --skip-bad it marks the file bad, lists it in the .bad.tsv report and the datasets
  exclude it; bad rows stay bad on a rerun and --retry-bad recomputes them once the file is fixed.

Bad settings
- Reopening a feature store with other settings (shard count, utterance list) or asking for a shard that
  does not exist: one-line error naming the store, exit 2.
- Training with a wrong input shape, a missing feature store, an unknown config key or a batch size not
  divisible by grad_accum: one-line error, exit 2, no checkpoint written.

Malformed score, ASV and protocol files (evaluate_tDCF_asvspoof19.py)
- Wrong column count, a non-numeric, NaN or infinite score, a duplicate utt_id, an unknown key, an
  unknown or ambiguous layout, an empty file, one class only or hard decisions: "error: file:line: ..."
  (or "error: file: ..."), exit 2, no JSON written.
- A missing or binary file, a malformed or unusable ASV file, bad priors, protocol trials without a score
  or scores not in the protocol, and eval CM scores with dev ASV scores: one-line error, exit 2.

Mismatched checkpoint and features (generate_score.py)
- Features from another front end or of another shape than the model expects, a missing store, a
  truncated or foreign checkpoint, a missing audio file, a bad output suffix or SSL model directory:
  one-line error, exit 2, no output written.

Untrusted pickles (models/import_released.py)
- A pickle with a disallowed global is refused without running it, even with --trust-pickle, and no
  output is written; without --trust-pickle a release is refused: one-line error, exit 2, no output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import (
    CONFIGS,
    GOOD,
    REPO,
    make_checkpoint,
    make_release,
    train_until_first_checkpoint_then_kill,
    write_corpus,
)
from test_evaluate_cli import DEV_ASV, XLSR
from test_evaluate_cli import run as run_evaluate
from test_preprocess import f0_args
from test_preprocess import run as run_preprocess
from test_train import assert_same_weights

import generate_score
import main_train
import preprocess
from data.audio import SAMPLE_RATE, load_audio
from data.store import BAD, DONE, FeatureStore
from models import import_released
from utils.checkpoint import load_checkpoint
from utils.errors import UserError, run_cli

# --- Kill and resume -----------------------------------------------------------------------------------


def store_files(store_dir: Path) -> dict[str, bytes]:
    """Every file of a store except the bad-file reports (content compared byte by byte)."""
    return {p.name: p.read_bytes() for p in sorted(store_dir.iterdir()) if not p.name.endswith(".bad.tsv")}


@pytest.mark.parametrize(
    ("frontend", "extra", "n_rows"),
    [("f0", [], len(GOOD)), ("ssl-random-tiny", ["--ssl-model", "random:tiny", "--limit", "4"], 4)],
)
def test_resume_after_sigkill_is_byte_identical_and_recomputes_nothing(
    corpus, tmp_path, capsys, two_threads, frontend, extra, n_rows
) -> None:
    """Kill -9 a real preprocess.py process after some rows are done, rerun, compare with a clean run."""

    def args(out: Path, *more: str) -> list[str]:
        return ["--data-root", str(corpus), "--partitions", "train", "--frontend", frontend.split("-")[0],
                "--out", str(out), "--no-progress", "--batch-size", "2", *extra, *more]

    assert run_cli(preprocess.main, args(tmp_path / "clean")) == 0
    store_dir = tmp_path / "killed" / frontend / "train"
    status_file = store_dir / "shard-0000-of-0001.status.npy"
    # --throttle pauses 1 s after each committed batch of 2, so the kill lands mid-run even on a slow box.
    cmd = [sys.executable, "preprocess.py", *args(tmp_path / "killed", "--throttle", "1")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=two_threads)
    done = 0
    try:
        deadline = time.monotonic() + 300
        while done == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
            if status_file.exists():
                done = int((np.load(status_file) == DONE).sum())
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    done = int((np.load(status_file) == DONE).sum())
    assert 0 < done < n_rows
    capsys.readouterr()

    code, out, err = run_preprocess(args(tmp_path / "killed"), capsys)
    assert code == 0, err
    assert f"({done} already done, {n_rows - done} computed, 0 bad)" in out
    assert store_files(store_dir) == store_files(tmp_path / "clean" / frontend / "train")
    # a third run has nothing left to do
    code, out, _ = run_preprocess(args(tmp_path / "killed"), capsys)
    assert code == 0 and f"({n_rows} already done, 0 computed, 0 bad)" in out


def kill_after_first_epoch_then_resume(args: list[str], tmp_path: Path, epochs: int) -> None:
    """Run main_train.py ``args``, SIGKILL it after epoch 1's checkpoint, resume it, and compare its final
    checkpoint with an uninterrupted run's: same weights, optimizer state and history (losses, EERs,
    thresholds, learning rates), bit for bit."""
    killed = tmp_path / "killed"
    train_until_first_checkpoint_then_kill(args, killed)
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1
    assert main_train.main([*args, "--out", str(killed), "--resume"]) == 0
    assert main_train.main([*args, "--out", str(tmp_path / "straight")]) == 0
    resumed = load_checkpoint(killed / "last.pt")
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert resumed["epoch"] == straight["epoch"] == epochs
    assert_same_weights(resumed["model"], straight["model"])
    assert_same_weights(resumed["optimizer"]["state"][0], straight["optimizer"]["state"][0])
    assert len((killed / "history.csv").read_text().splitlines()) == epochs + 1
    # the same history, but for the wall-clock time of each epoch
    untimed = [[{k: v for k, v in row.items() if k != "time_s"} for row in state["history"]]
               for state in (resumed, straight)]
    assert untimed[0] == untimed[1]


COMMON = ["train.batch_size=4", "--no-eval", "--no-progress", "--deterministic", "--device", "cpu"]


def test_resume_after_sigkill_ends_with_the_same_weights(tiny_corpus: Path, tmp_path: Path) -> None:
    args = ["--config", str(CONFIGS / "demo_xlsr_lcnn.yaml"), "--features", str(tiny_corpus / "feats"),
            "train.epochs=3", *COMMON]  # fmt: skip
    kill_after_first_epoch_then_resume(args, tmp_path, epochs=3)


def test_resume_after_sigkill_with_augmentation_in_workers_ends_with_the_same_weights(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """The F0 recipe from audio with RawBoost (LA preset) in 2 DataLoader workers: the resumed epoch draws
    the same augmentation as the uninterrupted run's (keyed by seed, epoch and utterance)."""
    args = ["--config", str(CONFIGS / "demo_sr_la_res2net_f0.yaml"), "--on-the-fly", "--data-root",
            str(tiny_corpus / "LA"), "augment.preset=la", "train.num_workers=2", "train.epochs=2",
            # a smaller F0 map and Res2Net (same blocks) keep the four epochs short
            "frontend.n_frames=50", "model.input_shape=[1, 45, 50]", "model.layers=[1, 1, 1, 1]",
            *COMMON]  # fmt: skip
    kill_after_first_epoch_then_resume(args, tmp_path, epochs=2)
    record = json.loads((tmp_path / "killed" / "environment.json").read_text())
    assert record["augment"]["rawboost"]["algo"] == 5


# --- Bad audio -----------------------------------------------------------------------------------------


def _assert_user_error(path, words: str) -> None:
    with pytest.raises(UserError) as info:
        load_audio(path)
    msg = str(info.value)
    assert str(path) in msg and words in msg and "\n" not in msg


def test_missing_file(tmp_path):
    _assert_user_error(tmp_path / "nope.flac", "not found")


def test_directory_instead_of_file(tmp_path):
    _assert_user_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    _assert_user_error(path, "empty")


def test_text_file_named_flac(tmp_path):
    path = tmp_path / "notes.flac"
    path.write_text("this is not audio\n")
    _assert_user_error(path, "cannot read audio")


def test_truncated_flac(tmp_path):
    good = tmp_path / "good.flac"
    sf.write(good, np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1, SAMPLE_RATE)
    data = good.read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    _assert_user_error(path, "cannot read audio")


def test_zero_length_wav(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    _assert_user_error(path, "no samples")


def test_nan_samples(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.1, np.nan, 0.2], dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    _assert_user_error(path, "NaN")


BAD_SPECS = [("LA_T_1000000", "16k"), ("LA_T_1000001", "empty"), ("LA_T_1000002", "16k"),
             ("LA_T_1000003", "truncated"), ("LA_T_1000004", "text"), ("LA_T_1000005", "short")]


def test_bad_audio_stops_with_one_line_error_then_skip_bad_marks_it(tmp_path, capsys) -> None:
    root, out = tmp_path / "corpus", tmp_path / "out"
    write_corpus(root, BAD_SPECS)
    flac = root / "ASVspoof2019_LA_train" / "flac"
    proc = subprocess.run([sys.executable, "preprocess.py", *f0_args(root, out, "--batch-size", "1")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {flac / 'LA_T_1000001.flac'}:") and "Traceback" not in proc.stderr
    store_dir = out / "f0" / "train"
    status = np.load(store_dir / "shard-0000-of-0001.status.npy")
    assert status.tolist() == [DONE, 0, 0, 0, 0, 0]  # the finished row stays finished

    # each kind of bad file is reported by name
    for utt in ("LA_T_1000003", "LA_T_1000004"):
        bad_root = tmp_path / f"only_{utt}"
        write_corpus(bad_root, [s for s in BAD_SPECS if s[0] == utt])
        code, _, err = run_preprocess(f0_args(bad_root, tmp_path / f"out_{utt}"), capsys)
        assert code == 2 and err.startswith(f"error: {bad_root}") and f"{utt}.flac" in err
        assert err.count("\n") == 1

    code, text, err = run_preprocess(f0_args(root, out, "--batch-size", "1", "--skip-bad"), capsys)
    assert code == 0, err
    assert "(1 already done, 2 computed, 3 bad)" in text
    store = FeatureStore(store_dir)
    assert store.status.tolist() == [DONE, BAD, DONE, BAD, BAD, DONE]
    report = (store_dir / "shard-0000-of-0001.bad.tsv").read_text().splitlines()
    assert [line.split("\t")[:2] for line in report] == [
        [utt, str(flac / f"{utt}.flac")] for utt in ("LA_T_1000001", "LA_T_1000003", "LA_T_1000004")]
    assert [b[0] for b in store.bad_files()] == ["LA_T_1000001", "LA_T_1000003", "LA_T_1000004"]

    from data.dataset import StoreDataset

    dataset = StoreDataset(store_dir)
    assert [r.utt_id for r in dataset.rows] == ["LA_T_1000000", "LA_T_1000002", "LA_T_1000005"]
    assert len(dataset.excluded) == 3

    # bad rows stay bad on a plain rerun; --retry-bad recomputes them once the file is fixed
    code, text, _ = run_preprocess(f0_args(root, out, "--batch-size", "1"), capsys)
    assert code == 0 and "(6 already done, 0 computed, 3 bad)" in text
    write_corpus(root, [(u, "16k" if u == "LA_T_1000004" else kind) for u, kind in BAD_SPECS])
    code, text, _ = run_preprocess(
        f0_args(root, out, "--batch-size", "1", "--skip-bad", "--retry-bad"), capsys
    )
    assert code == 0 and "retrying 3 row(s)" in text and "(3 already done, 1 computed, 2 bad)" in text
    store = FeatureStore(store_dir)
    assert store.status.tolist() == [DONE, BAD, DONE, BAD, DONE, DONE]
    assert [b[0] for b in store.bad_files()] == ["LA_T_1000001", "LA_T_1000003"]


def test_skip_bad_marks_a_manifests_missing_and_empty_files_bad(tmp_path, capsys) -> None:
    """A manifest's missing or empty files stop preprocess.py with the manifest's one-line count; with
    --skip-bad they are bad rows of the store, listed in the .bad.tsv report, like any corpus's bad files."""
    root, out = tmp_path / "corpus", tmp_path / "out"
    write_corpus(root, [("a", "16k"), ("b", "empty"), ("d", "16k")])
    flac = root / "ASVspoof2019_LA_train" / "flac"
    manifest = root / "train.csv"
    names = ["a", "b", "c", "d"]  # c has no file
    manifest.write_text("path,label\n" + "".join(f"{flac / n}.flac,{'spoof' if n > 'b' else 'real'}\n"
                                                 for n in names))
    args = ["--manifest", f"train={manifest}", "--frontend", "f0", "--out", str(out), "--no-progress",
            "--batch-size", "1", "--num-workers", "0"]
    code, _, err = run_preprocess(args, capsys)
    assert (code, err) == (2, f"error: {manifest}: 2 of 4 audio files missing or empty: {flac / 'b.flac'}, "
                              f"{flac / 'c.flac'}\n")
    assert not out.exists()

    code, text, err = run_preprocess([*args, "--skip-bad"], capsys)
    assert code == 0, err
    assert "4 rows (0 already done, 2 computed, 2 bad)" in text
    from data.corpora.manifest import store_key

    store_dir = out / "f0" / f"manifest-train-{store_key(manifest)}"
    store = FeatureStore(store_dir)
    assert store.complete and store.status.tolist() == [DONE, BAD, BAD, DONE]
    lines = (store_dir / "shard-0000-of-0001.bad.tsv").read_text().splitlines()
    report = [line.split("\t") for line in lines]
    assert [r[:2] for r in report] == [[f"ASVspoof2019_LA_train/flac/{n}", str(flac / f"{n}.flac")]
                                       for n in ("b", "c")]
    assert "empty" in report[0][2] and "not found" in report[1][2]


# --- Bad settings --------------------------------------------------------------------------------------


def test_reopen_with_other_settings_is_a_user_error(corpus, tmp_path, capsys) -> None:
    assert run_cli(preprocess.main, f0_args(corpus, tmp_path, "--shard", "0/2")) == 0
    capsys.readouterr()
    store_dir = tmp_path / "f0" / "train"
    for extra, key in [(["--shard", "0/3"], "n_shards"), (["--limit", "5", "--shard", "0/2"], "utt_ids")]:
        code, out, err = run_preprocess(f0_args(corpus, tmp_path, *extra), capsys)
        assert code == 2, err
        assert err.startswith(f"error: {store_dir}:") and key in err and err.count("\n") == 1
    code, _, err = run_preprocess(f0_args(corpus, tmp_path, "--shard", "2/2"), capsys)
    assert code == 2 and "--shard 2/2" in err
    code, _, err = run_preprocess(f0_args(corpus, tmp_path, "--compile"), capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --compile applies to the SSL front end only")


def test_training_input_errors_are_one_line(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    cfg = str(CONFIGS / "demo_xlsr_lcnn.yaml")
    cases = [
        (["model.input_shape=[1, 32, 201]"], "features have shape [1, 64, 201]"),
        (["frontend.model=random:tiny"], "feature store not found"),
        (["train.epochz=1"], "unknown key 'train.epochz' in 'train.epochz=1' (did you mean 'train.epochs'?)"),
        (["train.batch_size=5", "train.grad_accum=2"], "not divisible"),
        (["augment.preset=la"], "augment: augmentation changes the audio"),
        (["augment.rawboost.algo=9"], "augment.rawboost.algo: unknown RawBoost algo 9"),
    ]
    for overrides, message in cases:
        argv = [
            "--config",
            cfg,
            *overrides,
            "--features",
            str(tiny_corpus / "feats"),
            "--out",
            str(tmp_path / "bad"),
            "--no-progress",
            "--device",
            "cpu",
        ]
        assert run_cli(main_train.main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "bad" / "last.pt").exists()


# --- Malformed score, ASV and protocol files -----------------------------------------------------------


BAD_CASES = [
    # (score file text, extra argv, expected stderr after "error: <score file>")
    (
        "U1 - bonafide 1\nU2 A01 spoof 0\nU3 A01 spoof\n",
        [],
        ":3: expected 4 columns 'utt_id attack key score', got 3",
    ),
    ("U1 - bonafide 1\nU2 A01 spoof zero\n", [], ":2: score 'zero' is not a number"),
    ("U1 - bonafide 1\nU2 A01 spoof nan\n", [], ":2: score 'nan' is not finite"),
    ("U1 - bonafide 1\nU2 A01 spoof -inf\n", [], ":2: score '-inf' is not finite"),
    ("U1 - bonafide 1\nU2 A01 spoof 0\nU1 A02 spoof 2\n", [], ":3: duplicate utt_id 'U1' (first on line 1)"),
    ("U1 - bonafide 1\nU2 A01 fake 0\n", [], ":2: key 'fake' is not one of bonafide, spoof"),
    (
        "U1_- 1 bonafide\nU2_A01 0 spoof\nU3 0.5 spoof\n",
        [],
        ":3: utt_id 'U3' has no '_attack' suffix, expected 'uttid_attack score key'",
    ),
    (
        "U1 x y z w\n",
        [],
        ":1: cannot tell the score layout from 5 columns 'U1 x y z w'; expected one of "
        "'utt_id score'; 'utt_id attack key score'; 'uttid_attack score key'; "
        "'filename cm-score (header line, tab-separated)' (or pass the format explicitly)",
    ),
    ("\n\n", [], ": the file is empty"),
    (
        "U1 1\nU2 0\n",
        [],
        ": the 'utt_id score' layout has no keys; pass --protocol to take them from a CM protocol",
    ),
    (
        "U1 - spoof 1\nU2 A01 spoof 0\nU3 A01 spoof 2\n",
        [],
        ": no bona fide trials; the EER needs both classes",
    ),
    (
        "U1 - bonafide 1\nU2 A01 spoof 1\nU3 A01 spoof 1\n",
        [],
        ": the CM scores have fewer than 3 distinct values: give soft scores, not decisions",
    ),
]


@pytest.mark.parametrize("text, extra, message", BAD_CASES, ids=[c[2][:30] for c in BAD_CASES])
def test_bad_score_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, extra: list[str], message: str
) -> None:
    path = tmp_path / "scores.txt"
    path.write_text(text)
    json_path = tmp_path / "r.json"
    code, out, err = run_evaluate([path, "--json", json_path, *extra], capsys)
    assert code == 2
    assert err == f"error: {path}{message}\n"
    assert not json_path.exists()


def test_bad_paths_and_asv(toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.txt"
    assert run_evaluate([missing], capsys)[2] == f"error: {missing}: score file not found\n"
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    assert run_evaluate([binary], capsys)[2] == f"error: {binary}: not a text file (byte 0 is not UTF-8)\n"

    asv = tmp_path / "asv.txt"
    asv.write_text("bonafide target 1.0\nbonafide nontarget\n")
    code, _, err = run_evaluate([toy["official"], "--asv-scores", asv], capsys)
    assert (code, err) == (2, f"error: {asv}:2: expected 3 columns 'cm_key asv_key score', got 2\n")
    asv.write_text("bonafide target 1.0\nbonafide impostor 0.5\n")
    assert (
        run_evaluate([toy["official"], "--asv-scores", asv], capsys)[2]
        == f"error: {asv}:2: asv_key 'impostor' is not one of target, nontarget, spoof\n"
    )
    asv.write_text(
        "bonafide target 3.0\nbonafide target 4.0\nbonafide nontarget 0.5\nbonafide nontarget 0.0\n"
    )
    assert (
        run_evaluate([toy["official"], "--asv-scores", asv], capsys)[2]
        == f"error: {asv}: the ASV scores have no spoof trials; the t-DCF needs them\n"
    )
    # Target and nontarget keys swapped: ASV EER 1 and C1 < 0, which the official code refuses.
    targets = "".join(f"bonafide target {i}\n" for i in range(20))
    asv.write_text(targets + "bonafide nontarget 30\nbonafide nontarget 31\nA01 spoof 2\nA02 spoof 2\n")
    code, _, err = run_evaluate([toy["official"], "--asv-scores", asv], capsys)
    assert code == 2 and err.startswith(f"error: {asv}: t-DCF constants must be non-negative (C1 -")
    code, _, err = run_evaluate(
        [toy["official"], "--asv-scores", toy["asv"], "--priors", "0.9", "0.05", "0.1"], capsys
    )
    assert code == 2 and err.startswith(
        "error: --priors: the prior probabilities must be non-negative and sum to one"
    )


def test_protocol_mismatches(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = toy["plain"].read_text().splitlines()
    fewer = tmp_path / "fewer.txt"
    fewer.write_text("\n".join(lines[5:]) + "\n")
    code, _, err = run_evaluate([fewer, "--protocol", toy["protocol"]], capsys)
    assert code == 2
    assert err == (
        f"error: {toy['protocol']}: 5 of 90 protocol trials have no score in {fewer} "
        "(first: LA_T_0000, LA_T_0001, LA_T_0002, ...)\n"
    )
    extra = tmp_path / "extra.txt"
    extra.write_text("\n".join([*lines, "LA_X_1 0.5", "LA_X_2 0.7"]) + "\n")
    code, _, err = run_evaluate([extra, "--protocol", toy["protocol"]], capsys)
    assert code == 2
    assert (
        err
        == f"error: {extra}: 2 utt_ids are not in the protocol {toy['protocol']} (first: LA_X_1, LA_X_2)\n"
    )


def test_eval_scores_with_dev_asv_is_refused(shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_evaluate([shared_dir / XLSR, "--asv-scores", shared_dir / DEV_ASV], capsys)
    assert code == 2
    assert err == (
        f"error: {shared_dir / DEV_ASV}: the ASV scores have no spoof trials of attack A07 "
        "(is it the ASV file of the same partition as the CM scores?)\n"
    )


# --- Mismatched checkpoint and features ----------------------------------------------------------------


def test_mismatched_checkpoint_and_features_are_one_line_errors(
    checkpoint, tiny_corpus, clips, tmp_path, capsys
):
    path, _, _ = checkpoint
    narrow, _, _ = make_checkpoint(tmp_path / "narrow.pt", input_shape=[1, 64, 100])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    pickled = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    feats = str(tiny_corpus / "feats")
    out = str(tmp_path / "x.txt")
    cases = [
        (
            ["--checkpoint", str(path), "--features", f"{feats}/f0-200frames/eval", "--output", out],
            "features were made with other front-end settings (name: checkpoint 'ssl' vs features 'f0')",
        ),
        (
            ["--checkpoint", str(narrow), "--features", feats, "--output", out],
            "features have shape [1, 64, 201] but the model expects input_shape [1, 64, 100]",
        ),
        (["--checkpoint", str(narrow), "--audio", str(clips["short"])], "but the model expects input_shape"),
        (
            ["--checkpoint", str(path), "--features", feats, "--partition", "train2", "--output", out],
            "feature store not found",
        ),
        (
            ["--checkpoint", str(truncated), "--audio", str(clips["short"])],
            "unreadable or truncated checkpoint",
        ),
        (["--checkpoint", str(pickled), "--audio", str(clips["short"])], "not a checkpoint of this toolkit"),
        (["--checkpoint", str(text), "--audio", str(clips["short"])], "not a checkpoint of this toolkit"),
        (
            ["--checkpoint", str(path), "--audio", str(tmp_path / "missing.wav")],
            "audio file or folder not found",
        ),
        (
            ["--checkpoint", str(path), "--audio", str(clips["short"]), "--output", out],
            "must end in .csv or .json",
        ),
        (
            ["--checkpoint", str(path), "--ssl-model", str(tmp_path), "--audio", str(clips["short"])],
            "not a Hugging Face model directory",
        ),
    ]
    for argv, message in cases:
        assert run_cli(generate_score.main, [*argv, "--no-progress", "--device", "cpu"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not Path(out).exists()


# --- Untrusted pickles ---------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_with_a_disallowed_global_is_refused_without_running_it(
    tmp_path: Path, zip_format: bool
) -> None:
    src, out, marker = tmp_path / "evil.pt", tmp_path / "out.safetensors", tmp_path / "pwned"
    payload = {"weights": torch.zeros(2), "payload": _Evil(marker)}
    torch.save(payload, src, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError, match=r"evil\.pt: refusing to unpickle: .*system"):
        import_released.main([str(src), str(out), "--trust-pickle"])
    assert not marker.exists()
    assert not out.exists()


def test_refuses_without_trust_pickle(
    tmp_path: Path, fake_model_module: None, capsys: pytest.CaptureFixture
) -> None:
    src, out = tmp_path / "release.pt", tmp_path / "out.safetensors"
    make_release(src)
    assert run_cli(import_released.main, [str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--trust-pickle" in err and err.count("\n") == 1
    assert not out.exists()


def test_resume_falls_back_to_the_previous_checkpoint_when_last_is_damaged(tmp_path: Path, capsys) -> None:
    """last.pt keeps its predecessor; a damaged last.pt resumes from it, with a warning, not an error."""
    from engine.trainer import load_resume_state
    from utils.checkpoint import previous_path, save_checkpoint

    last = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, last, keep_previous=True)
    assert not previous_path(last).exists()  # nothing to keep yet
    save_checkpoint({"epoch": 2}, last, keep_previous=True)
    assert load_checkpoint(previous_path(last))["epoch"] == 1 and load_resume_state(last)["epoch"] == 2
    last.write_bytes(last.read_bytes()[:100])  # a crash or a bad disk damaged it
    assert load_resume_state(last)["epoch"] == 1
    err = capsys.readouterr().err
    assert "unreadable or truncated checkpoint" in err and "resuming from the previous checkpoint" in err
    previous_path(last).unlink()
    with pytest.raises(UserError, match="unreadable or truncated checkpoint"):
        load_resume_state(last)
