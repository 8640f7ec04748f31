"""A toy corpus in a layout unlike 2019 LA, registered from outside data/corpora/ to show that a corpus is one
module (docs/ARCHITECTURE.md, "Add a corpus"). Subprocesses see it through ``ANTISPOOF_CORPORA=toy_corpus``
with tests/ on ``PYTHONPATH``.

    <root>/lists/{train,dev,eval}.tsv   header 'file<TAB>speaker<TAB>label<TAB>system', one trial a line
    <root>/<file>                       WAV files anywhere under the root (the list names them)

``label`` is ``genuine`` or ``fake``; ``system`` the spoofing system (``-`` for genuine trials). utt_id is the
file name without its folder and extension. No ASV trials.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from data.corpora import Corpus, register_corpus
from data.protocols import ProtocolRow, rows_from_columns
from utils.errors import UserError, where
from utils.scorefiles import BONAFIDE, SPOOF, check_unique

NAME = "toy"
HEADER = "file\tspeaker\tlabel\tsystem"
LABELS = {"genuine": BONAFIDE, "fake": SPOOF}


@register_corpus
class ToyCorpus(Corpus):
    name = NAME
    title = "Toy eval"
    display = "Toy"
    partitions = ("train", "dev", "eval")
    fields = ("speaker", "attack")
    layout = HEADER.replace("\t", " ")
    protocol_name = "toy list (.tsv)"

    def protocol_path(self, root: str | os.PathLike, partition: str) -> Path:
        self.check_partition(partition)
        return Path(root) / "lists" / f"{partition}.tsv"

    def detect(self, path: Path, first_line: str) -> bool:
        return first_line == HEADER

    def parse(
        self, path: Path, text: str, root: Path | None = None, partition: str | None = None
    ) -> list[ProtocolRow]:
        lines = text.splitlines()
        if not lines or lines[0] != HEADER:
            raise UserError(f"{where(path, 1)}: expected the header '{self.layout}' (tab-separated)")
        files, speakers, keys, systems, numbers = [], [], [], [], []
        for number, line in enumerate(lines[1:], 2):
            fields = line.split("\t")
            if len(fields) != 4 or fields[2] not in LABELS:
                raise UserError(f"{where(path, number)}: expected '{self.layout}' with label genuine or fake")
            files.append(fields[0])
            speakers.append(fields[1])
            keys.append(LABELS[fields[2]])
            systems.append(fields[3])
            numbers.append(number)
        ids = [Path(f).stem for f in files]
        check_unique(path, ids, numbers)
        paths = None if root is None else [os.path.join(root, f) for f in files]
        return rows_from_columns(speakers, ids, systems, keys, paths)


def write_toy_corpus(root: Path, counts: dict[str, int], seed: int = 0) -> dict[str, list[ProtocolRow]]:
    """Lists and 1-1.5 s WAV files of ``counts[partition]`` trials each (a third genuine: a clean harmonic
    tone; fake: the tone with a buzz); returns the rows written per partition."""
    rng = np.random.default_rng(seed)
    written = {}
    for partition, n in counts.items():
        lines, rows = [HEADER], []
        for i in range(n):
            genuine = i % 3 == 0
            system = "-" if genuine else f"S{1 + i % 2}"
            file = f"audio/{partition}/{'g' if genuine else 'f'}/{partition}_{i:03d}.wav"
            t = np.arange(int(16000 * (1.0 + 0.5 * rng.random()))) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (110 + 20 * (i % 5)) * t)
            if not genuine:
                wave += 0.1 * np.sign(np.sin(2 * np.pi * 50 * t))
            wave += 0.01 * rng.standard_normal(t.size)
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / file, wave.astype(np.float32), 16000, subtype="PCM_16")
            speaker = f"spk{i % 2}"
            lines.append(f"{file}\t{speaker}\t{'genuine' if genuine else 'fake'}\t{system}")
            key = BONAFIDE if genuine else SPOOF
            rows.append(ProtocolRow(speaker, Path(file).stem, system, key, str(root / file)))
        (root / "lists").mkdir(parents=True, exist_ok=True)
        (root / "lists" / f"{partition}.tsv").write_text("\n".join(lines) + "\n")
        written[partition] = rows
    return written
