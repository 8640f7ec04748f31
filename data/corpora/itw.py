"""In-the-Wild (Müller et al., "Does audio deepfake detection generalize?", Interspeech 2022):

    <root>/meta.csv        header 'file,speaker,label', label 'bona-fide' or 'spoof'
    <root>/<n>.wav

One partition (eval); utt_id is the file name without extension, and the row's audio is the file the CSV
names. There are no attack labels (spoof rows get attack ``unknown``, as in a manifest
without an attack column: meta.csv is read by the manifest reader) and no ASV trials: pooled EER only.
"""

from __future__ import annotations

import os
from pathlib import Path

from data.corpora.base import Corpus, register_corpus
from data.corpora.manifest import header_columns, read_manifest
from data.protocols import ProtocolRow
from utils.errors import UserError, where
from utils.scorefiles import BONAFIDE, SPOOF

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
        """meta.csv is a manifest (data/corpora/manifest.py) with exactly the columns `HEADER` and the
        labels bona-fide and spoof."""
        header = next((line for line in text.splitlines() if line.strip()), None)
        if header is None:
            raise UserError(f"{path}: the file is empty")
        if header_columns(header) != HEADER or "\t" in header:
            raise UserError(f"{where(path, 1)}: expected the header '{self.layout}', got '{header}'")
        return read_manifest(path, text, root, _LABELS)
