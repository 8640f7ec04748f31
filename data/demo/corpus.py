"""Planning and writing the demo corpus in the ASVspoof 2019 LA layout (docs/data.md). THE AUDIO IS SYNTHETIC.

The layout, file names and protocol rows are those of the default corpus of `data.corpora` (2019 LA, which
the demo recipes read: `Corpus.protocol_path`, `audio_path`, `asv_paths`; `data.protocols.ProtocolRow`),
plus ``DIR/demo_manifest.json`` (seed, counts, attacks). Speakers are
disjoint across partitions, ~30 % of each partition is bona fide. Utterances are rendered in a process
pool, each from its own seed, so the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from data.audio import SAMPLE_RATE
from data.corpora import default_corpus
from data.demo.attacks import ATTACKS, PARTITION_ATTACKS, synthesize
from data.demo.synthesis import BONAFIDE_SNR_DB, SPOOF_SNR_DB, Speaker, channel, make_speaker
from data.protocols import ProtocolRow, write_protocol
from utils.errors import UserError
from utils.io import atomic_write_text
from utils.scorefiles import BONAFIDE, SPOOF

#: Bump when the generated audio changes, so that an old corpus is regenerated rather than reused.
GENERATOR_VERSION = 3
MANIFEST_NAME = "demo_manifest.json"
#: the corpus whose layout the demo writes: the one recipes read when they name none
LAYOUT = default_corpus()
PARTITIONS = LAYOUT.partitions
DEFAULT_COUNTS = {"train": 200, "dev": 200, "eval": 400}
DEFAULT_BONAFIDE_FRACTION = 0.3
MIN_SECONDS, MAX_SECONDS = 1.0, 5.0

# Synthetic speakers per partition and the first speaker number (as in 2019 LA: eval speakers
# LA_0001.., dev LA_0069.., train LA_0079..; none shared between partitions).
_SPEAKERS = {"train": (8, 79), "dev": (6, 69), "eval": (10, 1)}
_UTT_PREFIX = {"train": "LA_T_", "dev": "LA_D_", "eval": "LA_E_"}


@dataclass(frozen=True)
class _Task:
    path: str
    speaker: Speaker
    attack: str
    seed: tuple[int, ...]  # entropy and spawn key of this utterance's SeedSequence


def _make_utterance(task: _Task) -> int:
    """Render and write one FLAC; returns its length in samples."""
    rng = np.random.default_rng(np.random.SeedSequence(task.seed[0], spawn_key=task.seed[1:]))
    seconds = float(np.clip(np.exp(rng.normal(np.log(2.6), 0.35)), MIN_SECONDS, MAX_SECONDS))
    n = int(seconds * SAMPLE_RATE)
    snr_db = BONAFIDE_SNR_DB if task.attack == "-" else SPOOF_SNR_DB
    wave = channel(synthesize(task.speaker, task.attack, n, rng), rng, snr_db)
    sf.write(task.path, wave.astype(np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return n


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo_corpus` did: the corpus root, whether it was (re)generated, counts, seconds."""

    root: Path
    generated: bool
    counts: dict[str, dict[str, int]]  # partition -> {"bonafide": n, "A01": n, ...}
    seconds: float


def _seed(seed: int, *key: int) -> tuple[int, ...]:
    return (seed, *key)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def plan_partition(partition: str, n_total: int, seed: int, bonafide_fraction: float) -> list[ProtocolRow]:
    """The protocol rows of one partition (ids, speakers, attacks), shuffled; deterministic for ``seed``.

    ``round(bonafide_fraction * n_total)`` rows (at least one) are bona fide, the rest spread evenly over
    the partition's attacks.
    """
    p = PARTITIONS.index(partition)
    rng = _rng(seed, p, 0)
    n_speakers, first = _SPEAKERS[partition]
    speakers = [f"LA_{first + i:04d}" for i in range(n_speakers)]
    n_bona = min(max(1, round(bonafide_fraction * n_total)), n_total - 1)
    attacks = PARTITION_ATTACKS[partition]
    labels = ["-"] * n_bona + [attacks[i % len(attacks)] for i in range(n_total - n_bona)]
    ids: set[int] = set()
    while len(ids) < n_total:
        ids.update(int(i) for i in rng.integers(1_000_000, 10_000_000, n_total - len(ids)))
    utt_ids = [f"{_UTT_PREFIX[partition]}{i}" for i in rng.permutation(sorted(ids))]
    spk_of = [speakers[i % n_speakers] for i in range(n_total)]
    order = rng.permutation(n_total)
    rows = [
        ProtocolRow(spk_of[i], utt_ids[i], labels[i], BONAFIDE if labels[i] == "-" else SPOOF) for i in order
    ]
    return rows


def _speakers(partition: str, seed: int) -> dict[str, Speaker]:
    p = PARTITIONS.index(partition)
    n_speakers, first = _SPEAKERS[partition]
    out = {}
    for i in range(n_speakers):
        sid = f"LA_{first + i:04d}"
        out[sid] = make_speaker(sid, _rng(seed, p, 1, i))
    return out


def asv_score_lines(rows: Sequence[ProtocolRow], rng: np.random.Generator) -> list[str]:
    """ASV score rows ``cm_key asv_key score`` for a partition (docs/data.md).

    One target trial per bona fide utterance, four nontarget trials per bona fide utterance and one spoof
    trial per spoof utterance. Distributions follow the real 2019 LA files: target ~ N(25, 14),
    nontarget ~ N(-31, 14) (ASV EER ~2.5 %), spoof ~ N(attack mean, 13) in between.
    """
    n_bona = sum(r.key == BONAFIDE for r in rows)
    lines = [f"bonafide target {s:.6f}" for s in rng.normal(25.0, 14.0, n_bona)]
    lines += [f"bonafide nontarget {s:.6f}" for s in rng.normal(-31.0, 14.0, 4 * n_bona)]
    lines += [
        f"{r.attack} spoof {rng.normal(ATTACKS[r.attack].asv_mean, 13.0):.6f}" for r in rows if r.key == SPOOF
    ]
    return lines


def _manifest(seed: int, counts: dict[str, int], bonafide_fraction: float) -> dict:
    return {
        "generator": "data.demo",
        "version": GENERATOR_VERSION,
        "synthetic": True,
        "seed": seed,
        "counts": counts,
        "bonafide_fraction": bonafide_fraction,
        "sample_rate": SAMPLE_RATE,
        "attacks": {p: list(PARTITION_ATTACKS[p]) for p in PARTITIONS},
        "attack_descriptions": {a.id: a.description for a in ATTACKS.values()},
    }


def _same_corpus(root: Path, manifest: dict) -> bool:
    """True if ``root`` holds a finished corpus generated with the same parameters."""
    path = root / MANIFEST_NAME
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    keys = ("generator", "version", "seed", "counts", "bonafide_fraction")
    if not isinstance(old, dict) or any(old.get(k) != manifest[k] for k in keys):
        return False
    return all(LAYOUT.protocol_path(root, part).is_file() for part in PARTITIONS)


def _tally(rows: Sequence[ProtocolRow]) -> dict[str, int]:
    counts = Counter(BONAFIDE if r.key == BONAFIDE else r.attack for r in rows)
    return {k: counts[k] for k in sorted(counts, key=lambda k: (k != BONAFIDE, k))}


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a soft dependency of this numpy-only module
        return iterable
    return tqdm(iterable, total=total, desc="demo corpus", unit="utt", file=sys.stderr)


def generate_demo_corpus(
    out: str | os.PathLike,
    seed: int = 0,
    n_train: int = DEFAULT_COUNTS["train"],
    n_dev: int = DEFAULT_COUNTS["dev"],
    n_eval: int = DEFAULT_COUNTS["eval"],
    bonafide_fraction: float = DEFAULT_BONAFIDE_FRACTION,
    workers: int | None = None,
    progress: bool = False,
) -> DemoSummary:
    """Write the demo corpus to ``out`` (2019 LA layout) unless the same corpus is already there.

    Generation happens in a hidden sibling directory that is renamed onto ``out`` at the end, so ``out``
    is either absent, the old corpus or the complete new one. An existing ``out`` that is not a demo
    corpus (no manifest) and is not empty raises `UserError` rather than being replaced.
    ``workers`` defaults to min(2, CPUs); the audio does not depend on it.
    """
    counts = {"train": n_train, "dev": n_dev, "eval": n_eval}
    for part, n in counts.items():
        if n < 2:
            raise UserError(f"{part} partition: at least 2 utterances needed (one "
                f"bona fide and one spoof), got {n}")
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    if not 0.0 < bonafide_fraction < 1.0:
        raise UserError(f"bona fide fraction must be between 0 and 1, got {bonafide_fraction}")
    root = Path(out)
    manifest = _manifest(seed, counts, bonafide_fraction)
    start = time.perf_counter()
    if _same_corpus(root, manifest):
        plans = {p: plan_partition(p, counts[p], seed, bonafide_fraction) for p in PARTITIONS}
        return DemoSummary(root, False, {p: _tally(r) for p, r in plans.items()}, time.perf_counter() - start)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: exists and is not a directory")
    if root.is_dir() and not (root / MANIFEST_NAME).is_file() and any(root.iterdir()):
        raise UserError(f"{root}: directory is not empty and holds no demo "
            f"corpus; choose another output folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        tally = _write_corpus(tmp, manifest, workers, progress)
        _swap_into_place(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoSummary(root, True, tally, time.perf_counter() - start)


def _write_corpus(
    root: Path, manifest: dict, workers: int | None, progress: bool
) -> dict[str, dict[str, int]]:
    seed, counts, fraction = manifest["seed"], manifest["counts"], manifest["bonafide_fraction"]
    tasks: list[_Task] = []
    tally = {}
    for p, part in enumerate(PARTITIONS):
        rows = plan_partition(part, counts[part], seed, fraction)
        tally[part] = _tally(rows)
        speakers = _speakers(part, seed)
        write_protocol(LAYOUT.protocol_path(root, part), rows)
        if part != "train":  # as distributed, ASV scores exist for dev and eval only
            lines = asv_score_lines(rows, _rng(seed, p, 2))
            atomic_write_text(LAYOUT.asv_paths(root, part).scores, "".join(f"{line}\n" for line in lines))
        paths = [LAYOUT.audio_path(root, part, r.utt_id) for r in rows]
        paths[0].parent.mkdir(parents=True)
        tasks += [
            _Task(str(path), speakers[r.speaker], r.attack, _seed(seed, p, 3, i))
            for i, (path, r) in enumerate(zip(paths, rows, strict=True))
        ]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    if workers <= 1:
        for _ in _progress(map(_make_utterance, tasks), len(tasks), progress):
            pass
    else:
        with ProcessPoolExecutor(workers) as pool:
            for _ in _progress(pool.map(_make_utterance, tasks, chunksize=8), len(tasks), progress):
                pass
    # The manifest goes last: its presence marks a finished corpus.
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return tally


def _swap_into_place(new: Path, root: Path) -> None:
    """Rename the finished corpus ``new`` onto ``root``, replacing an older demo corpus or an empty dir."""
    if not root.exists():
        os.replace(new, root)
        return
    old = root.parent / f"{new.name}.old"
    os.replace(root, old)
    os.replace(new, root)
    shutil.rmtree(old, ignore_errors=True)


def format_summary(summary: DemoSummary) -> str:
    """Human-readable summary: where, counts per key/attack and partition, seconds, and the synthetic note."""
    head = "generated" if summary.generated else "already present (same seed and counts), not regenerated:"
    lines = [f"demo corpus {head} {summary.root}"]
    for part, counts in summary.counts.items():
        total = sum(counts.values())
        detail = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines.append(f"  {part:5s} {total:5d} utterances: {detail}")
    if summary.generated:
        lines.append(f"  took {summary.seconds:.1f} s")
    lines.append(
        "note: the audio is SYNTHETIC (a source-filter imitation of speech and simulated attacks), "
        "for trying the toolkit only; results on it say nothing about ASVspoof 2019 LA."
    )
    return "\n".join(lines)
