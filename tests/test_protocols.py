"""data/protocols.py: real 2019 LA protocols (docs/data.md counts), 2021 and ITW formats, layouts, errors."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from data.corpora import corpus_names, get_corpus, read_protocol
from data.corpora.la2019 import asv_score_path
from data.protocols import (
    ProtocolRow,
    format_protocol_line,
    format_summary,
    main,
    protocol_summary,
    write_protocol,
)
from utils.errors import UserError, run_cli

LA2021 = """LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval
LA_0030 LA_E_5085671 none ita_tx bonafide bonafide notrim progress
LA_0012 LA_E_1111111 ulaw sin_tx A10 spoof trim eval
"""
DF2021 = """LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -
TEF2 DF_E_2000013 low_m4a vcc2020 Task1-team20 spoof notrim eval neural_vocoder_nonautoregressive \
Task1 team20 FF E
LA_0031 DF_E_2000020 mp3m4a asvspoof bonafide bonafide notrim eval bonafide - - - -
"""
ITW = (
    "file,speaker,label\n0.wav,Alec Guinness,spoof\n"
    '1.wav,"Smith, Jr",bona-fide\n2.wav,Alec Guinness,bona-fide\n'
)


@pytest.fixture(scope="module")
def la_root(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2019 LA data root whose protocol folder is a symlink to ../shared (nothing copied)."""
    root = tmp_path_factory.mktemp("LA")
    (root / "ASVspoof2019_LA_cm_protocols").symlink_to(shared_dir / "asvspoof2019_la" / "protocols")
    return root


def load_partition(root: Path, partition: str, corpus: str = "la2019") -> list[ProtocolRow]:
    return get_corpus(corpus).read(root, partition)


def protocol_path(root: Path, partition: str, corpus: str = "la2019") -> Path:
    return get_corpus(corpus).protocol_path(root, partition)


def audio_path(root: Path, partition: str, utt_id: str, corpus: str = "la2019") -> Path:
    return get_corpus(corpus).audio_path(root, partition, utt_id)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "partition, bona, spoof, attacks, per_attack",
    [
        ("train", 2580, 22800, [f"A0{i}" for i in range(1, 7)], 3800),
        ("dev", 2548, 22296, [f"A0{i}" for i in range(1, 7)], 3716),
        ("eval", 7355, 63882, [f"A{i:02d}" for i in range(7, 20)], 4914),
    ],
)
def test_real_2019_la_counts(
    la_root: Path, partition: str, bona: int, spoof: int, attacks: list[str], per_attack: int
) -> None:
    rows = load_partition(la_root, partition)
    summary = protocol_summary(rows)
    assert summary["n"] == bona + spoof
    assert summary["keys"] == {"bonafide": bona, "spoof": spoof}
    assert summary["attacks"] == {"-": bona, **{a: per_attack for a in attacks}}
    assert sum(r.label for r in rows) == spoof


def test_first_eval_row(la_root: Path) -> None:
    row = load_partition(la_root, "eval")[0]
    audio = la_root / "ASVspoof2019_LA_eval" / "flac" / "LA_E_2834763.flac"
    assert row == ProtocolRow("LA_0039", "LA_E_2834763", "A11", "spoof", str(audio))
    assert row.label == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.key = "bonafide"  # type: ignore[misc]


def test_trial_metadata_2021(tmp_path: Path) -> None:
    la = read_protocol(write(tmp_path, "la.txt", LA2021))
    assert la == [
        ProtocolRow("LA_0009", "LA_E_9332881", "A07", "spoof", extra={"codec": "alaw", "subset": "eval"}),
        ProtocolRow(
            "LA_0030", "LA_E_5085671", "-", "bonafide", extra={"codec": "none", "subset": "progress"}
        ),
        ProtocolRow("LA_0012", "LA_E_1111111", "A10", "spoof", extra={"codec": "ulaw", "subset": "eval"}),
    ]
    # rows of the same codec and phase share one read-only mapping, which pickles (DataLoader workers)
    twice = read_protocol(write(tmp_path, "twice.txt", LA2021 + LA2021.replace("_E_", "_X_")))
    assert twice[3].extra is twice[0].extra == la[0].extra and twice[3].extra is not twice[1].extra
    assert pickle.loads(pickle.dumps(la)) == la
    with pytest.raises(TypeError):
        la[0].extra["codec"] = "opus"  # type: ignore[index]
    df = read_protocol(write(tmp_path, "df.txt", DF2021), fmt="df2021")
    assert [(r.utt_id, r.attack, r.label) for r in df] == [
        ("DF_E_2000011", "A14", 1),
        ("DF_E_2000013", "Task1-team20", 1),
        ("DF_E_2000020", "-", 0),
    ]


def test_in_the_wild_meta_csv(tmp_path: Path) -> None:
    rows = read_protocol(write(tmp_path, "meta.csv", ITW))
    assert rows == [
        ProtocolRow("Alec Guinness", "0", "unknown", "spoof"),
        ProtocolRow("Smith, Jr", "1", "-", "bonafide"),
        ProtocolRow("Alec Guinness", "2", "-", "bonafide"),
    ]
    assert protocol_summary(rows) == {
        "n": 3,
        "keys": {"bonafide": 2, "spoof": 1},
        "attacks": {"-": 2, "unknown": 1},
        "speakers": 2,
    }


@pytest.mark.parametrize(
    "name, text, fmt, message",
    [
        (
            "p.txt",
            "S1 U1 - - bonafide\nS1 U2 - A01\n",
            "auto",
            r"p.txt:2: expected 5 columns 'speaker utt_id - attack key', got 4",
        ),
        (
            "p.txt",
            "S1 U1 - - bonafide\n\nS1 U2 - A01 fake\n",
            "auto",
            r"p.txt:3: key 'fake' is not one of bonafide, spoof",
        ),
        (
            "p.txt",
            "S1 U1 - - bonafide\nS1 U2 - A01 spoof\nS2 U1 - A02 spoof\n",
            "auto",
            r"p.txt:3: duplicate utt_id 'U1' \(first on line 1\)",
        ),
        ("p.txt", "", "auto", r"p.txt: the file is empty"),
        ("p.txt", "a b c\n", "auto", r"p.txt: cannot tell the protocol format from 3 columns"),
        (
            "t.txt",
            LA2021 + "LA_1 LA_E_2 alaw ita_tx A07 spoof notrim\n",
            "la2021",
            r"t.txt:4: expected at least 8 columns",
        ),
        (
            "m.csv",
            "file,speaker,label\n0.wav,A,spoof\n1.wav,B,real\n",
            "auto",
            r"m.csv:3: label 'real' is not one of",
        ),
        (
            "m.csv",
            "file,speaker,label\n0.wav,A,spoof\n0.flac,B,spoof\n",
            "auto",
            r"m.csv:3: duplicate utt_id '0'",
        ),
        ("m.csv", "name,label\n0.wav,spoof\n", "itw", r"m.csv:1: expected the header 'file,speaker,label'"),
        ("m.csv", "file,speaker,label\n0.wav,spoof\n", "itw", r"m.csv:2: expected 3 columns"),
    ],
)
def test_malformed_protocols(tmp_path: Path, name: str, text: str, fmt: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        read_protocol(write(tmp_path, name, text), fmt)
    assert "\n" not in str(info.value)


def test_layout_helpers() -> None:
    root = Path("/data/LA")
    assert protocol_path(root, "dev") == root / "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt"
    assert (
        protocol_path(root, "train") == root / "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt"
    )
    assert protocol_path(root, "eval", "df2021") == root / "keys/DF/CM/trial_metadata.txt"
    assert protocol_path(root, "eval", "la2021") == root / "keys/LA/CM/trial_metadata.txt"
    assert protocol_path(root, "eval", "itw") == root / "meta.csv"
    assert audio_path(root, "train", "LA_T_1") == root / "ASVspoof2019_LA_train/flac/LA_T_1.flac"
    assert audio_path(root, "eval", "LA_E_1", "la2021") == root / "ASVspoof2021_LA_eval/flac/LA_E_1.flac"
    assert audio_path(root, "eval", "DF_E_1", "df2021") == root / "ASVspoof2021_DF_eval/flac/DF_E_1.flac"
    assert (
        asv_score_path(root, "eval")
        == root / "ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    )
    assert get_corpus("la2019").asv_paths(root, "dev").scores == asv_score_path(root, "dev")
    assert get_corpus("la2019").asv_paths(root, "train") is None
    assert corpus_names() == ("asvspoof5", "df2021", "itw", "la2019", "la2021", "manifest")
    with pytest.raises(UserError, match="unknown partition 'dev' for la2021; expected one of eval"):
        protocol_path(root, "dev", "la2021")
    with pytest.raises(UserError, match="unknown corpus 'la2017'; expected one of asvspoof5, df2021, itw, "):
        audio_path(root, "eval", "x", "la2017")
    with pytest.raises(UserError, match="dev and eval partitions only"):
        asv_score_path(root, "train")


def test_write_protocol_round_trips_in_the_2019_layout(tmp_path: Path) -> None:
    rows = [
        ProtocolRow("LA_0079", "LA_T_1138215", "-", "bonafide"),
        ProtocolRow("LA_0080", "LA_T_2", "A01", "spoof"),
    ]
    assert format_protocol_line(rows[1]) == "LA_0080 LA_T_2 - A01 spoof"
    path = protocol_path(tmp_path, "train")
    write_protocol(path, rows)  # creates the protocol folder
    assert path.read_text() == "LA_0079 LA_T_1138215 - - bonafide\nLA_0080 LA_T_2 - A01 spoof\n"
    flac = tmp_path / "ASVspoof2019_LA_train" / "flac"
    assert load_partition(tmp_path, "train") == [
        ProtocolRow(r.speaker, r.utt_id, r.attack, r.key, str(flac / f"{r.utt_id}.flac")) for r in rows
    ]
    assert read_protocol(path) == rows  # a protocol file alone: no audio paths
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_load_partition_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing: data root not found"):
        load_partition(tmp_path / "missing", "train")
    expected = tmp_path / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    with pytest.raises(UserError, match=f"{expected}: protocol not found"):
        load_partition(tmp_path, "dev")
    (tmp_path / "keys/DF/CM").mkdir(parents=True)
    write(tmp_path / "keys/DF/CM", "trial_metadata.txt", DF2021)
    rows = load_partition(tmp_path, "eval", "df2021")
    assert [(r.utt_id, r.path, r.extra) for r in rows] == [
        (u, str(tmp_path / "ASVspoof2021_DF_eval" / "flac" / f"{u}.flac"), {"codec": c, "subset": s})
        for u, c, s in (("DF_E_2000011", "nocodec", "progress"), ("DF_E_2000013", "low_m4a", "eval"),
                        ("DF_E_2000020", "mp3m4a", "eval"))
    ]
    write(tmp_path, "meta.csv", ITW)
    # In-the-Wild rows point at the file meta.csv names
    assert [r.path for r in load_partition(tmp_path, "eval", "itw")] == [
        str(tmp_path / f"{k}.wav") for k in range(3)
    ]


def test_summary_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "la.txt", LA2021)
    assert run_cli(main, [str(path)]) == 0
    out = capsys.readouterr().out
    assert out == format_summary(protocol_summary(read_protocol(path)), str(path)) + "\n"
    assert "bonafide           1" in out and "A07                1" in out
    assert run_cli(main, [str(tmp_path / "nope.txt")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.txt'}: protocol file not found\n"
