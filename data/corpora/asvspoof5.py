"""ASVspoof 5 as distributed (Wang et al., "ASVspoof 5: crowdsourced speech data, deepfakes, and adversarial
attacks at scale", ASVspoof 2024 workshop):

    <root>/ASVspoof5_protocols/ASVspoof5.{train.tsv,dev.track_1.tsv,eval.track_1.tsv}
    <root>/flac_T/<file>.flac   <root>/flac_D/<file>.flac   <root>/flac_E_eval/<file>.flac (or flac_E/)

Protocol line (whitespace-separated despite the ``.tsv`` suffix, no header, 10 columns):
``SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP``, e.g.
``E_0001 E_0000000001 F C05 4 123 A19 A19 spoof -``. Rows carry the attack (ATTACK_LABEL, ``-`` for bona fide)
and ``codec`` (CODEC, ``-`` when uncoded) in `ProtocolRow.extra`. The evaluator computes the Track 1 measures
per attack x codec for it (docs/evaluation.md, "ASVspoof 5 Track 1").

The evaluation package's key file (tab-separated, header ``filename	cm-label``) reads as this corpus too:
its rows have no attack or codec, so only the pooled measures come from it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data.corpora.base import Corpus, TrialColumns, register_corpus
from data.protocols import ProtocolRow, extra_fields, rows_from_columns
from utils.errors import UserError, where
from utils.scorefiles import (
    BONAFIDE,
    CM_KEYS,
    check_unique_column,
    check_values,
    read_head,
    read_padded,
    read_text,
    split_padded,
    split_table,
)

_FILES = {"train": "train.tsv", "dev": "dev.track_1.tsv", "eval": "eval.track_1.tsv"}
_AUDIO = {"train": ("flac_T",), "dev": ("flac_D",), "eval": ("flac_E_eval", "flac_E")}
COLUMNS = (
    "SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP"
)
KEY_HEADER = ("filename", "cm-label")
_SPEAKER, _FILE, _CODEC, _ATTACK, _KEY = 0, 1, 3, 7, 8
UNKNOWN = "unknown"


@register_corpus
class ASVspoof5(Corpus):
    name = "asvspoof5"
    title = "ASVspoof 5 eval"
    display = "ASVspoof 5"
    partitions = ("train", "dev", "eval")
    fields = ("speaker", "attack", "codec")
    layout = COLUMNS
    protocol_name = "ASVspoof 5 protocol"
    track1_tables = True

    def protocol_path(self, root: str | os.PathLike, partition: str) -> Path:
        self.check_partition(partition)
        return Path(root) / "ASVspoof5_protocols" / f"ASVspoof5.{_FILES[partition]}"

    def audio_dir(self, root: str | os.PathLike, partition: str) -> Path:
        self.check_partition(partition)
        names = _AUDIO[partition]
        # Some copies name the eval folder flac_E/: take the first that exists, else the distributed name.
        return next((Path(root) / n for n in names if (Path(root) / n).is_dir()), Path(root) / names[0])

    def detect(self, path: Path, first_line: str) -> bool:
        tokens = first_line.split()
        if tuple(t.lower() for t in tokens) == KEY_HEADER:
            return True
        return "," not in first_line and len(tokens) == 10 and tokens[_KEY] in CM_KEYS

    def parse(
        self, path: Path, text: str, root: Path | None = None, partition: str | None = None
    ) -> list[ProtocolRow]:
        trials = self.trial_columns(path, text)
        ids = trials.utt_ids.tolist()
        speakers = _speakers(path, text, len(ids))
        paths = None if root is None or partition is None else self.audio_paths(root, partition, ids)
        cache: dict = {}
        extra = None
        if trials.codecs is not None:
            extra = [extra_fields({"codec": codec}, cache) for codec in trials.codecs.tolist()]
        return rows_from_columns(speakers, ids, trials.attacks.tolist(), trials.keys.tolist(), paths, extra)

    def trial_columns(self, path: Path, text: str | None = None) -> TrialColumns:
        table = None
        if text is None:
            # A protocol of plain rows is split on its bytes (no decoding); the key file, a pipe (read once)
            # and any file with a bad line go through the text, which names the line.
            if Path(path).is_file() and not _is_key_file(read_head(path, "protocol file")):
                table = split_padded(path, read_padded(path, "protocol file"), 10)
            text = read_text(path, "protocol file") if table is None else None
        if text is not None and _is_key_file(text):
            return _key_file_columns(path, text)
        table = split_table(path, text, 10, COLUMNS) if table is None else table
        keys = check_values(table, _KEY, CM_KEYS, "key")
        check_unique_column(table, _FILE)
        attacks = np.where(keys == BONAFIDE, "-", table.columns[_ATTACK])
        codecs = np.asarray(table.columns[_CODEC])
        return TrialColumns(np.asarray(table.columns[_FILE]), keys, attacks, codecs)


def _is_key_file(text: str) -> bool:
    head = text.lstrip().split("\n", 1)[0].split()
    return tuple(t.lower() for t in head) == KEY_HEADER


def _speakers(path: Path, text: str, n: int) -> list[str]:
    """The speaker column of a protocol (``unknown`` for the package's key file)."""
    if _is_key_file(text):
        return [UNKNOWN] * n
    return np.asarray(split_table(path, text, 10, COLUMNS).columns[_SPEAKER]).tolist()


def _key_file_columns(path: Path, text: str) -> TrialColumns:
    """The evaluation package's ``filename	cm-label`` key file (header on the first non-blank line)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip())
    # Blank the header but keep the line count, so errors name the file's own line numbers.
    body = "\n" * (first + 1) + "\n".join(lines[first + 1 :])
    if not body.strip():
        raise UserError(f"{where(path, first + 1)}: no trials after the header")
    table = split_table(path, body, 2, "\t".join(KEY_HEADER))
    keys = check_values(table, 1, CM_KEYS, "cm-label")
    check_unique_column(table, 0)
    return TrialColumns(np.array(table.columns[0]), keys, np.where(keys == BONAFIDE, "-", UNKNOWN), None)
