"""The training loop: epochs, dev EER per epoch, best/last checkpoints, resume, DDP, AMP.

`Trainer` (or `fit`) trains one seed of one recipe in one run folder:

    out/config.yaml     resolved recipe            out/command.txt   the command line
    out/environment.json  versions, git commit     out/history.csv   one row per epoch
    out/last.pt         written every epoch        out/best.pt       best dev EER (or dev loss)
    out/scores_dev.txt  dev scores of best.pt      out/scores_eval.txt  eval scores (if eval given)
    out/tb/             TensorBoard logs (if tensorboard is installed)
    out/swa.pt, out/scores_dev_swa.txt   with train.swa: the averaged model and its dev scores
    out/avg.pt, out/scores_dev_avg.txt, out/average/   with train.average: the mean of the k best epochs
                        (engine/average.py), its dev scores, and the kept epochs' weights

``train.swa`` (AASIST, docs/training.md): whenever the dev metric is at least as good as the best so far, the
weights are added to a running average (`utils.swa.WeightAverage`, kept in last.pt); after the last
epoch the average is loaded, BatchNorm statistics are recomputed over the training set
(`utils.swa.bn_update`), and the result is scored on dev, saved as swa.pt and used for the eval scores.

With ``train.calibrate: true`` best.pt finally gets a score-to-LLR calibration fitted on scores_dev.txt
(`engine.calibrate_checkpoint`), which ``generate_score.py --llr`` uses.

Several corpora (``data.train``/``data.dev`` as lists of sources, docs/training.md): the training set is a
`data.mixture.MixtureDataset` drawn by weight (`data.mixture.MixtureSampler`, ``train.draws_per_epoch`` per
epoch); with several dev sources selection stays on the pooled dev scores and history.csv adds a
``dev_eer_<name>`` column per source (summary.json: ``dev_eer_sources``).

Reproducibility: the sampler order depends only on (seed, epoch), every RNG state is saved at the
end of each epoch, so ``--resume`` after a crash continues exactly where an uninterrupted run would
be (bit-identical weights in deterministic CPU mode). Only global rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from data.dataset import collate_batch
from data.mixture import MixtureDataset, MixtureSampler
from engine.average import AverageSettings, CheckpointAverager
from engine.calibrate_checkpoint import calibrate_checkpoint
from engine.optim import build_optimizer, build_scheduler, noam_factor
from engine.partitions import scoring_batch
from engine.records import SOURCE_EER_PREFIX, TensorBoard, source_columns, write_history, write_run_files
from engine.score_batches import Scores, autocast_context, gather_scores, score_loader, write_partition_scores
from models.countermeasure import Countermeasure, WithFrontEnd
from utils import distributed as du
from utils.checkpoint import load_checkpoint, previous_path, save_checkpoint, unwrap
from utils.config import get
from utils.errors import UserError
from utils.io import atomic_write_text
from utils.precision import cpu_facts, resolve_amp, resolve_channels_last, resolve_compile, resolve_fused_adam
from utils.seed import get_rng_state, seed_everything, set_rng_state
from utils.swa import WeightAverage
from utils.swa import bn_update as bn_update_fn

# Sections that define the model and its inputs: a resumed run must not change them.
FROZEN_SECTIONS = ("frontend", "model", "loss")


@dataclass
class RunResult:
    """What one training run produced (dev EER as a fraction)."""

    out_dir: Path
    best_epoch: int
    best_dev_eer: float
    best_dev_loss: float
    threshold: float
    best_path: Path
    last_path: Path
    epochs_done: int
    eval_eer: float | None = None
    eval_scores_path: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # stored in best.pt when train.calibrate is true
    swa_path: Path | None = None
    swa_dev_eer: float | None = None
    avg_path: Path | None = None  # with train.average (engine/average.py)
    avg_dev_eer: float | None = None


def make_loader(
    dataset: Dataset,
    batch_size: int,
    dist_info: du.DistInfo,
    shuffle: bool,
    seed: int,
    num_workers: int,
    draws: int | None = None,
) -> tuple[DataLoader, DistributedSampler | MixtureSampler]:
    """A DataLoader whose order depends only on (seed, epoch) and this process's rank. A shuffled
    `data.mixture.MixtureDataset` of several sources, or any shuffled set with ``draws`` (items per epoch),
    is drawn by weight with `data.mixture.MixtureSampler`; otherwise every item once per epoch."""
    sampler: DistributedSampler | MixtureSampler
    if shuffle and (isinstance(dataset, MixtureDataset) or draws is not None):
        sizes = dataset.sizes if isinstance(dataset, MixtureDataset) else [len(dataset)]
        weights = dataset.weights if isinstance(dataset, MixtureDataset) else [1.0]
        sampler = MixtureSampler(sizes, weights, draws, seed=seed, rank=dist_info.rank,
                                 world_size=dist_info.world_size)
    else:
        # DistributedSampler with one replica is a plain seeded shuffle: the order depends only on
        # (seed, epoch), never on the global RNG, which is what makes resume exact.
        sampler = DistributedSampler(
            dataset,
            num_replicas=dist_info.world_size,
            rank=dist_info.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_batch,
        pin_memory=dist_info.device.type == "cuda",
        generator=generator,
    )
    return loader, sampler


def micro_batch_size(batch_size: int, grad_accum: int, world_size: int) -> int:
    """Per-process batch of one forward pass: the recipe's batch is the global batch per optimizer step."""
    per_step = world_size * grad_accum
    if batch_size % per_step:
        raise UserError(
            f"config: train.batch_size={batch_size} is not divisible by "
            f"processes ({world_size}) × train.grad_accum ({grad_accum})"
        )
    return batch_size // per_step


def _check_resume_config(cfg: dict[str, Any], saved: dict[str, Any], path: Path) -> None:
    for section in FROZEN_SECTIONS:
        if cfg.get(section) != saved.get(section):
            raise UserError(
                f"{path}: resuming with a different '{section}' section than the checkpoint's; "
                "use the same recipe and overrides (only train.* settings may change)"
            )


def load_resume_state(last_path: Path) -> dict[str, Any]:
    """``last.pt``, or the previous checkpoint kept beside it when ``last.pt`` is missing or unreadable
    (a crash while it was being replaced, a damaged disk): the run then loses one epoch, not all."""
    try:
        return load_checkpoint(last_path, map_location="cpu")
    except UserError as exc:
        prev = previous_path(last_path)
        if not prev.is_file():
            raise
        print(f"warning: {exc}; resuming from the previous checkpoint {prev}", file=sys.stderr)
        return load_checkpoint(prev, map_location="cpu")


@dataclass
class TrainSettings:
    """The ``train.*`` values the loop reads, checked once."""

    epochs: int
    grad_accum: int
    select_by: str
    patience: int | None
    amp: str
    channels_last: bool
    workers: int
    micro: int
    eval_micro: int
    compile: bool | str
    sync_batchnorm: bool
    swa: bool
    grad_checkpoint: bool
    find_unused_parameters: bool | None
    fused_adam: bool = False
    reasons: list[str] = field(default_factory=list)
    calibrate: bool = False  # fit a score-to-LLR calibration on the dev scores into best.pt at the end
    draws_per_epoch: int | None = None  # items per epoch drawn by weight (data/mixture.py); None: all once

    @classmethod
    def from_config(cls, cfg: dict[str, Any], device: torch.device, world_size: int) -> TrainSettings:
        """The ``train`` section with ``auto`` precision and layout resolved for ``device``
        (`utils.precision`); ``reasons`` says what was chosen and why."""
        tcfg = cfg.get("train", {})
        grad_accum = max(1, int(tcfg.get("grad_accum", 1)))
        select_by = str(tcfg.get("select_by", "dev_eer"))
        if select_by not in ("dev_eer", "dev_loss"):
            raise UserError(f"config: train.select_by={select_by!r} is not one of dev_eer, dev_loss")
        micro = micro_batch_size(int(tcfg.get("batch_size", 64)), grad_accum, world_size)
        patience = get(cfg, "train.patience")
        draws = tcfg.get("draws_per_epoch")
        if draws is not None and int(draws) < 1:
            raise UserError(f"config: train.draws_per_epoch must be at least 1 (or null), got {draws}")
        model_name = str((cfg.get("model") or {}).get("name", ""))
        amp = resolve_amp(tcfg.get("amp", "auto"), device, "config: train.amp")
        layout = resolve_channels_last(
            tcfg.get("channels_last", "auto"), model_name, device, amp.value, "config: train.channels_last"
        )
        fused = resolve_fused_adam(
            tcfg.get("fused_adam", "auto"), model_name, device, amp.value, "config: train.fused_adam"
        )
        return cls(
            epochs=int(tcfg.get("epochs", 1)),
            grad_accum=grad_accum,
            select_by=select_by,
            patience=None if patience is None else int(patience),
            amp=amp.value,
            channels_last=bool(layout.value),
            workers=int(tcfg.get("num_workers", 0)),
            micro=micro,
            eval_micro=max(1, int(get(cfg, "train.eval_batch_size", micro))),
            compile=tcfg.get("compile", "auto"),
            sync_batchnorm=bool(tcfg.get("sync_batchnorm", False)),
            fused_adam=bool(fused.value),
            reasons=[amp.reason, layout.reason, fused.reason],
            calibrate=bool(tcfg.get("calibrate", False)),
            draws_per_epoch=None if draws is None else int(draws),
            swa=bool(tcfg.get("swa", False)),
            grad_checkpoint=bool(tcfg.get("grad_checkpoint", False)),
            find_unused_parameters=(
                None if tcfg.get("find_unused_parameters") is None else bool(tcfg["find_unused_parameters"])
            ),
        )


class Trainer:
    """Trains ``model`` with ``loss_fn`` on ``train_set``, selects by dev, scores eval; see the module
    docstring for the files it writes. Datasets yield ``(input, label 0/1, utt_id, attack)`` where the
    input is features (C, H, W), or waves when ``frontend`` runs inside the countermeasure.

    ``resume`` continues from ``out_dir/last.pt`` if it exists. ``on_epoch_end(epoch)`` is called after
    each epoch's checkpoint is written. ``command`` is recorded in command.txt (default: sys.argv).
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        model: nn.Module,
        loss_fn: nn.Module,
        train_set: Dataset,
        dev_set: Dataset,
        out_dir: str | os.PathLike,
        *,
        frontend: nn.Module | None = None,
        seed: int = 0,
        dist_info: du.DistInfo | None = None,
        resume: bool = False,
        deterministic: bool = False,
        eval_set: Dataset | None = None,
        command: Sequence[str] | None = None,
        progress: bool = True,
        on_epoch_end: Callable[[int], None] | None = None,
    ) -> None:
        self.cfg, self.model, self.loss_fn, self.frontend = cfg, model, loss_fn, frontend
        self.sets = {"train": train_set, "dev": dev_set, "eval": eval_set}
        self.out = Path(out_dir)
        self.seed, self.resume_requested, self.deterministic = seed, resume, deterministic
        self.dist = dist_info or du.DistInfo()
        self.device = self.dist.device
        self.command, self.progress, self.on_epoch_end = command, progress, on_epoch_end
        self.s = TrainSettings.from_config(cfg, self.device, self.dist.world_size)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        self.start_epoch, self.global_step, self.stopped_early = 0, 0, False
        self.best: dict[str, Any] = {
            "epoch": -1,
            "metric": math.inf,
            "dev_eer": math.nan,
            "dev_loss": math.nan,
            "threshold": math.nan,
        }
        self.history: list[dict[str, Any]] = []
        self.swa = WeightAverage() if self.s.swa else None
        self.swa_snapshot = False  # whether the latest validated epoch joins the average
        average = AverageSettings.from_config(cfg)
        self.averager = CheckpointAverager(average, self.out, self.main) if average is not None else None

    @property
    def main(self) -> bool:
        return self.dist.is_main

    # ------------------------------------------------------------------------- set-up and resume

    def setup(self) -> None:
        """Place the modules, build optimizer, schedule, scaler and the (DDP/compiled) training module."""
        # Every rank checks (shared file system), so that all of them stop together.
        if self.last_path.exists() and not self.resume_requested:
            raise UserError(
                f"{self.last_path}: run folder already holds a checkpoint; "
                f"resume it or choose another run folder"
            )
        s, device = self.s, self.device
        seed_everything(self.seed + self.dist.rank, self.deterministic)
        self.train_loader, self.train_sampler = make_loader(
            self.sets["train"], s.micro, self.dist, True, self.seed, s.workers, s.draws_per_epoch
        )
        self.dev_loader, _ = make_loader(
            self.sets["dev"], s.eval_micro, self.dist, False, self.seed, s.workers
        )
        if len(self.train_loader) == 0:
            raise UserError("training partition is empty")
        cm = Countermeasure(self.model, self.loss_fn, self.frontend).to(device)
        if s.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if s.sync_batchnorm and self.dist.distributed and device.type == "cuda":
            cm.model = self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if s.grad_checkpoint:
            frontend = self.frontend
            if not (getattr(frontend, "trainable", False) and hasattr(frontend, "set_grad_checkpointing")):
                raise UserError(
                    "config: train.grad_checkpoint needs a trainable SSL front end (frontend.trainable: true)"
                )
            self.frontend.set_grad_checkpointing(True)
        params = [p for p in cm.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, self.cfg.get("optim", {}), fused=s.fused_adam)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / s.grad_accum)
        self.scheduler, self.interval = build_scheduler(
            self.optimizer, self.cfg.get("sched"), total_steps=self.steps_per_epoch * s.epochs
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=(s.amp == "fp16" and device.type == "cuda"))
        if s.amp == "fp16" and device.type != "cuda":
            raise UserError("config: train.amp=fp16 needs CUDA; use train.amp=bf16 on CPU")
        self.cm = cm
        self.step_module: nn.Module = cm
        if self.dist.distributed:
            # AASIST's dead bn1 parameters (models.aasist_graph.ResBlock) never get a gradient.
            unused = s.find_unused_parameters
            if unused is None:
                unused = bool(getattr(self.model, "has_unused_parameters", False))
            self.step_module = nn.parallel.DistributedDataParallel(
                cm,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=unused,
            )

    def maybe_compile(self) -> None:
        """torch.compile the training module when asked, or (auto) when the planned run is long enough to
        pay the measured compile time back (`utils.precision.resolve_compile`)."""
        s, model_cfg = self.s, self.cfg.get("model") or {}
        choice = resolve_compile(
            s.compile, str(model_cfg.get("name", "")), self.device, s.amp,
            planned_steps=(s.epochs - self.start_epoch) * self.steps_per_epoch,
            batch=s.micro, input_shape=tuple(model_cfg.get("input_shape", ())),
            source="config: train.compile",
        )
        s.reasons.append(choice.reason)
        if self.main:
            print("; ".join(s.reasons), file=sys.stderr)
        if choice.value:
            from utils.compile import compile_for_training

            self.step_module = compile_for_training(self.step_module)

    def resume(self) -> None:
        """Continue from last.pt (or the previous checkpoint) when asked and one exists."""
        if not self.resume_requested or not (
            self.last_path.exists() or previous_path(self.last_path).exists()
        ):
            return
        state = load_resume_state(self.last_path)
        _check_resume_config(self.cfg, state.get("config", {}), self.last_path)
        unwrap(self.model).load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        if self.frontend is not None and state.get("frontend_state") is not None:
            self.frontend.load_state_dict(state["frontend_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.best = dict(state["best"])
        self.history = list(state.get("history", []))
        self.stopped_early = bool(state.get("stopped_early", False))
        if self.swa is not None and state.get("swa") is not None:
            self.swa.load_state_dict(state["swa"])
        if self.averager is not None and state.get("average") is not None:
            self.averager.load_state_dict(state["average"])
        rng = state.get("rng") or []
        if len(rng) == self.dist.world_size:
            set_rng_state(rng[self.dist.rank])
        else:
            seed_everything(self.seed + 1000 * self.start_epoch + self.dist.rank, self.deterministic)
        if self.main:
            print(
                f"resuming {self.out} after epoch {self.start_epoch} (step {self.global_step})",
                file=sys.stderr,
            )

    # ------------------------------------------------------------------------- one epoch

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training set -> (mean training loss over all processes, last lr)."""
        s, device = self.s, self.device
        self.set_train_epoch(epoch)
        self.step_module.train()
        running, seen = 0.0, 0
        n_batches = len(self.train_loader)
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{s.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=not (self.progress and self.main),
        )
        self.optimizer.zero_grad(set_to_none=True)
        lr_now = self.optimizer.param_groups[0]["lr"]  # logged: the lr of the epoch's last optimizer step
        for i, (x, y, _utt, _attack) in enumerate(bar):
            x = x.to(device, non_blocking=True).float()  # float16 store batches are cast here
            y = y.to(device, non_blocking=True)
            if s.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            group_start = (i // s.grad_accum) * s.grad_accum
            group_size = min(s.grad_accum, n_batches - group_start)
            is_step = i == group_start + group_size - 1
            sync = contextlib.nullcontext()
            if self.dist.distributed and not is_step and hasattr(self.step_module, "no_sync"):
                sync = self.step_module.no_sync()
            with sync:
                with autocast_context(device, s.amp):
                    loss_value = self.step_module(x, y)
                self.scaler.scale(loss_value / group_size).backward()
            if is_step:
                lr_now = self._optimizer_step()
            value = float(loss_value.detach())
            if not math.isfinite(value):
                raise UserError(
                    f"training diverged: loss is {value} at epoch {epoch + 1}, batch {i + 1}; "
                    "lower optim.lr or disable train.amp"
                )
            running += value * y.shape[0]
            seen += y.shape[0]
            bar.set_postfix(loss=f"{running / max(seen, 1):.4f}")
        bar.close()
        if self.scheduler is not None and self.interval == "epoch":
            self.scheduler.step()
        train_sum, train_n = du.all_reduce_sum([running, float(seen)], device)
        return train_sum / max(train_n, 1.0), lr_now

    def set_train_epoch(self, epoch: int) -> None:
        """Shuffle order, loader seed and the training set's per-epoch draws (crops, augmentation) of
        ``epoch``: all depend only on (seed, epoch)."""
        self.train_sampler.set_epoch(epoch)
        self.train_loader.generator.manual_seed(self.seed * 100_003 + epoch)
        set_epoch = getattr(self.sets["train"], "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch, seed=self.seed)

    def _optimizer_step(self) -> float:
        lr_now = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()
        return lr_now

    def score(self, loader: DataLoader, desc: str, with_loss: bool = False) -> Scores:
        """Scores of a partition (all processes gathered), in float32: bf16 logits would round into ties."""
        return gather_scores(
            score_loader(
                unwrap(self.model),
                self.loss_fn,
                loader,
                self.device,
                channels_last=self.s.channels_last,
                with_loss=with_loss,
                progress=self.progress and self.main,
                desc=desc,
                frontend=self.frontend,
            )
        )

    def dev_source_eers(self, dev: Scores) -> dict[str, float]:
        """``{"dev_eer_<name>": EER}`` of each source when dev lists several (NaN for a source without both
        classes); empty for one dev partition. Pooled scores come in dataset order, sources end to end."""
        dev_set = self.sets["dev"]
        if not isinstance(dev_set, MixtureDataset):
            return {}
        sources = dev_set.source_of(np.arange(len(dev.utt_ids)))
        out = {}
        for k, name in enumerate(dev_set.names):
            part = dev.subset(sources == k)
            both = bool((part.labels == 0).any() and (part.labels == 1).any())
            out[SOURCE_EER_PREFIX + name] = part.eer(what=f"dev source {name}")[0] if both else math.nan
        return out

    def validate(self, epoch: int, train_loss: float, lr_now: float, t0: float) -> tuple[Scores, bool]:
        """Dev scores, selection and the epoch's history record -> (dev scores, improved)."""
        dev = self.score(self.dev_loader, "dev", with_loss=True)
        dev_eer, dev_thr = dev.eer(what="dev partition")
        per_source = self.dev_source_eers(dev)
        dev_loss = float(dev.loss) if dev.loss is not None else math.nan
        metric = dev_eer if self.s.select_by == "dev_eer" else dev_loss
        improved = metric < self.best["metric"]
        # SWA as published: a snapshot whenever dev is at least as good as the best so far (ties too).
        self.swa_snapshot = self.swa is not None and metric <= self.best["metric"]
        if improved:
            self.best = {
                "epoch": epoch + 1,
                "metric": metric,
                "dev_eer": dev_eer,
                "dev_loss": dev_loss,
                "threshold": dev_thr,
            }
        self.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "dev_loss": dev_loss,
                "dev_eer": dev_eer,
                "dev_threshold": dev_thr,
                "lr": lr_now,
                "time_s": round(time.perf_counter() - t0, 3),
                **per_source,
            }
        )
        if self.s.patience is not None and epoch + 1 - self.best["epoch"] >= self.s.patience:
            self.stopped_early = True
        return dev, improved

    # ------------------------------------------------------------------------- checkpoints

    def state(self, epoch: int, rng_all: list[Any]) -> dict[str, Any]:
        """Everything a resumed run needs, plus what scoring reads (config, threshold, best)."""
        last = self.history[-1]
        state = {
            "model": unwrap(self.model).state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng_all,
            "epoch": epoch + 1,
            "global_step": self.global_step,
            "config": self.cfg,
            "seed": self.seed,
            "threshold": last["dev_threshold"],
            "dev_eer": last["dev_eer"],
            "dev_loss": last["dev_loss"],
            "best": self.best,
            "history": self.history,
            "stopped_early": self.stopped_early,
        }
        if self.swa is not None:
            state["swa"] = self.swa.state_dict()
        if self.averager is not None:
            state["average"] = self.averager.state_dict()
        if self.frontend is not None:
            # A trainable front end is saved; a frozen pretrained one by reference (settings in the
            # config) and content hash, checked when the checkpoint is loaded for scoring.
            if getattr(self.frontend, "trainable", False):
                state["frontend_state"] = self.frontend.state_dict()
                # rebuilds the architecture at scoring time without downloading the pretrained model
                state["frontend_settings"] = self.frontend.portable_settings()
            else:
                state["frontend_sha256"] = self.frontend_hash
        return state

    def swa_weights(self) -> dict[str, torch.Tensor]:
        """What SWA averages: the countermeasure's state (back end, loss, a trainable front end)."""
        trainable_frontend = getattr(self.frontend, "trainable", False)
        return {
            key: value
            for key, value in self.cm.state_dict().items()
            if trainable_frontend or not key.startswith("frontend.")
        }

    def checkpoint(self, epoch: int, dev: Scores, improved: bool) -> None:
        """Write best.pt (if improved), last.pt (keeping the previous one), history and logs."""
        if self.swa_snapshot:
            self.swa.add(self.swa_weights())
        dropped = []
        if self.averager is not None:  # engine/average.py: keeps the k best epochs' weights
            dropped = self.averager.offer(epoch + 1, self.history[-1], self.swa_weights())
        rng_all = du.all_gather_objects(get_rng_state())
        if not self.main:
            return
        state = self.state(epoch, rng_all)
        if improved:
            # best.pt first: a crash between the two writes must not leave last.pt ahead of best.pt.
            save_checkpoint(state, self.best_path)
            write_partition_scores(dev, self.out / "scores_dev.txt")
        save_checkpoint(state, self.last_path, keep_previous=True)
        if dropped:  # only now that last.pt no longer lists them
            self.averager.discard(dropped)
        write_history(self.out / "history.csv", self.history)
        r = self.history[-1]
        sources = source_columns(r)
        self.tb.scalars(
            {
                "loss/train": r["train_loss"],
                "loss/dev": r["dev_loss"],
                "eer/dev": r["dev_eer"],
                "lr": r["lr"],
                **{f"eer/dev_{name}": value for name, value in sources.items()},
            },
            epoch + 1,
        )
        mark = " *" if improved else ""
        each = "".join(f" {name} {100 * value:.3f}%" for name, value in sources.items())
        print(
            f"epoch {epoch + 1}/{self.s.epochs}: train loss {r['train_loss']:.4f}  dev loss "
            f"{r['dev_loss']:.4f}  dev EER {100 * r['dev_eer']:.3f}%{f' ({each.strip()})' if each else ''}  "
            f"lr {r['lr']:.3g}  {r['time_s']:.1f}s{mark}",
            file=sys.stderr,
        )

    # ------------------------------------------------------------------------- the whole run

    def run(self) -> RunResult:
        """Set up, resume, train the remaining epochs, then score eval with best.pt."""
        self.setup()
        self.resume()
        self.maybe_compile()
        s = self.s
        self.frontend_hash = (
            self.frontend.content_hash()
            if self.frontend is not None and not getattr(self.frontend, "trainable", False)
            else None
        )
        self.tb = TensorBoard(self.out / "tb" if self.main else None)
        if self.main:
            augment = getattr(self.sets["train"], "augment_settings", None)
            write_run_files(self.out, self.cfg, self.device, self.dist.world_size, self.command,
                            {"settings": self.s.reasons, "cpu": cpu_facts().as_dict(), "augment": augment})
        for epoch in range(self.start_epoch, s.epochs):
            if self.stopped_early:
                break
            t0 = time.perf_counter()
            train_loss, lr_now = self.train_epoch(epoch)
            dev, improved = self.validate(epoch, train_loss, lr_now, t0)
            self.checkpoint(epoch, dev, improved)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch + 1)
            du.barrier()
        self.tb.close()
        result = self.finish()
        du.barrier()
        return result

    def finish_swa(self, result: RunResult) -> None:
        """Swap in the SWA average and write swa.pt and scores_dev_swa.txt (`finish_averaged`)."""
        result.swa_path, result.swa_dev_eer = self.finish_averaged(
            self.swa.averaged(), "swa", {"swa_snapshots": self.swa.count}, bn_update=True
        )

    def finish_average(self, result: RunResult) -> None:
        """Swap in the mean of the kept epochs (train.average) and write avg.pt and scores_dev_avg.txt."""
        kept = [r["epoch"] for r in self.averager.kept]
        result.avg_path, result.avg_dev_eer = self.finish_averaged(
            self.averager.averaged(), "avg", {"averaged_epochs": kept}, self.averager.settings.bn_update
        )

    def finish_averaged(
        self, weights: dict[str, torch.Tensor], tag: str, extra: dict[str, Any], bn_update: bool
    ) -> tuple[Path, float]:
        """Load averaged ``weights``, recompute BatchNorm statistics over the training set (as it was drawn
        in the last epoch) when ``bn_update``, score dev and write ``<tag>.pt`` and
        ``scores_dev_<tag>.txt``; the averaged weights stay loaded for the eval scores -> (path, dev EER)."""
        self.cm.load_state_dict(weights, strict=False)
        last_epoch = int(self.history[-1]["epoch"]) - 1
        if bn_update:
            self.set_train_epoch(last_epoch)
            bn_update_fn(WithFrontEnd(self.model, self.frontend), self.train_loader, self.device)
            if self.dist.distributed:  # every rank saw its own shard: keep rank 0's statistics everywhere
                for buffer in self.cm.buffers():
                    torch.distributed.broadcast(buffer, src=0)
        dev = self.score(self.dev_loader, f"dev ({tag})", with_loss=True)
        dev_eer, dev_thr = dev.eer(what=f"dev partition ({tag})")
        dev_loss = float(dev.loss) if dev.loss is not None else math.nan
        rng_all = du.all_gather_objects(get_rng_state())
        path = self.out / f"{tag}.pt"
        if not self.main:
            return path, dev_eer
        state = self.state(last_epoch, rng_all)
        state.update(threshold=dev_thr, dev_eer=dev_eer, dev_loss=dev_loss, **extra)
        state["best"] = {
            "epoch": last_epoch + 1,
            "metric": dev_eer if self.s.select_by == "dev_eer" else dev_loss,
            "dev_eer": dev_eer,
            "dev_loss": dev_loss,
            "threshold": dev_thr,
        }
        save_checkpoint(state, path)
        write_partition_scores(dev, self.out / f"scores_dev_{tag}.txt")
        what = ", ".join(f"{key} {value}" for key, value in extra.items())
        print(f"{path.name} ({what}): dev loss {dev_loss:.4f}  dev EER {100 * dev_eer:.3f}%", file=sys.stderr)
        return path, dev_eer

    def load_best(self) -> bool:
        """Load best.pt's weights into the modules; False when there is none."""
        if not self.best_path.exists():
            return False
        best_state = load_checkpoint(self.best_path, map_location="cpu")
        unwrap(self.model).load_state_dict(best_state["model"])
        self.loss_fn.load_state_dict(best_state["loss"])
        if self.frontend is not None and best_state.get("frontend_state") is not None:
            self.frontend.load_state_dict(best_state["frontend_state"])
        return True

    def finish(self) -> RunResult:
        """SWA (if on), eval scores of swa.pt or else best.pt (if an eval set was given) and summary.json."""
        result = RunResult(
            out_dir=self.out,
            best_epoch=int(self.best["epoch"]),
            best_dev_eer=float(self.best["dev_eer"]),
            best_dev_loss=float(self.best["dev_loss"]),
            threshold=float(self.best["threshold"]),
            best_path=self.best_path,
            last_path=self.last_path,
            epochs_done=len(self.history),
            history=self.history,
        )
        if self.stopped_early and self.main:
            print(f"early stop: no dev improvement for {self.s.patience} epochs", file=sys.stderr)
        if self.swa is not None and self.swa.count:
            self.finish_swa(result)
        if self.averager is not None and self.averager.kept:
            self.finish_average(result)
        averaged = result.swa_path is not None or result.avg_path is not None
        if self.sets["eval"] is not None and (averaged or self.load_best()):
            eval_set = self.sets["eval"]  # whole utterances (data.score_crop: full) one per batch
            batch = scoring_batch(eval_set, self.s.eval_micro)
            eval_loader, _ = make_loader(eval_set, batch, self.dist, False, self.seed, self.s.workers)
            scores = self.score(eval_loader, "eval")
            result.eval_eer, _ = scores.eer(what="eval partition")
            result.eval_scores_path = self.out / "scores_eval.txt"
            if self.main:
                write_partition_scores(scores, result.eval_scores_path)
        if self.main and self.s.calibrate and self.best_path.exists():
            result.calibration = self.calibrate_best()
        if self.main:
            summary = {
                "best_epoch": result.best_epoch,
                "dev_eer": result.best_dev_eer,
                "dev_loss": result.best_dev_loss,
                "threshold": result.threshold,
                "eval_eer": result.eval_eer,
                "epochs_done": result.epochs_done,
                "stopped_early": self.stopped_early,
                "best_checkpoint": str(self.best_path),
                "seed": self.seed,
                "calibration": result.calibration,
            }
            best_row = next((r for r in self.history if r["epoch"] == result.best_epoch), {})
            sources = source_columns(best_row)
            if sources:  # several dev sources: dev_eer above is the pooled one
                summary["dev_eer_sources"] = sources
            if result.swa_path is not None:
                # eval scores (if any) are the SWA model's
                summary.update(swa_dev_eer=result.swa_dev_eer, swa_checkpoint=str(result.swa_path),
                               swa_snapshots=self.swa.count)
            if result.avg_path is not None:  # eval scores (if any) are the averaged model's
                summary.update(avg_dev_eer=result.avg_dev_eer, avg_checkpoint=str(result.avg_path),
                               averaged_epochs=[r["epoch"] for r in self.averager.kept])
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return result

    def calibrate_best(self) -> dict[str, Any] | None:
        """Fit the score-to-LLR calibration on best.pt's dev scores and store it in best.pt. Dev scores that
        cannot be calibrated (e.g. all equal) leave best.pt as it is, with a warning: the run still counts."""
        try:
            done = calibrate_checkpoint(self.best_path, self.out / "scores_dev.txt")
        except UserError as exc:
            print(f"warning: no calibration stored in {self.best_path}: {exc}", file=sys.stderr)
            return None
        for message in done.warnings:
            print(f"warning: {message}", file=sys.stderr)
        print(f"calibration stored in {self.best_path}: LLR = {done.describe()}", file=sys.stderr)
        return done.calibration.as_dict()


def fit(
    cfg: dict[str, Any],
    model: nn.Module,
    loss_fn: nn.Module,
    train_set: Dataset,
    dev_set: Dataset,
    out_dir: str | os.PathLike,
    **kwargs: Any,
) -> RunResult:
    """``Trainer(cfg, model, loss_fn, train_set, dev_set, out_dir, **kwargs).run()``."""
    return Trainer(cfg, model, loss_fn, train_set, dev_set, out_dir, **kwargs).run()


__all__ = [
    "RunResult",
    "Scores",
    "TrainSettings",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "fit",
    "micro_batch_size",
    "noam_factor",
]
