"""What a corpus is, and the registry of corpora by name.

A corpus knows its partitions, where each partition's protocol and audio lie under the corpus root, how
to read a protocol into `ProtocolRow`s that carry their audio paths, how to recognise its protocol files
(the evaluator's auto-detection), which fields its rows carry, where the organisers' ASV files lie and,
for corpora evaluated per condition, the attack x codec table layout. Each corpus is one module of this
package with ``@register_corpus`` on a `Corpus` subclass; every module of the package is imported on
first use (`discover`), so adding a corpus edits no other file (docs/ARCHITECTURE.md, "Add a corpus").
Modules named in the environment variable ``ANTISPOOF_CORPORA`` (comma-separated, importable) are
imported too: corpora kept outside the repository, seen by every stage of a recipe. No torch here.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from data.protocols import ProtocolRow
from utils.errors import UserError
from utils.scorefiles import first_line_span, read_text

if TYPE_CHECKING:
    from data.corpora.trial_metadata import TrialMetadata
    from utils.conditions import ConditionLayout

PLUGINS_VARIABLE = "ANTISPOOF_CORPORA"


@dataclass(frozen=True)
class AsvFiles:
    """The organisers' ASV scores of a partition and, where trial ids repeat across enrolment models (2021
    LA), the ASV keys they are joined to."""

    scores: Path
    metadata: Path | None = None


@dataclass(frozen=True)
class TrialColumns:
    """A protocol's trials as arrays of shape (n,): utt_ids, keys (``bonafide``/``spoof``), attacks (``-`` for
    bona fide) and codecs (None when the protocol has no codec column)."""

    utt_ids: np.ndarray
    keys: np.ndarray
    attacks: np.ndarray
    codecs: np.ndarray | None


class Corpus:
    """Base class of a corpus; one instance per registered subclass (`get_corpus`).

    Subclasses set the class attributes and implement `protocol_path`, `parse` and `detect`. `parse` gives
    each row its audio path when `read` passes the root: from a path column of the protocol, or for layouts
    that name each file ``<utt_id><audio_suffix>`` in one folder per partition, from `audio_dir`.
    """

    #: registry name: the ``--dataset`` value and the recipe key ``data.dataset``
    name: ClassVar[str] = ""
    #: row label in results tables (e.g. ``2019 LA eval``)
    title: ClassVar[str] = ""
    #: how messages name the corpus (e.g. ``2019 LA``)
    display: ClassVar[str] = ""
    #: partitions in their natural order; preprocessing does all of them by default
    partitions: ClassVar[tuple[str, ...]] = ("eval",)
    #: fields its rows carry besides utt_id, key and path: ``speaker``, ``attack`` (without it the spoof
    #: rows' attack is a placeholder), names of `ProtocolRow.extra` entries (``codec``, ``subset``, ...)
    fields: ClassVar[tuple[str, ...]] = ("speaker", "attack")
    #: protocol columns and the protocol's name, for messages
    layout: ClassVar[str] = ""
    protocol_name: ClassVar[str] = ""
    #: evaluation phases of its metadata (`data.corpora.trial_metadata.subset_mask`); empty: none
    subsets: ClassVar[tuple[str, ...]] = ()
    #: the per-condition tables it is evaluated with (`utils.conditions`), None: pooled and per attack
    conditions: ClassVar[ConditionLayout | None] = None
    #: evaluated with the ASVspoof 5 Track 1 tables (minDCF, actDCF, Cllr, minCllr, EER per attack x codec;
    #: `utils.track1`) from its rows' ``attack`` and ``codec``
    track1_tables: ClassVar[bool] = False
    #: where the organisers' ASV files lie under the root, for messages; None: the corpus has none
    asv_scores_hint: ClassVar[str | None] = None
    asv_metadata_hint: ClassVar[str | None] = None
    #: the corpus recipes read when they name none (exactly one registered corpus sets it)
    default: ClassVar[bool] = False
    #: suffix of the audio files of layouts that name them by utt_id (`audio_dir`)
    audio_suffix: ClassVar[str] = ".flac"
    #: whether reading it needs the corpus root (``--data-root``); False for corpora bound to their files
    needs_root: ClassVar[bool] = True

    def __repr__(self) -> str:
        return f"<corpus {self.name}>"

    @property
    def has_attacks(self) -> bool:
        """Whether its spoof rows name their attack (In-the-Wild's do not)."""
        return "attack" in self.fields

    def from_recipe(self, data: Mapping[str, Any]) -> Corpus:
        """This corpus as a recipe's ``data`` section configures it (corpora bound to files given there
        return a bound copy; `recipe_corpus`)."""
        return self

    def of_file(self, path: Path) -> Corpus:
        """This corpus as it reads protocol file ``path`` (corpora whose fields depend on the file return a
        copy bound to it; the evaluator)."""
        return self

    def cli_arguments(self, root: str | os.PathLike | None) -> list[str]:
        """The script flags that name this corpus's data (``--data-root ROOT``), for the recipe runner."""
        return ["--data-root", str(root)]

    def check_partition(self, partition: str) -> None:
        """`UserError` unless ``partition`` is one of this corpus's partitions."""
        if partition not in self.partitions:
            raise UserError(
                f"unknown partition '{partition}' for {self.name}; "
                f"expected one of {', '.join(self.partitions)}"
            )

    def protocol_path(self, root: str | os.PathLike, partition: str) -> Path:
        """Where a partition's protocol lives under the corpus root (as distributed)."""
        raise NotImplementedError

    def audio_dir(self, root: str | os.PathLike, partition: str) -> Path:
        """The folder of a partition's audio, for layouts that name each file ``<utt_id><audio_suffix>``."""
        raise NotImplementedError(f"{self.name}: audio paths come from the protocol rows")

    def audio_path(self, root: str | os.PathLike, partition: str, utt_id: str) -> Path:
        """Where one utterance's audio lives under the corpus root (layouts with an `audio_dir`)."""
        return self.audio_dir(root, partition) / f"{utt_id}{self.audio_suffix}"

    def audio_paths(self, root: str | os.PathLike, partition: str, ids: Sequence[str]) -> list[str]:
        """`audio_path` of many utt_ids, as strings (quick for a million rows)."""
        folder = str(self.audio_dir(root, partition))
        return [os.path.join(folder, f"{utt}{self.audio_suffix}") for utt in ids]

    def parse(
        self, path: Path, text: str, root: Path | None = None, partition: str | None = None
    ) -> list[ProtocolRow]:
        """The rows of protocol file ``path`` (content ``text``); with ``root`` and ``partition`` (from
        `read`) each row carries its audio path. Malformed lines and duplicate ids raise `UserError`."""
        raise NotImplementedError

    def trial_columns(self, path: Path, text: str | None = None) -> TrialColumns:
        """The trials of protocol file ``path`` (content ``text``; None: read here) as arrays, for evaluation
        (corpora may read them faster than `parse`); errors as in `parse`."""
        rows = self.parse(path, read_text(path, "protocol file") if text is None else text)
        codecs = [row.extra.get("codec") for row in rows]
        return TrialColumns(
            np.array([row.utt_id for row in rows]),
            np.array([row.key for row in rows]),
            np.array([row.attack for row in rows]),
            None if any(c is None for c in codecs) else np.array(codecs),
        )

    def detect(self, path: Path, first_line: str) -> bool:
        """Whether a protocol file whose first non-blank line is ``first_line`` is this corpus's. Claims
        must not overlap between corpora (`detect_corpus` refuses a file two corpora claim)."""
        return False

    def read(self, root: str | os.PathLike, partition: str, *, check_audio: bool = True) -> list[ProtocolRow]:
        """The rows of one partition with their audio paths; a missing root or protocol raises `UserError`
        naming the path. ``check_audio``: corpora that check their audio files up front (manifests) skip
        that check when False, so a reader that marks bad files (preprocess.py --skip-bad) gets every row."""
        root = Path(root)
        path = self.protocol_path(root, partition)
        if not root.is_dir():
            raise UserError(f"{root}: data root not found (expected the {self.name} dataset folder)")
        if not path.is_file():
            raise UserError(
                f"{path}: protocol not found (the {partition} protocol of {self.name} under {root})"
            )
        return self.parse(path, read_text(path, "protocol file"), root, partition)

    def store_name(self, partition: str) -> str:
        """The directory of a partition's feature store under its front end's folder: ``<name>-<partition>``
        (partition names alone would collide between corpora)."""
        return f"{self.name}-{partition}"

    def asv_paths(self, root: str | os.PathLike, partition: str) -> AsvFiles | None:
        """Where the organisers' ASV files of a partition lie under ``root``, present or not; None when the
        corpus has none for it."""
        return None

    def asv_files(self, root: str | os.PathLike, partition: str) -> AsvFiles | None:
        """`asv_paths` when its files are there, else None."""
        files = self.asv_paths(root, partition)
        if files is None or not files.scores.is_file():
            return None
        return files if files.metadata is None or files.metadata.is_file() else None

    def read_metadata(self, path: str | os.PathLike, asv: bool = False) -> TrialMetadata:
        """The per-trial condition columns of a protocol (CM keys, or with ``asv`` the ASV keys), for corpora
        with `conditions`."""
        raise NotImplementedError(f"{self.name} has no per-condition metadata")


# ------------------------------------------------------------------------------------------- registry

_CORPORA: dict[str, Corpus] = {}
_discovered = False
C = TypeVar("C", bound=type[Corpus])


def register_corpus(cls: C) -> C:
    """Class decorator: make a `Corpus` subclass available to `get_corpus` under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__}: a corpus needs a name")
    old = _CORPORA.get(cls.name)
    # Re-importing the same module (e.g. importlib.reload) may register the same class again.
    if old is not None and type(old).__qualname__ != cls.__qualname__:
        raise ValueError(f"corpus {cls.name!r} is registered twice")
    if cls.default and any(c.default for n, c in _CORPORA.items() if n != cls.name):
        raise ValueError(f"corpus {cls.name!r}: another corpus is the default already")
    _CORPORA[cls.name] = cls()
    return cls


def unregister_corpus(name: str) -> None:
    """Remove a registered corpus (tests that register their own)."""
    _CORPORA.pop(name, None)


def discover() -> None:
    """Import every module of this package once, and the modules named in ``ANTISPOOF_CORPORA``, so that
    each registers what it defines. Corpora registered from elsewhere (e.g. a test) are kept."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import data.corpora

    for info in pkgutil.iter_modules(data.corpora.__path__, "data.corpora."):
        if not info.name.rpartition(".")[2].startswith("_"):
            importlib.import_module(info.name)
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"{PLUGINS_VARIABLE}: cannot import corpus module '{module}' ({exc})") from exc


def all_corpora() -> list[Corpus]:
    """Every registered corpus, sorted by name."""
    discover()
    return [_CORPORA[name] for name in sorted(_CORPORA)]


def corpus_names() -> tuple[str, ...]:
    """The registered corpus names, sorted (CLI ``choices``)."""
    return tuple(c.name for c in all_corpora())


def get_corpus(name: str | Corpus) -> Corpus:
    """The corpus registered as ``name`` (a `Corpus` is returned as is); an unknown name raises a one-line
    `UserError` listing the known ones."""
    if isinstance(name, Corpus):
        return name
    discover()
    corpus = _CORPORA.get(str(name).strip().lower())
    if corpus is None:
        raise UserError(f"unknown corpus '{name}'; expected one of {', '.join(corpus_names())}")
    return corpus


def default_corpus() -> Corpus:
    """The corpus a recipe without ``data.dataset`` reads."""
    found = [c for c in all_corpora() if c.default]
    if len(found) != 1:
        raise RuntimeError(f"expected one default corpus, found {len(found)}")
    return found[0]


def recipe_corpus(cfg: Mapping[str, Any]) -> Corpus:
    """The corpus a recipe reads: its ``data.dataset`` (the key names a corpus), else the default corpus, as
    the recipe's ``data`` section configures it (`Corpus.from_recipe`: the manifest corpus bound to
    ``data.manifests``); an unknown name raises `UserError` listing the known ones."""
    data = cfg.get("data") or {}
    name = data.get("dataset")
    return (default_corpus() if name is None else get_corpus(str(name))).from_recipe(data)


def audio_state(path: str | None) -> str:
    """``ok``, ``missing`` (absent or not a file) or ``empty`` (0 bytes): an audio file before reading it."""
    if path is None:
        return "missing"
    try:
        info = os.stat(path)
    except OSError:
        return "missing"
    if not stat.S_ISREG(info.st_mode):
        return "missing"
    return "ok" if info.st_size > 0 else "empty"


# --------------------------------------------------------------------------------- protocol files


def first_line(text: str) -> str | None:
    """The first non-blank line of ``text`` (without reading the rest), or None."""
    span = first_line_span(text)
    return None if span is None else text[span[0] : span[1]].rstrip("\r\n")


def detect_corpus(path: Path, text: str) -> Corpus:
    """The one corpus that claims protocol file ``path`` (content ``text``); none, or several, raise
    `UserError` naming the file."""
    line = first_line(text)
    if line is None:
        raise UserError(f"{path}: the file is empty")
    found = [c for c in all_corpora() if c.detect(path, line)]
    if len(found) == 1:
        return found[0]
    if found:
        raise UserError(
            f"{path}: the protocol fits several corpora ({', '.join(c.name for c in found)}); "
            "give its format explicitly"
        )
    expected = dict.fromkeys(f"'{c.layout}' ({c.protocol_name})" for c in all_corpora())
    n_columns = len(line.split(",")) if "," in line else len(line.split())
    raise UserError(
        f"{path}: cannot tell the protocol format from {n_columns} columns; expected " + ", ".join(expected)
    )


def read_protocol(path: str | os.PathLike, fmt: str = "auto") -> list[ProtocolRow]:
    """Read a CM protocol file of corpus ``fmt`` (``auto``: the corpus that claims it); rows carry no
    audio paths (`Corpus.read` gives them). Malformed lines and duplicate ids raise `UserError`."""
    path = Path(path)
    text = read_text(path, "protocol file")
    corpus = detect_corpus(path, text) if fmt == "auto" else get_corpus(fmt)
    return corpus.parse(path, text)
