"""The generated demo corpus (data/demo/): layout, determinism, idempotence, audio and separability."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data import demo
from data.corpora import get_corpus
from data.corpora.la2019 import asv_score_path
from data.demo.__main__ import main as demo_main
from utils.errors import UserError, run_cli

SMALL = {"n_train": 10, "n_dev": 10, "n_eval": 20}
LINE = re.compile(r"^LA_00\d\d LA_([TDE])_\d{7} - (A\d\d|-) (bonafide|spoof)$")


def protocol_path(root: Path, part: str) -> Path:
    return get_corpus("la2019").protocol_path(root, part)


def _rows(root: Path, part: str) -> list[list[str]]:
    text = protocol_path(root, part).read_text()
    return [line.split() for line in text.splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "LA"
    summary = demo.generate_demo_corpus(root, seed=0, workers=2, **SMALL)
    assert summary.generated
    return root


def test_layout_and_counts(corpus: Path) -> None:
    prefixes = {"train": "T", "dev": "D", "eval": "E"}
    speakers = {}
    for part, n in zip(demo.PARTITIONS, SMALL.values(), strict=True):
        rows = _rows(corpus, part)
        assert len(rows) == n
        for row in rows:
            match = LINE.match(" ".join(row))
            assert match, row
            assert match.group(1) == prefixes[part]
            assert (row[3] == "-") == (row[4] == "bonafide")
        ids = [r[1] for r in rows]
        assert len(set(ids)) == n
        assert sum(r[4] == "bonafide" for r in rows) == round(0.3 * n)
        flacs = sorted(p.stem for p in (corpus / f"ASVspoof2019_LA_{part}" / "flac").iterdir())
        assert flacs == sorted(ids)
        speakers[part] = {r[0] for r in rows}
    assert not speakers["train"] & speakers["dev"]
    assert not (speakers["train"] | speakers["dev"]) & speakers["eval"]
    manifest = json.loads((corpus / demo.MANIFEST_NAME).read_text())
    assert manifest["synthetic"] is True
    assert manifest["seed"] == 0 and manifest["counts"] == {"train": 10, "dev": 10, "eval": 20}
    # Nothing but the corpus beside it: the temporary directory was renamed, not left behind.
    assert [p.name for p in corpus.parent.iterdir()] == ["LA"]


def test_eval_attacks_are_unseen_in_train_and_dev(corpus: Path) -> None:
    attacks = {part: {r[3] for r in _rows(corpus, part)} - {"-"} for part in demo.PARTITIONS}
    assert attacks["train"] == attacks["dev"] == set(demo.TRAIN_DEV_ATTACKS)
    assert attacks["eval"] == set(demo.EVAL_ATTACKS)
    assert not attacks["eval"] & attacks["train"]


def test_attacks_are_spread_evenly() -> None:
    rows = demo.plan_partition("eval", 400, seed=0, bonafide_fraction=0.3)
    counts = {a: sum(r.attack == a for r in rows) for a in demo.EVAL_ATTACKS}
    assert sum(r.key == "bonafide" for r in rows) == 120
    assert set(counts.values()) == {40}


def test_audio_is_16k_mono_pcm16_flac_of_1_to_5_seconds(corpus: Path) -> None:
    for part in demo.PARTITIONS:
        for path in (corpus / f"ASVspoof2019_LA_{part}" / "flac").iterdir():
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
            assert 1.0 <= info.duration <= 5.0
            x, _ = sf.read(path)
            assert 0.2 < np.max(np.abs(x)) <= 0.91  # normalised to a random peak, never clipped
            assert np.mean(np.abs(x) < 1e-4) < 0.5  # mostly signal, not digital silence


def test_asv_score_files(corpus: Path) -> None:
    for part in ("dev", "eval"):
        spoof_rows = [r for r in _rows(corpus, part) if r[4] == "spoof"]
        n_bona = len(_rows(corpus, part)) - len(spoof_rows)
        text = asv_score_path(corpus, part).read_text()
        scores: dict[str, list[float]] = {"target": [], "nontarget": [], "spoof": []}
        for line in text.splitlines():
            cm_key, asv_key, score = line.split()
            assert (cm_key == "bonafide") == (asv_key != "spoof")
            if asv_key == "spoof":
                assert cm_key in demo.PARTITION_ATTACKS[part]
            scores[asv_key].append(float(score))
        assert (len(scores["target"]), len(scores["nontarget"])) == (n_bona, 4 * n_bona)
        assert len(scores["spoof"]) == len(spoof_rows)
        # As in 2019 LA: targets far above nontargets (ASV EER of a few %), spoofs above nontargets
        # (some attacks fool the ASV as well as targets do).
        assert np.mean(scores["target"]) > np.mean(scores["nontarget"]) + 30
        assert np.mean(scores["spoof"]) > np.mean(scores["nontarget"]) + 20


def test_same_seed_gives_identical_bytes_regardless_of_workers(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "LA"
    demo.generate_demo_corpus(again, seed=0, workers=1, **SMALL)
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (corpus / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_another_seed_gives_other_audio(corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "LA"
    demo.generate_demo_corpus(other, seed=1, n_train=10, n_dev=2, n_eval=2, workers=1)
    assert _rows(other, "train") != _rows(corpus, "train")


def test_rerun_is_idempotent_and_new_parameters_regenerate(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "LA"
    args = ["--out", str(root), "--n-train", "4", "--n-dev", "3", "--n-eval", "3", "--workers", "1"]
    assert demo_main([*args, "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert "generated" in first and "SYNTHETIC" in first and "bonafide 1" in first
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    assert demo_main([*args, "--no-progress"]) == 0
    assert "already present" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamp

    summary = demo.generate_demo_corpus(root, seed=3, n_train=4, n_dev=3, n_eval=5, workers=1)
    assert summary.generated and sum(summary.counts["eval"].values()) == 5
    assert json.loads((root / demo.MANIFEST_NAME).read_text())["seed"] == 3
    assert len(_rows(root, "eval")) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LA"]


def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        demo.generate_demo_corpus(busy, n_train=2, n_dev=2, n_eval=2, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    assert (busy / "notes.txt").read_text() == "mine"

    assert run_cli(demo_main, ["--out", str(tmp_path / "x"), "--n-dev", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dev partition: at least 2 utterances needed") and err.count("\n") == 1
    with pytest.raises(UserError, match="bona fide fraction"):
        demo.generate_demo_corpus(tmp_path / "y", bonafide_fraction=1.0)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("attack", ["-", *demo.ATTACKS])
def test_every_attack_renders_finite_audio_of_the_requested_length(attack: str) -> None:
    spk = demo.make_speaker("LA_0001", np.random.default_rng(0))
    x = demo.synthesize(spk, attack, 16000, np.random.default_rng(1))
    assert x.shape == (16000,) and np.isfinite(x).all() and np.std(x) > 0


def _f0_band_contrast(x: np.ndarray) -> float:
    """Std over bins of the 0-407 Hz log-magnitudes (docs/features.md grid), averaged over the louder frames.

    Jitter, shimmer and F0 drift blur the low harmonics within a 108 ms frame; a regular F0 keeps them sharp.
    """
    window = np.blackman(1728)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(1728), np.arange(45)) / 1728) * window[:, None]
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, 864), 1728)[::130]
    logmag = np.log(np.abs(frames @ dft) + 1e-8)
    loud = logmag.mean(axis=1) > np.percentile(logmag.mean(axis=1), 50)
    return float(logmag[loud].std(axis=1).mean())


def _high_band_share(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[len(power) // 2 :].sum() / power.sum())  # share of energy above 4 kHz


def test_bona_fide_and_spoofs_differ_in_f0_jitter_and_bandwidth() -> None:
    rng = np.random.default_rng(7)
    speakers = [demo.make_speaker(f"LA_00{i:02d}", rng) for i in range(4)]

    def render(attack: str) -> list[np.ndarray]:
        return [
            demo.channel(demo.synthesize(s, attack, 24000, rng), rng, demo.BONAFIDE_SNR_DB)
            for s in speakers
            for _ in range(2)
        ]

    bona, regular, codec = render("-"), render("A03"), render("A05")
    # A perfectly regular F0 (A03) has sharper harmonics in the F0 band than natural, jittered speech
    # (measured: 1.61 vs 1.40, std ~0.05 within each group).
    assert (
        np.mean([_f0_band_contrast(x) for x in regular]) > np.mean([_f0_band_contrast(x) for x in bona]) + 0.1
    )
    # The 300-3400 Hz codec (A05) leaves only the noise floor above 4 kHz.
    assert min(_high_band_share(x) for x in bona) > 10 * max(_high_band_share(x) for x in codec)


def _mean_log_spectrum(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for row in _rows(root, part):
        x, _ = sf.read(root / f"ASVspoof2019_LA_{part}" / "flac" / f"{row[1]}.flac")
        frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
        mean_log = np.log(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10).mean(axis=0)
        feats.append(mean_log - mean_log.mean())  # remove the random recording level
        labels.append(row[4] == "spoof")
    return np.array(feats), np.array(labels, dtype=float)


def _eer(bona: np.ndarray, spoof: np.ndarray) -> float:
    """EER with the ASVspoof DET convention (docs/evaluation.md), higher score = bona fide."""
    labels = np.r_[np.ones(len(bona)), np.zeros(len(spoof))][np.argsort(np.r_[bona, spoof], kind="stable")]
    frr = np.r_[0, np.cumsum(labels) / len(bona)]
    far = np.r_[1, 1 - np.cumsum(1 - labels) / len(spoof)]
    k = np.argmin(np.abs(frr - far))
    return float((frr[k] + far[k]) / 2)


def test_logistic_regression_on_mean_log_spectrum_is_neither_perfect_nor_chance(tmp_path: Path) -> None:
    root = tmp_path / "LA"
    demo.generate_demo_corpus(root, seed=0, n_train=60, n_dev=2, n_eval=80, workers=2)
    x_train, y_train = _mean_log_spectrum(root, "train")
    x_eval, y_eval = _mean_log_spectrum(root, "eval")
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a = (x_train - mu) / sd
    weight = np.where(y_train == 0, y_train.sum() / (1 - y_train).sum(), 1.0)  # balance the classes
    w, b = np.zeros(a.shape[1]), 0.0
    for _ in range(2000):
        grad = (1 / (1 + np.exp(-(a @ w + b))) - y_train) * weight
        w -= 0.05 * (a.T @ grad / len(a) + 1e-2 * w)
        b -= 0.05 * grad.mean()
    score = -((x_eval - mu) / sd @ w + b)  # higher = bona fide
    train_eer = _eer(-(a @ w + b)[y_train == 0], -(a @ w + b)[y_train == 1])
    eval_eer = _eer(score[y_eval == 0], score[y_eval == 1])
    assert train_eer < 0.05  # the classes are learnable ...
    # ... but unseen eval attacks are neither trivial nor hopeless (measured 0.30 here; 0.21 at the
    # default sizes 200/200/400)
    assert 0.08 < eval_eer < 0.45, eval_eer
