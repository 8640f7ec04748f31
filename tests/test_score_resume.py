"""generate_score.py on a partition: OUTPUT.partial resumed after SIGKILL, torchrun processes, both at once.

The tiny eval partition has 7 utterances; with --batch-size 2 it is scored in 4 batches (2, 2, 2, 1).
Every way of making the score file must give the bytes of one uninterrupted single-process run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

import generate_score
from engine import score_stream
from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]


def argv(checkpoint: Path, corpus: Path, out: Path, *more: str) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--features", str(corpus / "feats"), "--partition", "eval",
            "--output", str(out), "--batch-size", "2", "--device", "cpu", "--no-progress", *more]


@pytest.fixture(scope="module")
def reference(checkpoint, tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The score file of one uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference") / "eval.txt"
    assert generate_score.main(argv(checkpoint[0], tiny_corpus, out)) == 0
    data = out.read_bytes()
    assert len(data.splitlines()) == 7 and not Path(f"{out}.partial").exists()
    return data


def crashed_at_the_end(checkpoint: Path, corpus: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run until every row is in OUTPUT.partial, then fail writing OUTPUT: the partial file stays."""

    def fail(*_args: object) -> None:
        raise RuntimeError("crash")

    with monkeypatch.context() as patch:
        patch.setattr(score_stream, "write_partition_scores", fail)
        with pytest.raises(RuntimeError, match="crash"):
            generate_score.main(argv(checkpoint, corpus, out))
    assert not out.exists()
    return Path(f"{out}.partial")


def cut_mid_batch(partial: Path, reference: bytes, rows: int) -> None:
    """Keep the header and ``rows`` rows of ``partial``, then add what a kill in the middle of the next
    batch's write can leave: one row of it (with a score nobody computed) and a line cut short."""
    lines = partial.read_text().splitlines(keepends=True)
    utt, attack, key, _ = reference.decode().splitlines()[rows].split()
    partial.write_text("".join(lines[: 1 + rows]) + f"{utt} {attack} {key} 123.0\n{utt} {attack} bon")


def test_other_settings_or_no_resume_are_one_line_errors_then_resume_finishes(
    checkpoint, tiny_corpus: Path, tmp_path: Path, reference: bytes, monkeypatch, capsys
) -> None:
    out = tmp_path / "eval.txt"
    partial = crashed_at_the_end(checkpoint[0], tiny_corpus, out, monkeypatch)
    assert partial.read_text().startswith("# generate_score.py partial scores {")
    assert partial.read_text().splitlines()[1:] == reference.decode().splitlines()
    capsys.readouterr()
    for more, message in [
        ([], f"error: {partial}: scores of an interrupted run are kept here; add --resume to continue it, "
         "or delete the file to start over"),
        (["--resume", "--batch-size", "3"], f"error: {partial}: started with batch_size 2, this run has 3; "
         "resume with the same settings, or delete the file to start over"),
        (["--resume", "--format", "asvspoof5"], f"error: {partial}: started with format "
         "'id-attack-key-score', this run has 'asvspoof5'; resume with the same settings, or delete the "
         "file to start over"),
    ]:
        assert run_cli(generate_score.main, argv(checkpoint[0], tiny_corpus, out, *more)) == 2
        assert capsys.readouterr().err.strip().splitlines() == [message]
        assert not out.exists() and partial.exists()
    first = reference.decode().split()[0]
    kept = partial.read_text()
    partial.write_text(kept.replace(f"\n{first} ", "\nLA_E_0000000 ", 1))
    assert run_cli(generate_score.main, argv(checkpoint[0], tiny_corpus, out, "--resume")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {partial}:2: utt_id LA_E_0000000, but the partition has {first} there (the protocol "
        "changed?); delete the file to start over"
    ]
    partial.write_text(kept)
    cut_mid_batch(partial, reference, rows=2)  # then 3 rows: the second batch is incomplete, scored again
    assert generate_score.main(argv(checkpoint[0], tiny_corpus, out, "--resume")) == 0
    assert out.read_bytes() == reference and not partial.exists()
    assert "7 utterances scored (2 resumed from " in capsys.readouterr().out


@pytest.mark.slow
def test_resume_after_sigkill_is_byte_identical(
    checkpoint, tiny_corpus: Path, tmp_path: Path, reference: bytes, capsys
) -> None:
    """Kill -9 a real generate_score.py process after its first batch, resume it, compare with a clean run."""
    out = tmp_path / "eval.txt"
    partial = Path(f"{out}.partial")
    # --throttle 60 pauses after each batch written, so the kill lands after the first batch on any box
    cmd = [sys.executable, "generate_score.py", *argv(checkpoint[0], tiny_corpus, out, "--throttle", "60")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (partial.exists() and len(partial.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no batch scored after 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and len(partial.read_text().splitlines()) == 3  # header + the first batch
    capsys.readouterr()
    assert generate_score.main(argv(checkpoint[0], tiny_corpus, out, "--resume")) == 0
    assert out.read_bytes() == reference and not partial.exists()
    assert "7 utterances scored (2 resumed from " in capsys.readouterr().out


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "generate_score.py", *args]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_torchrun_processes_write_the_single_process_file(
    checkpoint, tiny_corpus: Path, tmp_path: Path, reference: bytes
) -> None:
    """Two gloo processes on the CPU: batches 0 and 2 on rank 0, 1 and 3 on rank 1; rank 0 writes."""
    out = tmp_path / "eval.txt"
    result = torchrun(argv(checkpoint[0], tiny_corpus, out))
    assert out.read_bytes() == reference and not Path(f"{out}.partial").exists()
    assert result.stdout.count("7 utterances scored -> ") == 1  # rank 0 alone reports


@pytest.mark.slow
def test_two_torchrun_processes_resume_a_single_process_run(
    checkpoint, tiny_corpus: Path, tmp_path: Path, reference: bytes, monkeypatch
) -> None:
    """A partial file from one process (cut in the middle of its second batch) finished by two."""
    out = tmp_path / "eval.txt"
    partial = crashed_at_the_end(checkpoint[0], tiny_corpus, out, monkeypatch)
    cut_mid_batch(partial, reference, rows=2)
    result = torchrun(argv(checkpoint[0], tiny_corpus, out, "--resume"))
    assert out.read_bytes() == reference and not partial.exists()
    assert result.stdout.count("7 utterances scored (2 resumed from ") == 1
