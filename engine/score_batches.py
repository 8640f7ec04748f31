"""Scoring batches of a partition: float32-safe forward passes, scores gathered over processes, score files.

Scores follow the toolkit convention: higher = more bona fide, the loss's ``score(embedding, logits)``
(logit difference bona fide − spoof, or ‖x‖(cos θ_bonafide − cos θ_spoof) for A-Softmax).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from utils import distributed as du
from utils.errors import UserError
from utils.precision import resolve_amp

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: torch.device, amp: str = "none") -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in (bf16, fp16); ``none`` disables any enclosing autocast."""
    amp = (amp or "none").lower()
    if amp not in ("none", *AMP_DTYPES):
        raise UserError(f"config: train.amp={amp!r} is not one of none, bf16, fp16")
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def resolve_scoring_amp(amp: str, device: torch.device) -> tuple[str, str]:
    """(autocast, reason) for scoring with ``amp`` (auto | none | bf16 | fp16) on ``device``.

    auto follows `utils.precision.resolve_amp` on GPUs (bf16 where native). On CPUs it stays exact
    float32: a score file is then the same on every CPU class, whatever its bf16 support, and scores do
    not tie; ``bf16`` is the explicit faster choice there (~1.5-3x on CPUs with AVX512-BF16/AMX, scores
    within ~1e-2, bench/bench_train.py). fp16 needs CUDA."""
    if (amp or "auto").lower() == "auto" and device.type == "cpu":
        return "none", "amp: fp32 (scoring on CPU stays exact float32, the same on every CPU; bf16 if asked)"
    choice = resolve_amp(amp, device, "scoring amp")
    if choice.value == "fp16" and device.type != "cuda":
        raise UserError("scoring amp fp16 needs CUDA; use bf16 on CPU")
    return choice.value, choice.reason


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

    def subset(self, mask: np.ndarray) -> Scores:
        """The scores where the boolean (n,) ``mask`` is true (without a loss)."""
        keep = np.flatnonzero(mask)
        return Scores(utt_ids=[self.utt_ids[i] for i in keep], attacks=[self.attacks[i] for i in keep],
                      labels=self.labels[keep], scores=self.scores[keep])

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
    frontend: nn.Module | None = None,
) -> Scores:
    """Score every batch ``(features (B, C, H, W), labels (B,), utt_ids, attacks)`` of ``loader``.

    Model and loss are put in eval mode (no dropout, no A-Softmax λ update). ``with_loss`` also
    averages the loss (e.g. the dev loss for checkpoint selection). ``amp``, ``fixed_batch``: see
    `forward_for_scores`. ``frontend``: the batches hold waves, turned into features by it first.
    """
    batches = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    return concat_scores(list(iter_scored_batches(
        model, loss_fn, batches, device, amp=amp, channels_last=channels_last, fixed_batch=fixed_batch,
        with_loss=with_loss, frontend=frontend,
    )))


def iter_scored_batches(
    model: nn.Module,
    loss_fn: nn.Module,
    batches: Iterable[Any],
    device: torch.device,
    *,
    amp: str = "none",
    channels_last: bool = False,
    fixed_batch: int | None = None,
    with_loss: bool = False,
    frontend: nn.Module | None = None,
) -> Iterator[Scores]:
    """`score_loader` one batch at a time: a `Scores` per batch, as it is scored (``loss``: the batch's
    mean loss with ``with_loss``, ``loss_weight`` its size)."""
    for module in (model, loss_fn, frontend):
        if module is not None:
            module.eval()
    for x, y, utt, attack in batches:
        with torch.inference_mode():
            x = x.to(device, non_blocking=True).float()  # float16 store batches are cast here
            y = torch.as_tensor(y).to(device)
            if frontend is not None:
                with autocast_context(device, amp):
                    x = frontend(x).float()
            embedding, logits = forward_for_scores(model, x, device, amp, fixed_batch, channels_last)
            scores = loss_fn.score(embedding, logits).double().cpu().numpy()
            loss = float(loss_fn(embedding, logits, y)) if with_loss else None
        yield Scores(list(utt), list(attack), y.cpu().numpy().astype(np.int64), scores, loss,
                     float(y.shape[0]) if with_loss else 0.0)


def _merged_loss(parts: Sequence[Scores]) -> tuple[float | None, float]:
    """(mean loss over ``parts`` weighted by their ``loss_weight``, or None; the summed weight)."""
    loss_n = sum(p.loss_weight for p in parts)
    loss = None
    if parts and all(p.loss is not None for p in parts) and loss_n:
        loss = sum(float(p.loss) * p.loss_weight for p in parts) / loss_n
    return loss, float(loss_n)


def concat_scores(parts: Sequence[Scores]) -> Scores:
    """``parts`` one after the other (e.g. the batches of `iter_scored_batches`) as one `Scores`."""
    loss, loss_n = _merged_loss(parts)
    return Scores(
        utt_ids=[u for p in parts for u in p.utt_ids],
        attacks=[a for p in parts for a in p.attacks],
        labels=np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int64),
        scores=np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
        loss=loss,
        loss_weight=loss_n,
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
    loss, loss_n = _merged_loss(parts)
    return Scores(
        utt_ids=[parts[r].utt_ids[i] for r, i in order],
        attacks=[parts[r].attacks[i] for r, i in order],
        labels=np.array([parts[r].labels[i] for r, i in order], dtype=np.int64),
        scores=np.array([parts[r].scores[i] for r, i in order], dtype=np.float64),
        loss=loss,
        loss_weight=loss_n,
    )


#: the score file layouts a partition's scores can be written in (`write_partition_scores`)
PARTITION_SCORE_FORMATS = ("id-attack-key-score", "asvspoof5")


def write_partition_scores(scores: Scores, path: str | os.PathLike, fmt: str = "id-attack-key-score") -> None:
    """Write a partition's scores atomically: ``utt_id attack key score`` lines
    (`utils.scorefiles.write_scores`), or with ``fmt`` ``asvspoof5`` the evaluation package's
    ``filename<TAB>cm-score`` file with its header (no keys)."""
    from utils.scorefiles import write_asvspoof5_scores, write_scores

    if fmt not in PARTITION_SCORE_FORMATS:
        raise ValueError(f"unknown score format {fmt!r}")
    if fmt == "asvspoof5":
        write_asvspoof5_scores(path, scores.utt_ids, scores.scores)
        return
    write_scores(path, scores.utt_ids, scores.scores, attacks=scores.attacks, keys=cm_keys(scores.labels))


def cm_keys(labels: np.ndarray) -> list[str]:
    """The score-file key of each label: ``bonafide`` for 0, ``spoof`` otherwise."""
    return ["bonafide" if int(label) == 0 else "spoof" for label in labels]
