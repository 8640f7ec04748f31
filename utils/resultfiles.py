"""Per-recording results files (generate_score.py --audio), written while the recordings are scored.

``.csv``: a header line, then one line per recording. ``.json``: a JSON array with one recording (an
object) per line. Each line is flushed as soon as it is written, so an interrupted run keeps every
recording it finished; `ResultsWriter` with ``resume`` reads such a file back (dropping a last line cut
short by a kill, and an unfinished JSON array's missing ``]``) and continues it: a resumed file is
byte for byte the file an uninterrupted run writes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from utils.errors import UserError, where
from utils.io import atomic_write_text

RESULT_SUFFIXES = (".csv", ".json")


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


class ResultsWriter:
    """Append result rows (dicts with exactly ``columns``, in that order) to a .csv or .json file.

    ``resume``: keep the rows already in ``path`` (`rows`, and `done`: their ``file`` values) and write
    after them; otherwise ``path`` starts empty. The file is (re)written from the first `write` on, so an
    error before any row leaves it as it was. Use as a context manager: leaving it closes the file (a
    JSON array gets its ``]``, also after an exception)."""

    def __init__(self, path: str | os.PathLike, columns: list[str], resume: bool = False) -> None:
        self.path = Path(path)
        self.json = self.path.suffix.lower() == ".json"
        if self.path.suffix.lower() not in RESULT_SUFFIXES:
            raise UserError(f"{self.path}: results file must end in .csv or .json")
        self.columns = list(columns)
        self.rows: list[dict[str, Any]] = []
        lines: list[str] = []
        if resume and self.path.is_file():
            lines, self.rows = (_read_json if self.json else _read_csv)(self.path, self.columns)
        self.done = {str(row.get("file")) for row in self.rows}
        self._lines = lines
        self._count = len(lines)
        self._handle: TextIO | None = None
        self._closed = False

    def _open(self) -> TextIO:
        if self._handle is None:
            if self.json:
                prefix = "[\n" + ",\n".join(self._lines)
            else:
                prefix = _csv_line(self.columns) + "".join(line + "\n" for line in self._lines)
            atomic_write_text(self.path, prefix)  # the kept rows, never a half-copied file
            self._handle = self.path.open("a", encoding="utf-8", newline="")
        return self._handle

    def write(self, row: dict[str, Any]) -> None:
        """Append one row and flush it to the operating system."""
        if list(row) != self.columns:
            raise ValueError(f"row columns {list(row)} differ from {self.columns}")
        if self._closed:
            raise ValueError(f"{self.path}: results file already closed")
        handle = self._open()
        if self.json:
            text = (",\n" if self._count else "") + json.dumps(row)
        else:
            text = _csv_line(list(row.values()))
        handle.write(text)
        handle.flush()
        self._count += 1

    def close(self, written: bool = True) -> None:
        """Finish the file; ``written`` False leaves a file that no row was written to untouched."""
        if self._closed or (self._handle is None and not written):
            return
        handle = self._open()
        if self.json:
            handle.write("\n]\n" if self._count else "]\n")
        handle.close()
        self._closed = True

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(written=kind is None)


def _read_csv(path: Path, columns: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """(complete row lines, rows as dicts of strings) of a results .csv written with ``columns``."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the last row was cut short: it is scored again
    lines = [line for line in lines if line]
    if not lines:
        return [], []
    header = next(csv.reader([lines[0]]))
    if header != columns:
        raise UserError(
            f"{where(path, 1)}: cannot continue this results file: its columns are {','.join(header)}, "
            f"this run writes {','.join(columns)}"
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        values = next(csv.reader([line]))
        if len(values) != len(columns):
            raise UserError(f"{where(path, number)}: expected {len(columns)} columns, got {len(values)}")
        rows.append(dict(zip(columns, values, strict=True)))
    return lines[1:], rows


def _read_json(path: Path, columns: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """(complete row lines without separators, rows) of a results .json written by `ResultsWriter`."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[0] != "[":
        raise UserError(f"{where(path, 1)}: not a results file written by this toolkit (no '[' line)")
    kept: list[str] = []
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.removesuffix(",")
        if line in ("]", ""):
            break
        try:
            row = json.loads(line)
        except ValueError:
            if number == len(lines):  # the last row was cut short: it is scored again
                break
            raise UserError(f"{where(path, number)}: not a JSON result row") from None
        if not isinstance(row, dict) or list(row) != columns:
            found = list(row) if isinstance(row, dict) else type(row).__name__
            raise UserError(
                f"{where(path, number)}: cannot continue this results file: its rows have {found}, "
                f"this run writes {columns}"
            )
        kept.append(line)
        rows.append(row)
    return kept, rows
