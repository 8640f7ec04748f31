"""In-the-Wild (Müller et al., "Does audio deepfake detection generalize?", Interspeech 2022):

    <root>/meta.csv        header 'file,speaker,label', label 'bona-fide' or 'spoof'
    <root>/<n>.wav

One partition (eval); utt_id is the file name without extension, and the row's audio is the file the CSV
names. There are no attack labels (spoof rows get attack ``unknown``) and no ASV trials: pooled EER only.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from data.corpora.base import Corpus, register_corpus
from data.protocols import ProtocolRow
from utils.errors import UserError, where
from utils.scorefiles import BONAFIDE, SPOOF, check_unique

UNKNOWN_ATTACK = "unknown"
HEADER = ["file", "speaker", "label"]
_LABELS = {"bona-fide": BONAFIDE, "spoof": SPOOF}


@register_corpus
class InTheWild(Corpus):
    name = "itw"
    title = "In-the-Wild"
    display = "In-the-Wild"
    partitions = ("eval",)
    fields = ("speaker",)
    layout = ",".join(HEADER)
    protocol_name = "In-the-Wild meta.csv"

    def protocol_path(self, root: str | os.PathLike, partition: str) -> Path:
        self.check_partition(partition)
        return Path(root) / "meta.csv"

    def detect(self, path: Path, first_line: str) -> bool:
        return [h.strip().strip('"').lower() for h in first_line.split(",")] == HEADER

    def parse(
        self, path: Path, text: str, root: Path | None = None, partition: str | None = None
    ) -> list[ProtocolRow]:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: the file is empty")
        if [h.strip().lower() for h in header] != HEADER:
            raise UserError(
                f"{where(path, 1)}: expected the header '{self.layout}', got '{','.join(header)}'"
            )
        rows: list[ProtocolRow] = []
        line_numbers: list[int] = []
        for fields in reader:
            if not fields or not any(f.strip() for f in fields):
                continue
            rows.append(self._row(path, reader.line_num, fields, root))
            line_numbers.append(reader.line_num)
        if not rows:
            raise UserError(f"{path}: no trials after the header")
        check_unique(path, [r.utt_id for r in rows], line_numbers)
        return rows

    def _row(self, path: Path, line: int, fields: list[str], root: Path | None) -> ProtocolRow:
        if len(fields) != 3:
            raise UserError(f"{where(path, line)}: expected 3 columns '{self.layout}', got {len(fields)}")
        file, speaker, label = (f.strip() for f in fields)
        key = _LABELS.get(label.lower())
        if key is None:
            raise UserError(f"{where(path, line)}: label '{label}' is not one of {', '.join(_LABELS)}")
        utt_id = os.path.splitext(file)[0]
        if not utt_id:
            raise UserError(f"{where(path, line)}: empty file name")
        audio = None if root is None else os.path.join(root, file)
        return ProtocolRow(speaker, utt_id, "-" if key == BONAFIDE else UNKNOWN_ATTACK, key, audio)
