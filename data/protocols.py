"""Protocol rows and the helpers every corpus reader shares (no corpus layouts here: `data.corpora`).

A protocol row is one trial: speaker, utt_id, attack (``-`` for bona fide), key (``bonafide`` or
``spoof``), the audio file it names and the other fields its corpus carries (e.g. ``codec``). The
readers of each corpus live in `data.corpora`; `python -m data.protocols FILE` prints a protocol's counts
per key and attack, whatever corpus it belongs to. No torch here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import run_cli
from utils.io import atomic_write_text
from utils.scorefiles import BONAFIDE


class Fields(Mapping[str, str]):
    """A read-only mapping of a row's extra fields (picklable for DataLoader workers; shared between rows)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Fields({self._data!r})"


_NO_EXTRA = Fields()


def extra_fields(values: Mapping[str, str], cache: dict) -> Fields:
    """`Fields` of ``values`` for `ProtocolRow.extra`, shared with every earlier row of the same values in
    ``cache`` (a protocol's rows share few distinct combinations, e.g. codec and phase)."""
    key = tuple(values.items())
    found = cache.get(key)
    if found is None:
        found = cache[key] = Fields(values)
    return found


@dataclass(frozen=True, slots=True)
class ProtocolRow:
    """One protocol trial; `attack` is ``-`` for bona fide, `key` is ``bonafide`` or ``spoof``.

    `path`: the trial's audio file (a string: protocols hold up to a million rows), None when the
    protocol was read without its corpus root; `extra`: the other fields the corpus carries, by name
    (e.g. ``{"codec": "alaw", "subset": "eval"}``; see `data.corpora.Corpus.fields`): read-only `Fields`,
    shared between rows (`extra_fields`), or any mapping.
    """

    speaker: str
    utt_id: str
    attack: str
    key: str
    path: str | None = None
    extra: Mapping[str, str] = field(default_factory=lambda: _NO_EXTRA, hash=False)

    @property
    def label(self) -> int:
        """Class index: 0 = bona fide, 1 = spoof."""
        return 0 if self.key == BONAFIDE else 1


def rows_from_columns(
    speakers: Sequence[str],
    ids: Sequence[str],
    attacks: Sequence[str],
    keys: Sequence[str],
    paths: Iterable[str | None] | None = None,
    extra: Iterable[Mapping[str, str]] | None = None,
) -> list[ProtocolRow]:
    """Rows from columns of equal length; bona fide rows get attack ``-`` whatever the column says (the
    2021 metadata writes ``bonafide`` there)."""
    # Columns may come as numpy str arrays (utils.scorefiles.TokenColumns): rows hold plain str.
    speakers, ids, attacks, keys = (
        c.tolist() if hasattr(c, "tolist") else c for c in (speakers, ids, attacks, keys)
    )
    attacks = ["-" if key == BONAFIDE else attack for attack, key in zip(attacks, keys, strict=True)]
    columns: list[Iterable] = [speakers, ids, attacks, keys]
    if paths is not None or extra is not None:
        columns.append([None] * len(ids) if paths is None else paths)
    if extra is not None:
        columns.append(extra)
    return list(map(ProtocolRow, *columns))


def format_protocol_line(row: ProtocolRow) -> str:
    """One row in the 2019 LA protocol layout ``speaker utt_id - attack key`` (no newline)."""
    return f"{row.speaker} {row.utt_id} - {row.attack} {row.key}"


def write_protocol(path: str | os.PathLike, rows: Sequence[ProtocolRow]) -> None:
    """Write ``rows`` as a 2019 LA protocol file (`format_protocol_line` per line), atomically."""
    atomic_write_text(path, "".join(f"{format_protocol_line(row)}\n" for row in rows))


def first_ids(ids: Sequence[str], limit: int = 3) -> str:
    """The first few ids, for error messages."""
    ids = list(ids)
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")


def protocol_summary(rows: Sequence[ProtocolRow]) -> dict:
    """Counts: ``{"n": total, "keys": {key: n}, "attacks": {attack: n}, "speakers": n_speakers}`` (sorted)."""
    return {
        "n": len(rows),
        "keys": dict(sorted(Counter(r.key for r in rows).items())),
        "attacks": dict(sorted(Counter(r.attack for r in rows).items())),
        "speakers": len({r.speaker for r in rows}),
    }


def format_summary(summary: dict, title: str = "protocol") -> str:
    """The summary as a small plain-text table."""
    lines = [f"{title}: {summary['n']:,} trials, {summary['speakers']:,} speakers"]
    lines += [f"  {key:<10} {n:>9,}" for key, n in summary["keys"].items()]
    lines.append("  attack     trials")
    lines += [f"  {attack:<10} {n:>9,}" for attack, n in summary["attacks"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from data.corpora import corpus_names, read_protocol

    parser = argparse.ArgumentParser(
        prog="python -m data.protocols",
        description="Print the counts per key and attack of CM protocol files.",
    )
    parser.add_argument(
        "protocols", nargs="+", type=Path, help="protocol files of any registered corpus (data/corpora/)"
    )
    parser.add_argument(
        "--format", default="auto", choices=("auto", *corpus_names()), help="file format (default: auto)"
    )
    args = parser.parse_args(argv)
    for path in args.protocols:
        print(format_summary(protocol_summary(read_protocol(path, args.format)), title=str(path)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
