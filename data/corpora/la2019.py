"""ASVspoof 2019 LA as distributed (Wang et al., "ASVspoof 2019: a large-scale public database of
synthesized, converted and replayed speech", Computer Speech & Language 64, 2020).

    <root>/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt
    <root>/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt
    <root>/ASVspoof2019_LA_{train,dev,eval}/flac/<utt_id>.flac

Protocol line: ``speaker utt_id - attack key`` (e.g. ``LA_0039 LA_E_2834763 - A11 spoof``); bona fide rows
have ``-`` as attack. The default corpus of the recipes; its stores keep the plain partition names.
"""

from __future__ import annotations

import os
from pathlib import Path

from data.corpora.base import AsvFiles, Corpus, register_corpus
from data.protocols import ProtocolRow, rows_from_columns
from utils.errors import UserError
from utils.scorefiles import CM_KEYS, check_unique_column, check_values, split_table

_FILES = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
_ASV_PARTITIONS = ("dev", "eval")


def asv_score_path(root: str | os.PathLike, partition: str) -> Path:
    """The organisers' ASV score file (``cm_key asv_key score``) of the dev or eval partition."""
    if partition not in _ASV_PARTITIONS:
        raise UserError(f"ASV scores exist for the dev and eval partitions only, not '{partition}'")
    return Path(root) / "ASVspoof2019_LA_asv_scores" / f"ASVspoof2019.LA.asv.{partition}.gi.trl.scores.txt"


@register_corpus
class LA2019(Corpus):
    name = "la2019"
    title = "2019 LA eval"
    display = "2019 LA"
    partitions = ("train", "dev", "eval")
    fields = ("speaker", "attack")
    layout = "speaker utt_id - attack key"
    protocol_name = "2019 LA protocol"
    asv_scores_hint = "ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt"
    default = True

    def protocol_path(self, root: str | os.PathLike, partition: str) -> Path:
        self.check_partition(partition)
        return Path(root) / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{_FILES[partition]}.txt"

    def audio_dir(self, root: str | os.PathLike, partition: str) -> Path:
        self.check_partition(partition)
        return Path(root) / f"ASVspoof2019_LA_{partition}" / "flac"

    def parse(
        self, path: Path, text: str, root: Path | None = None, partition: str | None = None
    ) -> list[ProtocolRow]:
        table = split_table(path, text, 5, self.layout)
        check_values(table, 4, CM_KEYS, "key")
        check_unique_column(table, 1)
        ids = table.columns[1]
        paths = None if root is None or partition is None else self.audio_paths(root, partition, ids)
        return rows_from_columns(table.columns[0], ids, table.columns[3], table.columns[4], paths)

    def detect(self, path: Path, first_line: str) -> bool:
        return "," not in first_line and path.suffix.lower() != ".csv" and len(first_line.split()) == 5

    def store_name(self, partition: str) -> str:
        # Stores made before other corpora existed are named by the partition alone; keep them working.
        return partition

    def asv_paths(self, root: str | os.PathLike, partition: str) -> AsvFiles | None:
        return AsvFiles(asv_score_path(root, partition)) if partition in _ASV_PARTITIONS else None
