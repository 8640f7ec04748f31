"""The corpus registry (data/corpora/): names and lookup, protocol detection, store names, ``python -m
data.corpora check``, and a corpus of one's own (tests/toy_corpus.py: one module, nothing else edited)
through the whole recipe runner: preprocess -> train -> score -> evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_tiny_f0_recipe, write_corpus

from data.corpora import (
    Corpus,
    corpus_names,
    default_corpus,
    detect_corpus,
    get_corpus,
    read_protocol,
    register_corpus,
    unregister_corpus,
)
from data.corpora.__main__ import main as check_main
from utils.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

SAMPLES = {
    "la2019": ("p.txt", "LA_0039 LA_E_2834763 - A11 spoof\n"),
    "la2021": ("m.txt", "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval\n"),
    "df2021": ("d.txt", "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress unknown - - - -\n"),
    "itw": ("meta.csv", "file,speaker,label\n0.wav,Alec Guinness,spoof\n"),
    "asvspoof5": ("ASVspoof5.eval.track_1.tsv", "E_0001 E_0000000001 F C05 4 123 A19 A19 spoof -\n"),
}


@pytest.fixture
def toy():
    """tests/toy_corpus.py registered in this process (removed afterwards: the registry is as shipped)."""
    import toy_corpus

    register_corpus(toy_corpus.ToyCorpus)
    yield toy_corpus
    unregister_corpus(toy_corpus.NAME)


def test_registry_names_titles_and_the_default() -> None:
    assert corpus_names() == ("asvspoof5", "df2021", "itw", "la2019", "la2021", "manifest")
    assert default_corpus() is get_corpus("la2019") is get_corpus(" LA2019 ")
    assert {c: get_corpus(c).title for c in corpus_names()} == {
        "asvspoof5": "ASVspoof 5 eval",
        "df2021": "2021 DF eval", "itw": "In-the-Wild", "la2019": "2019 LA eval", "la2021": "2021 LA eval",
        "manifest": "Manifest",
    }
    assert {c: get_corpus(c).partitions for c in corpus_names()} == {
        "asvspoof5": ("train", "dev", "eval"),
        "df2021": ("eval",), "itw": ("eval",), "la2019": ("train", "dev", "eval"), "la2021": ("eval",),
        "manifest": (),  # bound to files per use: ManifestCorpus.bind
    }
    assert [c for c in corpus_names() if get_corpus(c).conditions is not None] == ["df2021", "la2021"]
    assert [c for c in corpus_names() if not get_corpus(c).has_attacks] == ["itw"]
    with pytest.raises(UserError) as info:
        get_corpus("asvspoof6")
    assert str(info.value) == (
        "unknown corpus 'asvspoof6'; expected one of asvspoof5, df2021, itw, la2019, la2021, manifest"
    )


def test_store_names_keep_the_2019_partitions_plain() -> None:
    assert [get_corpus("la2019").store_name(p) for p in ("train", "dev", "eval")] == ["train", "dev", "eval"]
    assert [get_corpus(c).store_name("eval") for c in ("la2021", "df2021", "itw")] == [
        "la2021-eval", "df2021-eval", "itw-eval"
    ]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_protocol_is_claimed_by_its_corpus_alone(name: str, tmp_path: Path) -> None:
    file, text = SAMPLES[name]
    path = tmp_path / file
    path.write_text(text)
    assert [c for c in corpus_names() if get_corpus(c).detect(path, text.splitlines()[0])] == [name]
    assert detect_corpus(path, "\n\n" + text) is get_corpus(name)  # blank lines first


def test_detection_failures_are_one_line_errors(tmp_path: Path, toy) -> None:
    path = tmp_path / "x.txt"
    layout = r"'speaker trial codec transmission attack key trim subset' \(2021 LA/DF trial_metadata"
    with pytest.raises(UserError, match=r"x.txt: cannot tell the protocol format from 4 columns; expected .*"
                       + layout):
        detect_corpus(path, "a b c d\n")
    # a CSV with neither In-the-Wild's header nor a manifest's path column, and an 8-column file whose
    # codec is neither LA nor DF: no corpus
    with pytest.raises(UserError, match=r"x.txt: cannot tell the protocol format from 2 columns"):
        detect_corpus(path, "name,label\n/a.wav,spoof\n")
    with pytest.raises(UserError, match="cannot tell the protocol format from 8 columns"):
        detect_corpus(path, "LA_1 LA_E_1 mp4 ita_tx A07 spoof notrim eval\n")

    @register_corpus
    class Greedy(Corpus):
        name = "greedy"

        def detect(self, path: Path, first_line: str) -> bool:
            return True

    try:
        with pytest.raises(UserError, match=r"x.txt: the protocol fits several corpora \(greedy, la2019\)"):
            detect_corpus(path, SAMPLES["la2019"][1])
    finally:
        unregister_corpus("greedy")


def test_a_second_default_or_a_clash_is_refused() -> None:
    class Other(Corpus):
        name = "other"
        default = True

    with pytest.raises(ValueError, match="another corpus is the default"):
        register_corpus(Other)

    class Clash(Corpus):
        name = "la2019"

    with pytest.raises(ValueError, match="registered twice"):
        register_corpus(Clash)
    assert corpus_names() == ("asvspoof5", "df2021", "itw", "la2019", "la2021", "manifest")


# --- python -m data.corpora check --------------------------------------------------------------------------


def test_check_a_good_root(corpus: Path, capsys) -> None:
    assert run_cli(check_main, ["check", "la2019", str(corpus), "--partitions", "train"]) == 0
    protocol = corpus / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt"
    assert capsys.readouterr().out == (
        f"la2019 (2019 LA) under {corpus}\n"
        "train: 8 trials (3 bona fide, 5 spoof); 4 attacks: A02 2, A03 1, A05 1, A06 1\n"
        f"  protocol {protocol}\n"
        "  audio: all 8 files present\n"
        "ok\n"
    )


def test_check_lists_missing_and_empty_audio_and_exits_1(tmp_path: Path, capsys) -> None:
    specs = [(f"LA_T_{i:07d}", "16k") for i in range(6)] + [("LA_T_0000006", "empty")]
    write_corpus(tmp_path, specs)
    flac = tmp_path / "ASVspoof2019_LA_train" / "flac"
    for i in (1, 2, 4):
        (flac / f"LA_T_{i:07d}.flac").unlink()
    argv = ["check", "la2019", str(tmp_path), "--partitions", "train", "--show", "2"]
    assert run_cli(check_main, argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "train: 7 trials (3 bona fide, 4 spoof); 4 attacks: A02 1, A03 1, A05 1, A06 1"
    assert out[3:] == [
        "  audio: 3 missing, 1 empty of 7",
        f"    missing {flac / 'LA_T_0000001.flac'}",
        f"    missing {flac / 'LA_T_0000002.flac'}",
        "    ... and 1 more missing",
        f"    empty   {flac / 'LA_T_0000006.flac'}",
        "problems: 3 audio files missing and 1 empty in train",
    ]


def test_check_a_missing_or_malformed_protocol_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert run_cli(check_main, ["check", "itw", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'meta.csv'}: protocol not found (the eval protocol of itw under {tmp_path})\n"
    )
    (tmp_path / "meta.csv").write_text("file,speaker,label\n0.wav,a,spoof\n1.wav,b,maybe\n")
    assert run_cli(check_main, ["check", "itw", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"error: {tmp_path / 'meta.csv'}:3: label 'maybe' is not one of bona-fide, spoof\n"
    )
    assert run_cli(check_main, ["check", "la2021", str(tmp_path), "--partitions", "dev"]) == 2
    assert "unknown partition 'dev' for la2021; expected one of eval" in capsys.readouterr().err


def test_check_help_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "data.corpora", "check", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m data.corpora check")


# --- a corpus of one's own: one module, the whole recipe ---------------------------------------------------


def test_a_corpus_module_outside_the_package_is_read_like_the_others(tmp_path: Path, toy) -> None:
    written = toy.write_toy_corpus(tmp_path, {"dev": 4})
    corpus = get_corpus("toy")
    assert corpus.read(tmp_path, "dev") == written["dev"]
    assert [(r.utt_id, r.attack, r.key) for r in written["dev"]] == [
        ("dev_000", "-", "bonafide"), ("dev_001", "S2", "spoof"), ("dev_002", "S1", "spoof"),
        ("dev_003", "-", "bonafide"),
    ]
    assert read_protocol(tmp_path / "lists" / "dev.tsv")[1].path is None  # auto-detected, no root
    assert corpus.store_name("dev") == "toy-dev"


def test_an_unimportable_corpus_module_is_a_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "ANTISPOOF_CORPORA": "no_such_corpus_module"}
    out = subprocess.run([sys.executable, "-m", "data.corpora", "check", "la2019", str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(
        "error: ANTISPOOF_CORPORA: cannot import corpus module 'no_such_corpus_module'"
    )


def test_a_toy_corpus_runs_the_whole_recipe(tmp_path: Path, toy, monkeypatch, capfd) -> None:
    """preprocess -> train -> score -> evaluate with run_recipe.py, every stage a subprocess that finds the
    toy corpus through ANTISPOOF_CORPORA; F0 features into the store the corpus names."""
    from data.store import FeatureStore
    from utils.metrics import compute_eer
    from utils.scorefiles import read_scores

    root = tmp_path / "toy"
    written = toy.write_toy_corpus(root, {"train": 9, "dev": 6, "eval": 9})
    monkeypatch.setenv("ANTISPOOF_CORPORA", "toy_corpus")
    python_path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", python_path)
    out = run_tiny_f0_recipe(tmp_path, root, "toy", "toy")
    for partition, rows in written.items():
        store = FeatureStore(out / "features" / "f0-24frames" / f"toy-{partition}")
        assert store.complete and store.utt_ids == [r.utt_id for r in rows]
        assert store.feature_shape == (1, 45, 24)
    scores = read_scores(out / "scores" / "toy_eval.txt")
    eval_rows = written["eval"]
    assert scores.utt_ids.tolist() == [r.utt_id for r in eval_rows]
    assert scores.attacks.tolist() == [r.attack for r in eval_rows]
    assert scores.keys.tolist() == [r.key for r in eval_rows]
    result = json.loads((out / "eval" / "toy_eval.json").read_text())
    bona = scores.scores[scores.keys == "bonafide"]
    spoof = scores.scores[scores.keys == "spoof"]
    assert (result["n_bonafide"], result["n_spoof"]) == (3, 6)
    assert result["eer"] == compute_eer(bona, spoof)[0]
    assert sorted(result["per_attack"]) == ["S1", "S2"] and result["min_tdcf"] is None
    assert result["protocol"] == str(root / "lists" / "eval.tsv")
    assert "note: Toy has no ASV scores, so EER only" in capfd.readouterr().out
    assert np.isfinite(scores.scores).all()


def test_the_registry_and_the_protocols_do_not_import_torch() -> None:
    code = ("import sys, data.corpora, data.protocols; data.corpora.discover(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
