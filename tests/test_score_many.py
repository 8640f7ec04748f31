"""generate_score.py --audio over many recordings: unreadable ones reported and skipped, results streamed
to the output and resumed after an interruption, per-window scores and plots. Uses the untrained demo
XLS-R-LCNN checkpoint and the clips of conftest.py."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import THRESHOLD

import engine.score_windows
import generate_score
from data.audio import load_audio
from models.frontends import build_frontend
from utils.errors import UserError, run_cli
from utils.resultfiles import ResultsWriter


def window_scores(model: torch.nn.Module, loss: torch.nn.Module, wave: np.ndarray, starts: list[int]) -> list:
    """Scores of the 64,600-sample windows at ``starts``, computed here from the model."""
    frontend = build_frontend({"name": "ssl", "model": "random:narrow"}, device="cpu")
    with torch.no_grad():
        x = torch.from_numpy(frontend.extract([wave[s : s + 64600] for s in starts]))
        return loss.score(*model(x)).double().tolist()


@pytest.fixture(scope="module")
def folder(clips, tmp_path_factory) -> Path:
    """The three good clips plus an empty, a truncated and a text file with audio suffixes, and one too
    short to score (0.05 s), sorted between the good ones."""
    root = tmp_path_factory.mktemp("many")
    for path in clips.values():
        shutil.copy(path, root / path.name)
    (root / "a_empty.wav").write_bytes(b"")
    wave = np.random.default_rng(1).standard_normal(32000).astype(np.float32) * 0.1
    sf.write(root / "m_truncated.flac", wave, 16000, format="FLAC", subtype="PCM_16")
    data = (root / "m_truncated.flac").read_bytes()
    (root / "m_truncated.flac").write_bytes(data[: len(data) // 3])
    (root / "notes.wav").write_text("this is not audio\n")
    sf.write(root / "tiny.wav", wave[:800], 16000)
    return root


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """generate_score.py as the shell runs it (run_cli: errors -> exit 2); (exit code, stdout, stderr)."""
    code = run_cli(generate_score.main, [*argv, "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unreadable_files_are_reported_and_skipped(checkpoint, folder: Path, tmp_path: Path, capsys) -> None:
    path, model, loss = checkpoint
    out = tmp_path / "results.csv"
    argv = ["--checkpoint", str(path), "--audio", str(folder), "--output", str(out)]
    code, stdout, stderr = run(argv, capsys)
    assert code == 1
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["file"]).name for r in rows] == [
        "a_empty.wav", "long.wav", "m_truncated.flac", "notes.wav", "short.wav", "stereo.wav", "tiny.wav"
    ]
    status = {Path(r["file"]).stem: (r["status"], r["error"]) for r in rows}
    assert status["a_empty"] == ("error", f"{folder / 'a_empty.wav'}: audio file is empty (0 bytes)")
    assert status["m_truncated"][1].startswith(f"{folder / 'm_truncated.flac'}: ")
    assert status["notes"][1].startswith(f"{folder / 'notes.wav'}: cannot read audio")
    assert status["tiny"][1] == f"{folder / 'tiny.wav'}: too short to score (0.050 s, at least 0.1 s)"
    for row in rows:
        if row["status"] == "error":
            assert (row["score"], row["decision"], row["windows"]) == ("", "n/a", "0")
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped: ")]
    assert [line.removeprefix("skipped: ") for line in skipped] == [
        status[name][1] for name in ("a_empty", "m_truncated", "notes", "tiny")
    ]
    assert "3 recordings scored, 4 skipped" in stderr
    good = {Path(r["file"]).stem: r for r in rows if r["status"] == "ok"}
    assert set(good) == {"long", "short", "stereo"} and all(r["error"] == "" for r in good.values())
    expected = np.mean(window_scores(model, loss, load_audio(folder / "long.wav"), [0, 32300, 64600, 95400]))
    assert float(good["long"]["score"]) == pytest.approx(expected, abs=1e-5)
    assert len(stdout.strip().splitlines()) == 3  # one line per scored recording


def interrupt_at(monkeypatch, n: int) -> None:
    """Make reading the ``n``-th recording raise KeyboardInterrupt (Ctrl-C while scoring)."""
    calls = []
    real = engine.score_windows.load_audio

    def load(path):
        calls.append(path)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(engine.score_windows, "load_audio", load)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_an_interrupted_run_resumed_equals_an_uninterrupted_one(
    checkpoint, folder: Path, tmp_path: Path, monkeypatch, capsys, suffix: str
) -> None:
    path = checkpoint[0]
    extra = ["--windows"] if suffix == ".json" else []
    whole, part = tmp_path / f"whole{suffix}", tmp_path / f"part{suffix}"
    base = ["--checkpoint", str(path), "--audio", str(folder), *extra]
    assert run([*base, "--output", str(whole)], capsys)[0] == 1

    interrupt_at(monkeypatch, 6)  # five recordings done (long.wav among them, 4 windows)
    with pytest.raises(KeyboardInterrupt):
        generate_score.main([*base, "--output", str(part), "--no-progress", "--device", "cpu"])
    monkeypatch.undo()
    capsys.readouterr()
    kept = part.read_text()
    assert kept.count("short.wav") == 1 and "stereo.wav" not in kept
    # a kill in the middle of writing a row leaves a partial last line: it is scored again
    if suffix == ".json":
        assert kept.endswith("\n]\n")  # closed on the interrupt
        part.write_text(kept.removesuffix("\n]\n") + ',\n{"file": "' + str(folder / "stereo.w"))
    else:
        part.write_text(kept + str(folder / "stereo.wav") + ",0.1")
    code, stdout, stderr = run([*base, "--output", str(part), "--resume"], capsys)
    assert code == 1  # the skipped recordings of the first part still count
    assert "resuming" in stderr and "5 recordings already in it, 2 to score" in stderr
    assert [Path(line.split("\t")[0]).name for line in stdout.splitlines()] == ["stereo.wav"]
    assert part.read_bytes() == whole.read_bytes()


def test_windows_and_plots(checkpoint, clips, tmp_path: Path, capsys) -> None:
    path, model, loss = checkpoint
    out, plots = tmp_path / "results.json", tmp_path / "plots"
    argv = ["--checkpoint", str(path), "--audio", str(clips["long"]), str(clips["short"])]
    argv += ["--output", str(out), "--windows", "--plot", str(plots)]
    assert run(argv, capsys)[0] == 0
    long_row, short_row = json.loads(out.read_text())
    assert list(long_row) == ["file", "score", "decision", "threshold", "windows", "duration_s", "status",
                              "error", "window_scores"]
    starts = [0, 32300, 64600, 95400]
    windows = long_row["window_scores"]
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(s / 16000, (s + 64600) / 16000) for s in starts]
    expected = window_scores(model, loss, load_audio(clips["long"]), starts)
    np.testing.assert_allclose([w["score"] for w in windows], expected, atol=1e-5)
    assert long_row["score"] == sum(w["score"] for w in windows) / 4
    # a recording shorter than a window: one (tiled) window ending where the recording ends
    assert [(w["start_s"], w["end_s"]) for w in short_row["window_scores"]] == [(0.0, 0.3)]
    assert short_row["window_scores"][0]["score"] == short_row["score"]
    assert long_row["threshold"] == THRESHOLD
    names = sorted(p.name for p in plots.iterdir())
    assert names == sorted(
        re.sub(r"[^\w.-]+", "_", str(p)).strip("_") + ".png" for p in (clips["long"], clips["short"])
    )
    assert all((plots / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--windows", "--output", "r.csv"], "error: --windows: per-window scores are written to a .json "
                                             "--output"),
        (["--resume"], "error: --resume continues an --output results file: give --output"),
        (["--min-duration", "-1"], "error: --min-duration -1.0: must not be negative"),
    ],
)
def test_audio_option_mistakes(checkpoint, clips, tmp_path, capsys, monkeypatch, flags, message) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["--checkpoint", str(checkpoint[0]), "--audio", str(clips["short"]), *flags]
    code, _, stderr = run(argv, capsys)
    assert (code, stderr.strip()) == (2, message)
    assert list(tmp_path.iterdir()) == []


def test_windows_need_audio(checkpoint, tmp_path: Path, capsys) -> None:
    argv = ["--checkpoint", str(checkpoint[0]), "--features", str(tmp_path), "--output", "x.txt", "--windows"]
    code, _, stderr = run(argv, capsys)
    assert (code, stderr.strip()) == (2, "error: --windows applies to --audio only")


def test_results_writer_keeps_its_file_until_the_first_row_and_checks_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("file,score\na.wav,1.5\n")
    with pytest.raises(RuntimeError), ResultsWriter(path, ["file", "score"]):
        raise RuntimeError  # an error before any row: the old file stays
    assert path.read_text() == "file,score\na.wav,1.5\n"
    with ResultsWriter(path, ["file", "score"], resume=True) as writer:
        assert writer.done == {"a.wav"} and writer.rows == [{"file": "a.wav", "score": "1.5"}]
        writer.write({"file": "b,c.wav", "score": None})
    assert path.read_text() == 'file,score\na.wav,1.5\n"b,c.wav",\n'
    with pytest.raises(UserError, match=r"r\.csv:1: cannot continue this results file: its columns are "
                                        r"file,score, this run writes file,score,llr"):
        ResultsWriter(path, ["file", "score", "llr"], resume=True)
    with ResultsWriter(tmp_path / "empty.json", ["file"]):
        pass
    assert json.loads((tmp_path / "empty.json").read_text()) == []
