"""Scoring: partitions (feature store or raw audio) and arbitrary recordings by sliding windows.

Scores follow the toolkit convention: higher = more bona fide, the loss's ``score(embedding, logits)``
(logit difference bona fide − spoof, or ‖x‖(cos θ_bonafide − cos θ_spoof) for A-Softmax).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from utils import distributed as du
from utils.errors import UserError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Front-end settings that change only how features are computed, not what they are.
_COMPUTE_ONLY_SETTINGS = {"batch_size", "dtype", "device"}


def autocast_context(device: torch.device, amp: str = "none") -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in (bf16, fp16); ``none`` disables any enclosing autocast."""
    amp = (amp or "none").lower()
    if amp not in ("none", *AMP_DTYPES):
        raise UserError(f"config: train.amp={amp!r} is not one of none, bf16, fp16")
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def resolve_scoring_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, none (exact float32) elsewhere; other values are checked and returned
    (fp16 autocast needs CUDA, as for training)."""
    amp = (amp or "auto").lower()
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    if amp not in ("none", *AMP_DTYPES):
        raise UserError(f"--amp {amp!r}: expected auto, none, bf16 or fp16")
    if amp == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs CUDA; use --amp bf16 on CPU")
    return amp


def default_batch_size(device: torch.device) -> int:
    """Utterances per scoring batch: 64 on CUDA; 1 on CPU, where both models ran fastest one utterance
    at a time in bench/bench_train.py (larger batches leave the caches)."""
    return 64 if device.type == "cuda" else 1


def forward_for_scores(
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    amp: str = "none",
    fixed_batch: int | None = None,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model(x)`` under ``amp`` -> float32 (embedding, logits) for the B rows of ``x``.

    Under bf16/fp16 the logits would land on a grid of 8 (or 11) significant bits, and many utterances
    would share a score; the model's small ``classify`` head (embedding -> logits) is then run again in
    float32 on the embedding, so scores stay distinct. ``fixed_batch``: a short batch is padded to this
    size (`utils.compile.pad_batch`) so that a model compiled for one shape is not compiled again.
    ``channels_last``: 4-D inputs are passed in that memory format.
    """
    from utils.compile import pad_batch

    n = x.shape[0]
    if fixed_batch is not None:
        x = pad_batch(x, fixed_batch)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_context(device, amp):
        embedding, logits = model(x)
    embedding, logits = embedding[:n].float(), logits[:n]
    classify = getattr(getattr(model, "module", model), "classify", None)
    if amp != "none" and classify is not None:
        with autocast_context(device, "none"):
            logits = classify(embedding)
    return embedding, logits.float()


def compile_for_scoring(model: nn.Module, example: torch.Tensor, amp: str = "none") -> tuple[nn.Module, str]:
    """`utils.compile.FrozenCompiled` model, compiled by one call on ``example`` (B, C, H, W) under ``amp``
    (the autocast state is part of the compiled graph: score with the same ``amp`` and batch shape).

    Returns the model to score with and "" or, if compiling failed, the eager model and the reason.
    """
    from utils.compile import FrozenCompiled

    compiled = FrozenCompiled(model)
    with torch.inference_mode(), autocast_context(example.device, amp):
        compiled(example)
    return (model, compiled.failed) if compiled.failed else (compiled, "")


# ----------------------------------------------------------------------------- partitions


@dataclass
class Scores:
    """Scores of a partition: ``utt_ids``, ``attacks`` (lists), ``labels`` (n,) int64 (0 = bona fide),
    ``scores`` (n,) float64, and the mean loss when it was computed."""

    utt_ids: list[str]
    attacks: list[str]
    labels: np.ndarray
    scores: np.ndarray
    loss: float | None = None
    loss_weight: float = 0.0  # number of utterances the loss was averaged over

    def eer(self, what: str = "partition") -> tuple[float, float]:
        """(EER as a fraction, threshold) of bona fide vs spoof; `UserError` if a class is missing."""
        from utils.metrics import compute_eer

        bona, spoof = self.scores[self.labels == 0], self.scores[self.labels == 1]
        if bona.size == 0 or spoof.size == 0:
            raise UserError(
                f"{what}: needs both bona fide and spoof utterances to compute an EER "
                f"({bona.size} bona fide, {spoof.size} spoof)"
            )
        if not np.all(np.isfinite(self.scores)):
            raise UserError(f"{what}: the model produced NaN or inf scores")
        return compute_eer(bona, spoof)


def score_loader(
    model: nn.Module,
    loss_fn: nn.Module,
    loader: DataLoader | Sequence[Any],
    device: torch.device,
    *,
    amp: str = "none",
    channels_last: bool = False,
    fixed_batch: int | None = None,
    with_loss: bool = False,
    progress: bool = True,
    desc: str = "score",
) -> Scores:
    """Score every batch ``(features (B, C, H, W), labels (B,), utt_ids, attacks)`` of ``loader``.

    Model and loss are put in eval mode (no dropout, no A-Softmax λ update). ``with_loss`` also
    averages the loss (e.g. the dev loss for checkpoint selection). ``amp``, ``fixed_batch``: see
    `forward_for_scores`.
    """
    model.eval()
    loss_fn.eval()
    utt_ids: list[str] = []
    attacks: list[str] = []
    labels: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    loss_sum, loss_n = 0.0, 0
    with torch.inference_mode():
        for x, y, utt, attack in tqdm(
            loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True
        ):
            x = x.to(device, non_blocking=True).float()  # float16 store batches are cast here
            y = torch.as_tensor(y).to(device)
            embedding, logits = forward_for_scores(model, x, device, amp, fixed_batch, channels_last)
            scores.append(loss_fn.score(embedding, logits).double().cpu().numpy())
            if with_loss:
                loss_sum += float(loss_fn(embedding, logits, y)) * y.shape[0]
                loss_n += int(y.shape[0])
            labels.append(y.cpu().numpy().astype(np.int64))
            utt_ids.extend(utt)
            attacks.extend(attack)
    return Scores(
        utt_ids=utt_ids,
        attacks=attacks,
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        scores=np.concatenate(scores) if scores else np.zeros(0),
        loss=loss_sum / loss_n if with_loss and loss_n else None,
        loss_weight=float(loss_n),
    )


def gather_scores(local: Scores) -> Scores:
    """Merge every rank's `Scores` (DistributedSampler shards) in utterance order, dropping the padding
    duplicates DistributedSampler adds; identity when single-process."""
    parts = du.all_gather_objects(local)
    if len(parts) == 1:
        return local
    # DistributedSampler without shuffle gives rank r the items r, r + W, r + 2W, ...: interleave back.
    seen: set[str] = set()
    order: list[tuple[int, int]] = []
    longest = max(len(p.utt_ids) for p in parts)
    for i in range(longest):
        for r, part in enumerate(parts):
            if i < len(part.utt_ids) and part.utt_ids[i] not in seen:
                seen.add(part.utt_ids[i])
                order.append((r, i))
    loss_n = sum(p.loss_weight for p in parts)
    loss = None
    if all(p.loss is not None for p in parts) and loss_n:
        loss = sum(float(p.loss) * p.loss_weight for p in parts) / loss_n
    return Scores(
        utt_ids=[parts[r].utt_ids[i] for r, i in order],
        attacks=[parts[r].attacks[i] for r, i in order],
        labels=np.array([parts[r].labels[i] for r, i in order], dtype=np.int64),
        scores=np.array([parts[r].scores[i] for r, i in order], dtype=np.float64),
        loss=loss,
        loss_weight=loss_n,
    )


def write_partition_scores(scores: Scores, path: str | os.PathLike) -> None:
    """Write ``utt_id attack key score`` lines (atomically) with `utils.scorefiles.write_scores`."""
    from utils.scorefiles import write_scores

    keys = ["bonafide" if int(label) == 0 else "spoof" for label in scores.labels]
    write_scores(path, scores.utt_ids, scores.scores, attacks=scores.attacks, keys=keys)


# ----------------------------------------------------------------------------- datasets and checks


def frontend_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Front-end settings that differ between a checkpoint (``expected``) and a store (``found``).

    Only settings both sides name are compared, and compute-only ones (dtype, batch size) are ignored.
    """
    diffs = []
    for key in sorted(set(expected) & set(found)):
        if key in _COMPUTE_ONLY_SETTINGS or expected[key] is None:
            continue
        if expected[key] != found[key]:
            diffs.append(f"{key}: checkpoint {expected[key]!r} vs features {found[key]!r}")
    return diffs


def check_feature_shape(expected: Sequence[int], found: Sequence[int], source: str) -> None:
    """`UserError` naming ``source`` when feature shape and the model's ``input_shape`` differ."""
    if tuple(int(v) for v in expected) != tuple(int(v) for v in found):
        raise UserError(
            f"{source}: features have shape {list(found)} but the model expects input_shape "
            f"{list(expected)}; use features made with the checkpoint's front end"
        )


def recipe_dataset(cfg: dict[str, Any]) -> str:
    """The corpus layout a recipe reads (``data.dataset``; default la2019)."""
    return str((cfg.get("data") or {}).get("dataset", "la2019"))


def store_dir_for(
    features: str | os.PathLike, frontend_cfg: dict[str, Any], partition: str, dataset: str = "la2019"
) -> Path:
    """The preprocess.py store of ``partition`` under ``features``, or ``features`` itself when it
    already is one store."""
    from data import store

    root = Path(features)
    if any(root.glob("shard-*.meta.json")):
        return root
    return store.store_dir_for(root, frontend_cfg, partition, dataset)


def open_store_partition(features: str | os.PathLike, cfg: dict[str, Any], partition: str) -> Dataset:
    """The store of ``partition`` for the recipe's front end, checked against the recipe.

    Missing stores, other front-end settings or a feature shape that is not the model's input shape
    raise a one-line `UserError` naming the store.
    """
    from data.dataset import StoreDataset

    store = store_dir_for(
        features, cfg["frontend"], partition, recipe_dataset(cfg)
    )
    if not store.is_dir():
        raise UserError(
            f"{store}: feature store not found; run preprocess.py for the '{partition}' partition "
            f"with this front end first"
        )
    dataset = StoreDataset(store)
    diffs = frontend_mismatch(cfg["frontend"], dataset.store.settings)
    if diffs:
        raise UserError(f"{store}: features were made with other front-end settings ({'; '.join(diffs)})")
    check_feature_shape(cfg["model"]["input_shape"], dataset.feature_shape, str(store))
    return dataset


def open_audio_partition(
    data_root: str | os.PathLike, cfg: dict[str, Any], partition: str, frontend: Any | None = None
) -> Dataset:
    """Raw audio of ``partition`` under ``data_root`` with features computed on the fly by the recipe's
    front end (meant for F0; an SSL front end runs the SSL model in every epoch)."""
    from data.dataset import AudioDataset
    from data.features import build_frontend
    from data.protocols import audio_path, load_partition

    dataset_name = recipe_dataset(cfg)
    rows = load_partition(data_root, partition, dataset_name)
    frontend = frontend or build_frontend(cfg["frontend"])
    check_feature_shape(cfg["model"]["input_shape"], frontend.feature_shape, f"front end {frontend.name}")

    def path_fn(utt_id: str) -> Path:
        return audio_path(data_root, partition, utt_id, dataset_name)

    return AudioDataset(rows, path_fn, frontend)


def open_partition(
    cfg: dict[str, Any],
    partition: str,
    *,
    features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    on_the_fly: bool = False,
) -> Dataset:
    """A partition's dataset: from the feature store under ``features``, or (``on_the_fly``) raw audio
    under ``data_root``."""
    if on_the_fly:
        if data_root is None:
            raise UserError("--on-the-fly needs --data-root (the folder holding the protocols and audio)")
        return open_audio_partition(data_root, cfg, partition)
    if features is None:
        raise UserError("give --features STORE_ROOT (from preprocess.py), or --on-the-fly with --data-root")
    return open_store_partition(features, cfg, partition)


# ----------------------------------------------------------------------------- arbitrary recordings


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


@dataclass
class FileScore:
    """Score of one recording: mean of its windows' scores (higher = bona fide)."""

    path: str
    score: float
    n_windows: int
    duration_s: float
    decision: str = ""


def _iter_windows(
    paths: Sequence[Path], window: int, hop: int, crop: str, load: Callable[[Path], np.ndarray]
) -> Iterator[tuple[int, np.ndarray, float]]:
    for index, path in enumerate(paths):
        wave = load(path)
        duration = wave.shape[0] / 16000.0
        starts = [0] if crop == "first" else window_starts(wave.shape[0], window, hop)
        for start in starts:
            yield index, wave[start : start + window], duration


def score_audio_files(
    paths: Sequence[str | os.PathLike],
    model: nn.Module,
    loss_fn: nn.Module,
    frontend: Any,
    device: torch.device,
    *,
    crop: str = "windows",
    hop_fraction: float = 0.5,
    batch_size: int = 16,
    amp: str = "none",
    channels_last: bool = False,
    fixed_batch: int | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> list[FileScore]:
    """Score recordings of any length, sample rate and channel count.

    Each file is read as 16 kHz mono (`data.audio.load_audio`), cut into windows of the front end's
    input length (``frontend.n_samples``: 64,600 for XLS-R-LCNN, 80,000 for F0) every
    ``hop_fraction`` · window samples, and the window scores are averaged. ``crop="first"`` scores the
    first window only (the training crop). Windows of all files are batched together. With
    ``threshold`` each result carries ``bonafide`` (score ≥ threshold) or ``spoof``. ``amp``,
    ``channels_last``, ``fixed_batch``: as in `score_loader`.
    """
    from data.audio import load_audio

    if crop not in ("windows", "first"):
        raise UserError(f"--crop {crop!r}: expected 'windows' or 'first'")
    window = int(frontend.n_samples)
    hop = max(1, int(round(window * hop_fraction)))
    files = [Path(p) for p in paths]
    sums = np.zeros(len(files))
    counts = np.zeros(len(files), dtype=np.int64)
    durations = np.zeros(len(files))
    model.eval()
    loss_fn.eval()

    def flush(batch: list[tuple[int, np.ndarray]]) -> None:
        features = torch.from_numpy(frontend.extract([w for _, w in batch])).to(device)
        with torch.inference_mode():
            embedding, logits = forward_for_scores(model, features, device, amp, fixed_batch, channels_last)
            window_scores = loss_fn.score(embedding, logits).double().cpu().numpy()
        for (index, _), score in zip(batch, window_scores, strict=True):
            sums[index] += score
            counts[index] += 1

    bar = tqdm(total=len(files), desc="score", unit="file", disable=not progress, dynamic_ncols=True)
    batch: list[tuple[int, np.ndarray]] = []
    for index, wave, duration in _iter_windows(files, window, hop, crop, load_audio):
        if durations[index] == 0.0:
            durations[index] = duration
            bar.update(1)
        batch.append((index, wave))
        if len(batch) >= batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    bar.close()
    results = []
    for i, path in enumerate(files):
        score = float(sums[i] / counts[i])
        decision = ""
        if threshold is not None and math.isfinite(threshold):
            decision = "bonafide" if score >= threshold else "spoof"
        results.append(FileScore(str(path), score, int(counts[i]), float(durations[i]), decision))
    return results


# ----------------------------------------------------------------------------- trained models


@dataclass
class ScoringModel:
    """A trained model ready to score: model and loss (eval mode, on ``device``), the recipe (``cfg``,
    with ``frontend``, ``model`` and ``loss`` sections) and the dev-EER threshold (None if unknown)."""

    model: nn.Module
    loss_fn: nn.Module
    cfg: dict[str, Any]
    threshold: float | None
    source: Path


def load_scoring_model(
    path: str | os.PathLike, device: torch.device, ssl_model: str | None = None
) -> ScoringModel:
    """Load ``best.pt`` / ``last.pt`` (our checkpoints) or a ``.safetensors`` weights file from
    ``models.import_released``. ``ssl_model`` replaces the SSL front end's model id/directory recorded
    in the file (e.g. a local copy of XLS-R). Weights that do not fit the recorded model -> `UserError`."""
    from models import build_model
    from models.losses import build_loss

    path = Path(path)
    if path.suffix == ".safetensors":
        from models.import_released import load_model_weights

        model_state, meta = load_model_weights(path)
        cfg = dict(meta.get("config", {}))
        loss_state: dict[str, Any] = {}
        threshold = meta.get("threshold")
    else:
        from utils.checkpoint import load_checkpoint

        state = load_checkpoint(path, map_location="cpu")
        cfg = dict(state.get("config", {}))
        model_state, loss_state = state["model"], state.get("loss", {})
        best = state.get("best") or {}
        threshold = best.get("threshold", state.get("threshold"))
    for section in ("frontend", "model", "loss"):
        if not isinstance(cfg.get(section), dict):
            raise UserError(f"{path}: no '{section}' config recorded in the file")
    cfg = {**cfg, "frontend": dict(cfg["frontend"])}
    if ssl_model is not None:
        if cfg["frontend"].get("name") != "ssl":
            raise UserError(
                f"--ssl-model: {path} uses the '{cfg['frontend'].get('name')}' front end, not an SSL model"
            )
        cfg["frontend"]["model"] = ssl_model
    model = build_model(cfg["model"])
    loss_fn = build_loss(cfg["loss"])
    try:
        model.load_state_dict(model_state)
        if loss_state:
            loss_fn.load_state_dict(loss_state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: weights do not fit the recorded model config ({first})") from None
    threshold = float(threshold) if threshold is not None and math.isfinite(float(threshold)) else None
    return ScoringModel(model.to(device).eval(), loss_fn.to(device).eval(), cfg, threshold, path)
