"""Your own recordings as a corpus: manifest files (data/corpora/manifest.py), the --manifest flag of the
scripts, the recipe key data.manifests, In-the-Wild's meta.csv read as a manifest, and the evaluator's
--group-by."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_tiny_f0_recipe

import evaluate_tDCF_asvspoof19 as evaluator
from data.corpora import detect_corpus, get_corpus, read_protocol, recipe_corpus
from data.corpora.manifest import ManifestCorpus, manifest_overrides, store_key
from data.protocols import ProtocolRow
from utils.errors import UserError, run_cli


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def touch_audio(folder: Path, *names: str) -> None:
    for name in names:
        write(folder / name, "RIFF")  # not read: only present and not empty


# --- parsing -------------------------------------------------------------------------------------------


def test_a_csv_manifest_with_every_label_spelling_relative_paths_and_extra_columns(tmp_path: Path) -> None:
    text = (
        "Path,Label,codec,language\n"
        "clips/a.wav,bonafide,mp3,en\n"
        "clips/b.flac, Bona-Fide ,none,de\n"
        f"{tmp_path / 'elsewhere' / 'c.wav'},BONA FIDE,mp3,de\n"
        "d.wav,real,none,en\n"
        "\n"
        "e.wav,spoof,mp3,en\n"
        "sub/f.wav,FAKE,none,fr\n"
    )
    manifest = write(tmp_path / "lists" / "eval.csv", text)
    touch_audio(tmp_path / "lists", "clips/a.wav", "clips/b.flac", "d.wav", "e.wav", "sub/f.wav")
    touch_audio(tmp_path / "elsewhere", "c.wav")
    rows = ManifestCorpus.bind({"eval": manifest}).read(None, "eval")
    folder = tmp_path / "lists"
    assert [(r.utt_id, r.key, r.attack, r.speaker, r.path, dict(r.extra)) for r in rows] == [
        ("clips/a", "bonafide", "-", "-", str(folder / "clips/a.wav"), {"codec": "mp3", "language": "en"}),
        ("clips/b", "bonafide", "-", "-", str(folder / "clips/b.flac"), {"codec": "none", "language": "de"}),
        ("../elsewhere/c", "bonafide", "-", "-", str(tmp_path / "elsewhere/c.wav"),
         {"codec": "mp3", "language": "de"}),
        ("d", "bonafide", "-", "-", str(folder / "d.wav"), {"codec": "none", "language": "en"}),
        ("e", "spoof", "unknown", "-", str(folder / "e.wav"), {"codec": "mp3", "language": "en"}),
        ("sub/f", "spoof", "unknown", "-", str(folder / "sub/f.wav"), {"codec": "none", "language": "fr"}),
    ]
    bound = ManifestCorpus.bind({"eval": manifest})
    assert bound.fields == ("codec", "language") and not bound.has_attacks
    # read without audio (the evaluator): the same rows without paths; detected as a manifest
    assert detect_corpus(manifest, text).name == "manifest"
    assert [(r.utt_id, r.path) for r in read_protocol(manifest)][:2] == [("clips/a", None), ("clips/b", None)]


def test_a_tsv_manifest_with_attack_speaker_and_utt_id_columns(tmp_path: Path) -> None:
    text = (
        "utt_id\tspeaker\tpath\tlabel\tattack\tsource\n"
        "u1\talice\ta.wav\tbonafide\t-\tphone\n"
        "u2\tbob\tb.wav\tspoof\ttts1\tweb, forum\n"
        "\tbob\tc.wav\tspoof\t\tweb\n"
    )
    manifest = write(tmp_path / "dev.tsv", text)
    touch_audio(tmp_path, "a.wav", "b.wav", "c.wav")
    corpus = ManifestCorpus.bind({"dev": manifest})
    rows = corpus.read(None, "dev")
    assert [(r.speaker, r.utt_id, r.attack, r.key, r.path, dict(r.extra)) for r in rows] == [
        ("alice", "u1", "-", "bonafide", str(tmp_path / "a.wav"), {"source": "phone"}),
        ("bob", "u2", "tts1", "spoof", str(tmp_path / "b.wav"), {"source": "web, forum"}),
        ("bob", "c", "unknown", "spoof", str(tmp_path / "c.wav"), {"source": "web"}),
    ]
    assert corpus.fields == ("speaker", "attack", "source") and corpus.has_attacks
    assert corpus.partitions == ("dev",) and corpus.protocol_path("/ignored", "dev") == manifest


def test_store_names_differ_between_manifests_and_the_registered_corpus_has_no_files(tmp_path: Path) -> None:
    one, two = write(tmp_path / "a/eval.csv", "path,label\n"), write(tmp_path / "b/eval.csv", "path,label\n")
    names = [ManifestCorpus.bind({"eval": f}).store_name("eval") for f in (one, two)]
    assert names == [f"manifest-eval-{store_key(one)}", f"manifest-eval-{store_key(two)}"]
    assert names[0] != names[1] and len(store_key(one)) == 8
    assert store_key(tmp_path / "a/../a/eval.csv") == store_key(one)  # the resolved path
    with pytest.raises(UserError, match=r"^no manifest for partition 'eval': give --manifest eval=FILE"):
        get_corpus("manifest").read(None, "eval")


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,speaker\nx.wav,a\n", ":1: the header 'file,speaker' has no 'label' column (required: path, "
         "label)"),
        ("label,codec\nspoof,mp3\n", ":1: the header 'label,codec' has no 'path' column (required: path, "
         "label)"),
        ("path,label,path\na.wav,spoof,b\n", ":1: column 'path' appears twice in the header"),
        ("path,label,codec\na.wav,spoof,mp3\nb.wav,spoof\n",
         ":3: expected 3 columns 'path,label,codec', got 2"),
        ("path\tlabel\na.wav\tspoof\textra\n", ":2: expected 2 columns 'path\tlabel', got 3"),
        ("path,label\na.wav,maybe\n",
         ":2: label 'maybe' is not one of bonafide, bona-fide, bona fide, real, spoof, fake"),
        ("path,label\na.wav,spoof\n ,spoof\n", ":3: empty path"),
        ("path,label\nx/a.wav,spoof\nx/a.flac,bonafide\n", ":3: duplicate utt_id 'x/a' (first on line 2)"),
        ("path,label,utt_id\na.wav,spoof,u\nb.wav,spoof,u\n", ":3: duplicate utt_id 'u' (first on line 2)"),
        ("path,label\n", ": no trials after the header"),
        ("\n\n", ": the file is empty"),
    ],
)
def test_each_bad_manifest_is_a_one_line_error_naming_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    manifest = write(tmp_path / "m.csv", text)
    with pytest.raises(UserError) as info:
        ManifestCorpus.bind({"train": manifest}).parse(manifest, text)
    assert str(info.value) == f"{manifest}{message}"


def test_missing_audio_lists_the_first_five_and_the_count(tmp_path: Path) -> None:
    names = [f"{i}.wav" for i in range(8)]
    manifest = write(tmp_path / "train.csv", "path,label\n" + "".join(f"{n},spoof\n" for n in names))
    touch_audio(tmp_path, "1.wav")
    write(tmp_path / "4.wav", "")  # empty
    with pytest.raises(UserError) as info:
        ManifestCorpus.bind({"train": manifest}).read(None, "train")
    missing = ", ".join(str(tmp_path / n) for n in ("0.wav", "2.wav", "3.wav", "4.wav", "5.wav"))
    assert str(info.value) == f"{manifest}: 7 of 8 audio files missing or empty: {missing}, ... (2 more)"


def test_the_recipe_key_and_the_flag(tmp_path: Path) -> None:
    manifest = write(tmp_path / "train.csv", "path,label\n")
    corpus = recipe_corpus({"data": {"dataset": "manifest", "manifests": {"train": str(manifest)}}})
    assert isinstance(corpus, ManifestCorpus) and corpus.files == {"train": manifest}
    assert corpus.cli_arguments(None) == ["--manifest", f"train={manifest}"]
    with pytest.raises(UserError, match=r"^data.dataset is manifest but no manifest files are given"):
        recipe_corpus({"data": {"dataset": "manifest"}})
    with pytest.raises(UserError, match=r"^no manifest for partition 'dev' \(given: train\): give --manif"):
        corpus.protocol_path(None, "dev")
    assert manifest_overrides([f"train={manifest}"]) == [
        "data.dataset=manifest", f"data.manifests.train={manifest}"
    ]
    for bad, message in (("train", "--manifest train: expected PART=FILE"),
                         (f"train={tmp_path / 'no.csv'}", f"{tmp_path / 'no.csv'}: manifest not found"),
                         (f"eval={manifest}", "partition 'eval' given twice")):
        with pytest.raises(UserError, match=message):
            manifest_overrides([f"eval={manifest}", bad] if "twice" in message else [bad])


# --- In-the-Wild's meta.csv ----------------------------------------------------------------------------

ITW = "file,speaker,label\n0.wav,Alec Guinness,spoof\n1.wav,\"Smith, Jr\",bona-fide\n2.wav,Ann,spoof\n"


def test_in_the_wild_meta_csv_is_a_manifest(tmp_path: Path) -> None:
    root = tmp_path / "release_in_the_wild"
    write(root / "meta.csv", ITW)
    touch_audio(root, "0.wav", "1.wav", "2.wav")
    as_itw = get_corpus("itw").read(root, "eval")
    as_manifest = ManifestCorpus.bind({"eval": root / "meta.csv"}).read(None, "eval")
    assert as_manifest == as_itw == [
        ProtocolRow("Alec Guinness", "0", "unknown", "spoof", str(root / "0.wav")),
        ProtocolRow("Smith, Jr", "1", "-", "bonafide", str(root / "1.wav")),
        ProtocolRow("Ann", "2", "unknown", "spoof", str(root / "2.wav")),
    ]
    # its exact header stays In-the-Wild's: detection claims it for itw alone
    assert detect_corpus(root / "meta.csv", ITW).name == "itw"
    assert detect_corpus(root / "m.csv", "file,speaker,label,codec\n").name == "manifest"


# --- --group-by ----------------------------------------------------------------------------------------

#: utt_id, label, attack, codec, language, score
TRIALS = [
    ("b1", "bonafide", "-", "mp3", "en", 3.0),
    ("b2", "bonafide", "-", "mp3", "de", 1.0),
    ("b3", "bonafide", "-", "none", "en", 5.0),
    ("b4", "bonafide", "-", "none", "de", 4.0),
    ("b5", "bonafide", "-", "none", "fr", 10.0),
    ("s1", "spoof", "A1", "mp3", "en", 3.5),
    ("s2", "spoof", "A2", "mp3", "de", 0.0),
    ("s3", "spoof", "A1", "none", "en", -1.0),
    ("s4", "spoof", "A2", "none", "de", 0.8),
    ("s5", "spoof", "A2", "none", "es", 2.0),
]


def brute_force_eer(bonafide: list[float], spoof: list[float]) -> float:
    """EER written out: at a threshold just above each score (and below all), the miss rate (bona fide at or
    below it) and the false-alarm rate (spoof above it); where they are closest (the lowest such
    threshold), their mean."""
    best = None
    for t in [-np.inf, *sorted(bonafide + spoof)]:
        miss = sum(b <= t for b in bonafide) / len(bonafide)
        fa = sum(s > t for s in spoof) / len(spoof)
        if best is None or abs(miss - fa) < best[0]:
            best = (abs(miss - fa), (miss + fa) / 2)
    return best[1]


@pytest.fixture
def grouped(tmp_path: Path) -> dict[str, Path]:
    lines = ["path,label,attack,codec,language"]
    lines += [f"{u}.wav,{k},{a},{c},{lang}" for u, k, a, c, lang, _ in TRIALS]
    scores = write(tmp_path / "scores.txt", "".join(f"{t[0]} {t[5]!r}\n" for t in TRIALS))
    return {"protocol": write(tmp_path / "eval.csv", "\n".join(lines) + "\n"), "scores": scores}


def test_group_by_gives_counts_and_eer_per_value(grouped: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    argv = [str(grouped["scores"]), "--protocol", str(grouped["protocol"]),
            "--group-by", "codec,language,attack", "--json", str(out)]
    assert evaluator.main(argv) == 0
    groups = json.loads(out.read_text())["groups"]
    eer = {column: {value: m["eer"] for value, m in table.items()} for column, table in groups.items()}
    # by hand: pooled miss 1/5 = false alarm 1/5 just above 2.0 (s1 at 3.5 above it); mp3: 1/2 = 1/2; none,
    # de separable; en: 1/2 = 1/2; A1 against every bona fide trial: closest at miss 2/5, false alarm 1/2;
    # A2: at miss 1/5, false alarm 1/3
    expected = {
        "codec": {"pooled": 0.2, "mp3": 0.5, "none": 0.0},
        "language": {"pooled": 0.2, "de": 0.0, "en": 0.5, "es": None, "fr": None},
        "attack": {"pooled": 0.2, "A1": (2 / 5 + 1 / 2) / 2, "A2": (1 / 5 + 1 / 3) / 2},
    }
    assert {c: list(t) for c, t in eer.items()} == {c: list(t) for c, t in expected.items()}
    for column, table in expected.items():
        for value, number in table.items():
            assert eer[column][value] == (None if number is None else pytest.approx(number, abs=1e-15))
    for column, table in eer.items():
        for value, number in table.items():
            mask = [value == "pooled" or t[{"codec": 3, "language": 4, "attack": 2}[column]] == value
                    or (column == "attack" and t[1] == "bonafide") for t in TRIALS]
            bona = [t[5] for t, m in zip(TRIALS, mask, strict=True) if m and t[1] == "bonafide"]
            spoof = [t[5] for t, m in zip(TRIALS, mask, strict=True) if m and t[1] == "spoof"]
            reference = brute_force_eer(bona, spoof) if bona and spoof else None
            assert number == (None if reference is None else pytest.approx(reference, abs=1e-15))
    counts = {v: (m["n_bonafide"], m["n_spoof"]) for v, m in groups["language"].items()}
    assert counts == {"pooled": (5, 5), "de": (2, 2), "en": (2, 2), "es": (0, 1), "fr": (1, 0)}
    assert {v: (m["n_bonafide"], m["n_spoof"]) for v, m in groups["attack"].items()} == {
        "pooled": (5, 5), "A1": (5, 2), "A2": (5, 3)
    }
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index("by language") + 1:]
    assert table[0].split() == ["n", "bona", "n", "spoof", "EER", "%"]
    assert [line.split() for line in table[1:6]] == [
        ["pooled", "5", "5", "20.0000"], ["de", "2", "2", "0.0000"], ["en", "2", "2", "50.0000"],
        ["es", "0", "1", "-"], ["fr", "1", "0", "-"],
    ]


def test_group_by_with_the_asvspoof5_measures_and_errors(grouped: dict[str, Path], tmp_path: Path,
                                                         capsys) -> None:
    from utils.metrics import asvspoof5_measures

    out = tmp_path / "r.json"
    argv = [str(grouped["scores"]), "--protocol", str(grouped["protocol"]), "--group-by", "codec",
            "--metrics", "asvspoof5", "--json", str(out)]
    assert evaluator.main(argv) == 0
    mp3 = json.loads(out.read_text())["groups"]["codec"]["mp3"]
    reference = asvspoof5_measures(np.array([3.0, 1.0]), np.array([3.5, 0.0]))
    assert mp3 == {"n_bonafide": 2, "n_spoof": 2, "eer": 0.5,
                   **{k: reference[k] for k in ("min_dcf", "act_dcf", "cllr", "min_cllr")}}
    capsys.readouterr()
    bad = [str(grouped["scores"]), "--protocol", str(grouped["protocol"]), "--group-by", "codec,region"]
    assert run_cli(evaluator.main, bad) == 2
    assert capsys.readouterr().err == (
        f"error: {grouped['protocol']}: no column 'region' to group by; its rows carry: attack, codec, "
        "language\n"
    )
    assert run_cli(evaluator.main, [str(grouped["scores"]), "--group-by", "codec"]) == 2
    assert capsys.readouterr().err == "error: --group-by needs --protocol: the columns come from it\n"


# --- the whole recipe -----------------------------------------------------------------------------------


def test_a_manifest_corpus_runs_the_whole_recipe(tmp_path: Path) -> None:
    """preprocess -> train -> score -> evaluate with run_recipe.py --manifest (no --data-root): F0 stores
    named by the manifests, the run's recipe records them, the evaluator groups by their codec column."""
    import toy_corpus

    from data.corpora import unregister_corpus
    from data.store import FeatureStore
    from utils.config import load_yaml
    from utils.scorefiles import read_scores

    unregister_corpus(toy_corpus.NAME)  # importing it registered it; only its audio writer is used here
    root = tmp_path / "mine"
    written = toy_corpus.write_toy_corpus(root, {"train": 9, "dev": 6, "eval": 9})
    files = {}
    for partition, rows in written.items():
        lines = ["path,label,attack,speaker,codec"]
        lines += [f"{Path(r.path).relative_to(root)},{'real' if r.key == 'bonafide' else 'fake'},{r.attack},"
                  f"{r.speaker},{'mp3' if i % 2 else 'none'}" for i, r in enumerate(rows)]
        files[partition] = write(root / f"{partition}.csv", "\n".join(lines) + "\n")
    flags = [arg for part, file in files.items() for arg in ("--manifest", f"{part}={file}")]
    out = run_tiny_f0_recipe(tmp_path, None, "la2019", "mine", flags)
    for partition, rows in written.items():
        name = f"manifest-{partition}-{store_key(files[partition])}"
        store = FeatureStore(out / "features" / "f0-24frames" / name)
        ids = [str(Path(r.path).relative_to(root).with_suffix("")) for r in rows]
        assert store.complete and store.utt_ids == ids
    data = load_yaml(out / "runs" / "mine" / "config.yaml")["data"]
    assert data["dataset"] == "manifest" and data["manifests"] == {p: str(f) for p, f in files.items()}
    result = json.loads((out / "eval" / "mine_eval.json").read_text())
    assert (result["n_bonafide"], result["n_spoof"]) == (3, 6)
    assert sorted(result["per_attack"]) == ["S1", "S2"]
    scores = read_scores(out / "scores" / "mine_eval.txt")
    assert evaluator.main([str(out / "scores" / "mine_eval.txt"), "--protocol", str(files["eval"]),
                           "--group-by", "codec", "--json", str(tmp_path / "g.json")]) == 0
    groups = json.loads((tmp_path / "g.json").read_text())["groups"]["codec"]
    assert {v: (m["n_bonafide"], m["n_spoof"]) for v, m in groups.items()} == {
        "pooled": (3, 6), "mp3": (1, 3), "none": (2, 3)
    }
    assert groups["pooled"]["eer"] == result["eer"] and np.isfinite(scores.scores).all()


def test_the_scripts_without_data_root_or_manifest_are_one_line_errors(tmp_path: Path, capsys) -> None:
    from conftest import CONFIGS

    import generate_score
    import main_train
    import preprocess
    import run_recipe
    from data.corpora.__main__ import main as check_main

    manifest = write(tmp_path / "train.csv", "path,label\na.wav,spoof\n")
    config = str(CONFIGS / "demo_sr_la_res2net_f0.yaml")
    runs = [
        (preprocess.main, ["--frontend", "f0"],
         "--data-root is required (the corpus root), unless --manifest PART=FILE lists your recordings"),
        (run_recipe.main, ["--config", config, "--out", str(tmp_path)],
         f"--data-root is required for the la2019 corpus of {config}, unless --manifest PART=FILE lists your "
         "recordings"),
        (generate_score.main, ["--checkpoint", "x.pt", "--output", "s.txt"],
         "give what to score: --features, --data-root, --manifest PART=FILE or --audio"),
        (generate_score.main, ["--checkpoint", "x.pt", "--audio", "a.wav", "--manifest", f"eval={manifest}"],
         "--audio: not with --manifest (the manifest names the audio files)"),
        (main_train.main, ["--config", config, "--on-the-fly", "--out", str(tmp_path / "run"),
                           "--manifest", f"train={manifest}"],
         f"{manifest}: 1 of 1 audio files missing or empty: {tmp_path / 'a.wav'}"),
        (check_main, ["check", "manifest", str(tmp_path)],
         "manifest: has no corpus root to check; the scripts check a manifest's rows and audio files when "
         "they read it (--manifest PART=FILE)"),
        (preprocess.main, ["--frontend", "f0", "--manifest", f"train={manifest}", "--partitions", "dev"],
         "no manifest for partition 'dev' (given: train): give --manifest dev=FILE (or data.manifests.dev in "
         "the recipe)"),
    ]
    for main, argv, message in runs:
        assert run_cli(main, argv) == 2
        assert capsys.readouterr().err == f"error: {message}\n"


def test_group_by_attack_on_a_2019_protocol_repeats_the_per_attack_eers(toy: dict[str, Path], tmp_path: Path,
                                                                          capsys) -> None:
    out = tmp_path / "r.json"
    argv = [str(toy["plain"]), "--protocol", str(toy["protocol"]), "--group-by", "attack,speaker",
            "--json", str(out)]
    assert evaluator.main(argv) == 0
    result = json.loads(out.read_text())
    attack = result["groups"]["attack"]
    assert list(attack) == ["pooled", "A01", "A02"]
    assert [attack[a]["eer"] for a in ("pooled", "A01", "A02")] == [
        result["eer"], result["per_attack"]["A01"]["eer"], result["per_attack"]["A02"]["eer"]
    ]
    assert [(attack[a]["n_bonafide"], attack[a]["n_spoof"]) for a in attack] == [(30, 60), (30, 30), (30, 30)]
    assert list(result["groups"]["speaker"]) == ["pooled", "LA_0001"]
    capsys.readouterr()
    assert run_cli(evaluator.main, [*argv[:3], "--group-by", "codec"]) == 2
    assert capsys.readouterr().err == (
        f"error: {toy['protocol']}: no column 'codec' to group by; its rows carry: speaker, attack\n"
    )
