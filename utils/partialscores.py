"""A partition's score file in the making: ``OUTPUT.partial``, written by generate_score.py while it scores.

Line 1 is ``# generate_score.py partial scores `` and the run's settings as JSON (checkpoint weights,
partition, source, format, batch size, precision, ...); then one ``utt_id attack key score`` line per
utterance scored (the raw score, full float64 precision), in protocol order, appended and flushed to the
operating system batch by batch. A killed run leaves every batch it finished; `PartialScores` with
``resume`` reads them back, dropping a last line cut short by the kill, once the settings match the ones
the file was started with.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import numpy as np

from utils.errors import UserError, where
from utils.io import atomic_write_text
from utils.scorefiles import CM_KEYS, check_values, parse_scores, read_text, score_lines, split_table

HEADER = "# generate_score.py partial scores "
SUFFIX = ".partial"


def partial_path(output: str | os.PathLike) -> Path:
    """Where the rows of ``output`` are kept while it is written: ``OUTPUT.partial`` beside it."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


@dataclass
class ScoreRows:
    """Rows of a partial file: ``utt_ids``, ``attacks``, ``keys`` (bonafide/spoof), raw ``scores`` (n,)."""

    utt_ids: list[str] = field(default_factory=list)
    attacks: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.utt_ids)

    def head(self, n: int) -> ScoreRows:
        """The first ``n`` rows."""
        return ScoreRows(self.utt_ids[:n], self.attacks[:n], self.keys[:n], self.scores[:n])


class PartialScores:
    """``path`` (`partial_path` of the output) for a run with ``settings`` (JSON-serialisable).

    An existing file is an interrupted run: without ``resume`` that is a `UserError` (its rows are kept
    until the user says what to do with them); with ``resume`` its settings must equal ``settings`` and
    its complete rows become `done`. Nothing is written before `start`. Use as a context manager."""

    def __init__(self, path: str | os.PathLike, settings: dict[str, Any], *, resume: bool) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))  # as it reads back
        self.done = ScoreRows()
        self._handle: TextIO | None = None
        if not self.path.exists():
            return
        if not resume:
            raise UserError(
                f"{self.path}: scores of an interrupted run are kept here; add --resume to continue it, "
                "or delete the file to start over"
            )
        self.done = _read(self.path, self.settings)

    def start(self, keep: int) -> None:
        """(Re)write the file: the header and the first ``keep`` rows of `done`; appends follow them."""
        self.done = self.done.head(keep)
        lines = [HEADER + json.dumps(self.settings, sort_keys=True)]
        if keep:
            lines += score_lines(self.done.utt_ids, self.done.scores, self.done.attacks, self.done.keys)
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        self._handle = self.path.open("a", encoding="utf-8")

    def append(self, rows: ScoreRows) -> None:
        """Append ``rows`` in one write and flush them (a SIGKILL then loses nothing written)."""
        if self._handle is None:
            raise ValueError(f"{self.path}: start() first")
        lines = score_lines(rows.utt_ids, rows.scores, rows.attacks, rows.keys)
        self._handle.write("".join(line + "\n" for line in lines))
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        """Close and delete the file (the finished output has been written)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> PartialScores:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read(path: Path, settings: dict[str, Any]) -> ScoreRows:
    """The complete rows of the partial file ``path``, after checking its header against ``settings``."""
    text = read_text(path, "partial score file")
    first, _, body = text.partition("\n")
    try:
        started = json.loads(first[len(HEADER):]) if first.startswith(HEADER) else None
    except json.JSONDecodeError:
        started = None
    if not isinstance(started, dict):
        raise UserError(f"{where(path, 1)}: not a partial score file of generate_score.py; delete it")
    for key in sorted(set(started) | set(settings)):
        if started.get(key) != settings.get(key):
            raise UserError(
                f"{path}: started with {key} {started.get(key)!r}, this run has {settings.get(key)!r}; "
                "resume with the same settings, or delete the file to start over"
            )
    body = body[: body.rfind("\n") + 1]  # a last line without its newline was cut short by a kill
    if not body.strip():
        return ScoreRows()
    # the header line blanked, so that line numbers in errors are the file's
    table = split_table(path, "\n" + body, 4, "utt_id attack key score")
    keys = check_values(table, 2, CM_KEYS, "key")
    return ScoreRows(list(table.columns[0]), list(table.columns[1]), keys.tolist(), parse_scores(table, 3))
