"""Scoring recordings of any length, rate and channel count by windows (generate_score.py --audio)."""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from data.audio import SAMPLE_RATE, load_audio
from engine.score_batches import forward_for_scores
from utils.errors import UserError


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of windows of ``window`` samples every ``hop`` samples covering a clip of ``n_samples``.

    A clip no longer than one window gets one window at 0 (the front end tiles it). Otherwise windows
    start every ``hop`` samples and the last one is moved back to end at the clip's end, so every
    window holds real audio only and the tail is covered.
    """
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


#: Recordings shorter than this are reported and skipped: tiled up to a whole window, a few hundred
#: samples say nothing about the speech (the shortest ASVspoof 2019 LA utterances last ~0.5 s).
MIN_DURATION_S = 0.1


@dataclass
class FileScore:
    """Score of one recording: mean of its windows' scores (higher = bona fide).

    A recording that could not be scored (unreadable, empty, too short) has ``error`` set (one line,
    naming the file), ``score`` NaN and no windows. ``windows``: (start_s, end_s, score) of each window
    scored, in seconds of the 16 kHz recording (a window of a shorter recording ends where it ends)."""

    path: str
    score: float
    n_windows: int
    duration_s: float
    decision: str = ""
    error: str = ""
    windows: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error


def decide(score: float, threshold: float | None) -> str:
    """``bonafide`` if score ≥ threshold, else ``spoof``; ``""`` without a finite threshold."""
    if threshold is None or not math.isfinite(threshold):
        return ""
    return "bonafide" if score >= threshold else "spoof"


def load_for_scoring(path: Path, min_duration_s: float = MIN_DURATION_S) -> np.ndarray:
    """`data.audio.load_audio`, plus `UserError` for a recording shorter than ``min_duration_s``."""
    wave = load_audio(path)
    if wave.shape[0] < min_duration_s * SAMPLE_RATE:
        raise UserError(
            f"{path}: too short to score ({wave.shape[0] / SAMPLE_RATE:.3f} s, at least {min_duration_s:g} s)"
        )
    return wave


@dataclass
class _Recording:
    """A loaded recording whose windows are being scored."""

    path: Path
    n_samples: int
    starts: list[int]
    scores: list[float] = field(default_factory=list)


#: Scores of a batch of windows (float32 16 kHz, each at most one window long) -> (n,) float64.
WindowScorer = Callable[[list[np.ndarray]], np.ndarray]


def torch_window_scorer(
    model: nn.Module, loss_fn: nn.Module, frontend: Any, device: torch.device, *, amp: str = "none",
    fixed_batch: int | None = None, channels_last: bool = False,
) -> WindowScorer:
    """Windows -> scores with a PyTorch model: ``frontend.extract``, then the model and the loss's score
    (`engine.score_batches.forward_for_scores`: ``amp``, ``fixed_batch``, ``channels_last``)."""
    model.eval()
    loss_fn.eval()

    def score(windows: list[np.ndarray]) -> np.ndarray:
        features = torch.from_numpy(frontend.extract(windows)).to(device)
        with torch.inference_mode():
            embedding, logits = forward_for_scores(model, features, device, amp, fixed_batch, channels_last)
            return loss_fn.score(embedding, logits).double().cpu().numpy()

    return score


class _WindowBatches:
    """Windows of many recordings batched together through a `WindowScorer`."""

    def __init__(self, score_windows: WindowScorer, batch_size: int) -> None:
        self.score_windows, self.batch_size = score_windows, batch_size
        self.pending: list[tuple[_Recording, np.ndarray]] = []

    def add(self, recording: _Recording, wave: np.ndarray) -> None:
        self.pending.append((recording, wave))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Score the pending windows; each score goes to its recording, in window order."""
        if not self.pending:
            return
        scores = self.score_windows([w for _, w in self.pending])
        for (recording, _), score in zip(self.pending, scores, strict=True):
            recording.scores.append(float(score))
        self.pending = []


def _finished(recording: _Recording, window: int, threshold: float | None) -> FileScore:
    total = 0.0
    for score in recording.scores:  # float64 sum in window order
        total += score
    score = total / len(recording.scores)
    windows = [
        (start / SAMPLE_RATE, min(start + window, recording.n_samples) / SAMPLE_RATE, s)
        for start, s in zip(recording.starts, recording.scores, strict=True)
    ]
    return FileScore(str(recording.path), score, len(windows), recording.n_samples / SAMPLE_RATE,
                     decide(score, threshold), windows=windows)


def iter_audio_scores(
    paths: Sequence[str | os.PathLike],
    score_windows: WindowScorer,
    window: int,
    *,
    crop: str = "windows",
    hop_fraction: float = 0.5,
    batch_size: int = 16,
    threshold: float | None = None,
    min_duration_s: float = MIN_DURATION_S,
    progress: bool = True,
) -> Iterator[FileScore]:
    """Score recordings of any length, sample rate and channel count; yield one `FileScore` per path, in
    the order of ``paths``, as soon as it is complete (so a caller can write results as they come).

    Each file is read as 16 kHz mono (`data.audio.load_audio`), cut into windows of ``window`` samples
    (the front end's input length: 64,600 for XLS-R-LCNN, 80,000 for F0) every ``hop_fraction`` · window
    samples, scored by ``score_windows`` (e.g. `torch_window_scorer`) ``batch_size`` windows at a time,
    and the window scores are averaged. ``crop="first"`` scores the
    first window only (the training crop). Windows of consecutive files are batched together. A file
    that cannot be read or is shorter than ``min_duration_s`` is not scored: its result carries the
    error. With ``threshold`` each result carries ``bonafide`` (score ≥ threshold) or ``spoof``.
    """
    if crop not in ("windows", "first"):
        raise UserError(f"crop {crop!r}: expected 'windows' or 'first'")
    window = int(window)
    hop = max(1, int(round(window * hop_fraction)))
    batches = _WindowBatches(score_windows, batch_size)
    queue: deque[_Recording | FileScore] = deque()  # input order; a recording turns into its result when done
    bar = tqdm(total=len(paths), desc="score", unit="file", disable=not progress, dynamic_ncols=True)
    for path in (Path(p) for p in paths):
        try:
            wave = load_for_scoring(path, min_duration_s)
        except UserError as exc:
            queue.append(FileScore(str(path), math.nan, 0, 0.0, error=str(exc)))
        else:
            starts = [0] if crop == "first" else window_starts(wave.shape[0], window, hop)
            recording = _Recording(path, wave.shape[0], starts)
            queue.append(recording)
            for start in starts:
                batches.add(recording, wave[start : start + window])
        bar.update(1)
        yield from _release(queue, window, threshold)
    batches.flush()
    yield from _release(queue, window, threshold)
    bar.close()


def _release(
    queue: deque[_Recording | FileScore], window: int, threshold: float | None
) -> Iterator[FileScore]:
    """Pop and yield the results at the head of ``queue`` that are complete."""
    while queue:
        head = queue[0]
        if isinstance(head, _Recording):
            if len(head.scores) < len(head.starts):
                return
            head = _finished(head, window, threshold)
        queue.popleft()
        yield head

