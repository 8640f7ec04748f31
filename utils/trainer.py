"""The training loop: epochs, dev EER per epoch, best/last checkpoints, resume, DDP, AMP.

`fit` trains one seed of one recipe in one run folder:

    out/config.yaml     resolved recipe            out/command.txt   the command line
    out/environment.json  versions, git commit     out/history.csv   one row per epoch
    out/last.pt         written every epoch        out/best.pt       best dev EER (or dev loss)
    out/scores_dev.txt  dev scores of best.pt      out/scores_eval.txt  eval scores (if eval given)
    out/tb/             TensorBoard logs (if tensorboard is installed)

Reproducibility: the sampler order depends only on (seed, epoch), every RNG state is saved at the
end of each epoch, so ``--resume`` after a crash continues exactly where an uninterrupted run would
be (bit-identical weights in deterministic CPU mode). Only global rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import shlex
import subprocess
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
from utils import distributed as du
from utils.checkpoint import load_checkpoint, save_checkpoint, unwrap
from utils.config import get, save_config
from utils.errors import UserError
from utils.io import atomic_write_text
from utils.scoring import Scores, autocast_context, gather_scores, score_loader, write_partition_scores
from utils.seed import get_rng_state, seed_everything, set_rng_state

HISTORY_FIELDS = ("epoch", "train_loss", "dev_loss", "dev_eer", "dev_threshold", "lr", "time_s")
# Sections that define the model and its inputs: a resumed run must not change them.
FROZEN_SECTIONS = ("frontend", "model", "loss")


# ----------------------------------------------------------------------------- optimizer and schedule


def build_optimizer(params: Sequence[nn.Parameter], optim_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD from the recipe's ``optim`` section (lr, betas, eps, weight_decay, amsgrad)."""
    name = str(optim_cfg.get("name", "adam")).lower()
    lr = float(optim_cfg.get("lr", 1e-3))
    wd = float(optim_cfg.get("weight_decay", 0.0))
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(
            params,
            lr=lr,
            betas=tuple(float(b) for b in optim_cfg.get("betas", (0.9, 0.999))),
            eps=float(optim_cfg.get("eps", 1e-8)),
            weight_decay=wd,
            amsgrad=bool(optim_cfg.get("amsgrad", False)),
        )
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(optim_cfg.get("momentum", 0.9)), weight_decay=wd)
    raise UserError(f"config: optim.name={name!r} is not one of adam, adamw, sgd")


def noam_factor(step: int, d_model: int = 64, warmup_steps: int = 1000) -> float:
    """Noam learning rate at optimizer step ``step`` (1-based).

    d^-0.5 · min(step^-0.5, step · warmup^-1.5); the published recipe (d = 64, warm-up 1000) peaks at
    3.95e-3 at step 1000.
    """
    step = max(1, step)
    return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


class _Noam:
    """Picklable-free Noam multiplier for LambdaLR (LambdaLR calls it with 0 before the first step)."""

    def __init__(self, d_model: int, warmup_steps: int) -> None:
        self.d_model = d_model
        self.warmup_steps = warmup_steps

    def __call__(self, completed_steps: int) -> float:
        return noam_factor(completed_steps + 1, self.d_model, self.warmup_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, sched_cfg: dict[str, Any] | None
) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, str]:
    """The recipe's schedule and when to step it: ``("epoch" | "step")``.

    ``step``: lr · gamma^(epoch // step_epochs) (the XLS-R-LCNN recipe halves every 10 epochs).
    ``noam``: optim.lr · `noam_factor` per optimizer step (SR-LA-Res2Net; optim.lr is a multiplier, 1.0).
    ``none``: constant lr.
    """
    sched_cfg = sched_cfg or {}
    name = str(sched_cfg.get("name", "none")).lower()
    if name in ("none", "constant"):
        return None, "epoch"
    if name == "step":
        sched = torch.optim.lr_scheduler.StepLR(
            optimizer,
            step_size=int(sched_cfg.get("step_epochs", 10)),
            gamma=float(sched_cfg.get("gamma", 0.5)),
        )
        return sched, "epoch"
    if name == "noam":
        fn = _Noam(int(sched_cfg.get("d_model", 64)), int(sched_cfg.get("warmup_steps", 1000)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "step"
    raise UserError(f"config: sched.name={name!r} is not one of step, noam, none")


# ----------------------------------------------------------------------------- run bookkeeping


def git_commit(repo: Path | None = None) -> str | None:
    """The git commit of the code (with ``-dirty`` if modified), or None outside a git checkout."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device, world_size: int) -> dict[str, Any]:
    """Versions and machine facts recorded in every run folder."""
    try:
        import transformers

        tf_version: str | None = transformers.__version__
    except ImportError:
        tf_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": tf_version,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "device": str(device),
        "world_size": world_size,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


class _TensorBoard:
    """TensorBoard scalars when tensorboard is installed and this is rank 0; silent otherwise."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------- the loop


class TrainStep(nn.Module):
    """Model and loss as one module, so that DDP averages the gradients of loss parameters too."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x: (B, *input_shape) features, labels: (B,) 0 = bona fide -> scalar loss (float32)."""
        embedding, logits = self.model(x)
        # Losses (A-Softmax margins, CE) are computed in float32 even under autocast.
        with autocast_context(x.device, "none"):
            return self.loss(embedding.float(), logits.float(), labels)


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


def _loader(
    dataset: Dataset, batch_size: int, dist_info: du.DistInfo, shuffle: bool, seed: int, num_workers: int
) -> tuple[DataLoader, DistributedSampler]:
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
                f"{path}: --resume with a different '{section}' section than the checkpoint's; "
                "use the same recipe and overrides (only train.* settings may change)"
            )


def _selection_metric(select_by: str, dev_eer: float, dev_loss: float) -> float:
    return dev_eer if select_by == "dev_eer" else dev_loss


def fit(
    cfg: dict[str, Any],
    model: nn.Module,
    loss_fn: nn.Module,
    train_set: Dataset,
    dev_set: Dataset,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    dist_info: du.DistInfo | None = None,
    resume: bool = False,
    deterministic: bool = False,
    eval_set: Dataset | None = None,
    argv: Sequence[str] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int], None] | None = None,
) -> RunResult:
    """Train ``model`` with ``loss_fn`` on ``train_set``, select by dev, score eval; see the module docstring.

    ``cfg`` is the resolved recipe (``train.*``, ``optim``, ``sched`` are read here). Datasets yield
    ``(feature (C, H, W) float32, label 0/1, utt_id, attack)``. ``resume`` continues from
    ``out_dir/last.pt`` if it exists. ``on_epoch_end(epoch)`` is called after each epoch's checkpoint
    is written. Returns the best epoch, its dev EER and threshold and paths.
    """
    dist_info = dist_info or du.DistInfo()
    out = Path(out_dir)
    device = dist_info.device
    tcfg = cfg.get("train", {})
    epochs = int(tcfg.get("epochs", 1))
    grad_accum = max(1, int(tcfg.get("grad_accum", 1)))
    select_by = str(tcfg.get("select_by", "dev_eer"))
    if select_by not in ("dev_eer", "dev_loss"):
        raise UserError(f"config: train.select_by={select_by!r} is not one of dev_eer, dev_loss")
    patience = get(cfg, "train.patience")
    amp = str(tcfg.get("amp", "none")).lower()
    channels_last = bool(tcfg.get("channels_last", False))
    workers = int(tcfg.get("num_workers", 0))
    micro = micro_batch_size(int(tcfg.get("batch_size", 64)), grad_accum, dist_info.world_size)
    eval_micro = max(1, int(tcfg.get("eval_batch_size", micro)))

    last_path, best_path = out / "last.pt", out / "best.pt"
    # Every rank checks (shared file system), so that all of them stop together.
    if last_path.exists() and not resume:
        raise UserError(f"{last_path}: run folder already holds a checkpoint; pass --resume or another --out")

    seed_everything(seed + dist_info.rank, deterministic)
    model.to(device)
    loss_fn.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if bool(tcfg.get("sync_batchnorm", False)) and dist_info.distributed and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = build_optimizer(params, cfg.get("optim", {}))
    scheduler, interval = build_scheduler(optimizer, cfg.get("sched"))
    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda"))
    if amp == "fp16" and device.type != "cuda":
        raise UserError("config: train.amp=fp16 needs CUDA; use train.amp=bf16 on CPU")

    step_module: nn.Module = TrainStep(model, loss_fn)
    if dist_info.distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None
        )
    if bool(tcfg.get("compile", False)):
        from utils.compile import compile_for_training

        step_module = compile_for_training(step_module)

    # ---- state: fresh or resumed
    start_epoch, global_step = 0, 0
    best: dict[str, Any] = {
        "epoch": -1,
        "metric": math.inf,
        "dev_eer": math.nan,
        "dev_loss": math.nan,
        "threshold": math.nan,
    }
    history: list[dict[str, Any]] = []
    stopped_early = False
    if resume and last_path.exists():
        state = load_checkpoint(last_path, map_location="cpu")
        _check_resume_config(cfg, state.get("config", {}), last_path)
        unwrap(model).load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
        best = dict(state["best"])
        history = list(state.get("history", []))
        stopped_early = bool(state.get("stopped_early", False))
        rng = state.get("rng") or []
        if len(rng) == dist_info.world_size:
            set_rng_state(rng[dist_info.rank])
        else:
            seed_everything(seed + 1000 * start_epoch + dist_info.rank, deterministic)
        if dist_info.is_main:
            print(f"resuming {out} after epoch {start_epoch} (step {global_step})", file=sys.stderr)

    train_loader, train_sampler = _loader(train_set, micro, dist_info, True, seed, workers)
    dev_loader, _ = _loader(dev_set, eval_micro, dist_info, False, seed, workers)
    n_batches = len(train_loader)
    if n_batches == 0:
        raise UserError("training partition is empty")

    tb = _TensorBoard(out / "tb" if dist_info.is_main else None)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        cmd = shlex.join([sys.executable, *(sys.argv if argv is None else ["main_train.py", *argv])])
        atomic_write_text(out / "command.txt", cmd + "\n")
        atomic_write_text(
            out / "environment.json",
            json.dumps(environment_info(device, dist_info.world_size), indent=2) + "\n",
        )

    for epoch in range(start_epoch, epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        train_sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(seed * 100_003 + epoch)
        step_module.train()
        running, seen = 0.0, 0
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not (progress and dist_info.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        optimizer.zero_grad(set_to_none=True)
        lr_now = optimizer.param_groups[0]["lr"]  # logged: the lr of the epoch's last optimizer step
        for i, (x, y, _utt, _attack) in enumerate(bar):
            x = x.to(device, non_blocking=True).float()  # float16 store batches are cast here
            y = y.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            group_start = (i // grad_accum) * grad_accum
            group_size = min(grad_accum, n_batches - group_start)
            is_step = i == group_start + group_size - 1
            sync = contextlib.nullcontext()
            if dist_info.distributed and not is_step and hasattr(step_module, "no_sync"):
                sync = step_module.no_sync()
            with sync:
                with autocast_context(device, amp):
                    loss_value = step_module(x, y)
                scaler.scale(loss_value / group_size).backward()
            if is_step:
                lr_now = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                global_step += 1
                if scheduler is not None and interval == "step":
                    scheduler.step()
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
        if scheduler is not None and interval == "epoch":
            scheduler.step()
        train_sum, train_n = du.all_reduce_sum([running, float(seen)], device)
        train_loss = train_sum / max(train_n, 1.0)

        # Scored in float32: bf16 logits would round scores into ties.
        dev = gather_scores(
            score_loader(
                unwrap(model),
                loss_fn,
                dev_loader,
                device,
                channels_last=channels_last,
                with_loss=True,
                progress=progress and dist_info.is_main,
                desc="dev",
            )
        )
        dev_eer, dev_thr = dev.eer(what="dev partition")
        dev_loss = float(dev.loss) if dev.loss is not None else math.nan
        metric = _selection_metric(select_by, dev_eer, dev_loss)
        improved = metric < best["metric"]
        if improved:
            best = {
                "epoch": epoch + 1,
                "metric": metric,
                "dev_eer": dev_eer,
                "dev_loss": dev_loss,
                "threshold": dev_thr,
            }
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "dev_loss": dev_loss,
            "dev_eer": dev_eer,
            "dev_threshold": dev_thr,
            "lr": lr_now,
            "time_s": round(time.perf_counter() - t0, 3),
        }
        history.append(record)
        if patience is not None and epoch + 1 - best["epoch"] >= int(patience):
            stopped_early = True

        rng_all = du.all_gather_objects(get_rng_state())
        if dist_info.is_main:
            state = {
                "model": unwrap(model).state_dict(),
                "loss": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": rng_all,
                "epoch": epoch + 1,
                "global_step": global_step,
                "config": cfg,
                "seed": seed,
                "threshold": dev_thr,
                "dev_eer": dev_eer,
                "dev_loss": dev_loss,
                "best": best,
                "history": history,
                "stopped_early": stopped_early,
            }
            if improved:
                # best.pt first: a crash between the two writes must not leave last.pt ahead of best.pt.
                save_checkpoint(state, best_path)
                write_partition_scores(dev, out / "scores_dev.txt")
            save_checkpoint(state, last_path)
            _write_history(out / "history.csv", history)
            tb.scalars(
                {"loss/train": train_loss, "loss/dev": dev_loss, "eer/dev": dev_eer, "lr": lr_now}, epoch + 1
            )
            mark = " *" if improved else ""
            print(
                f"epoch {epoch + 1}/{epochs}: train loss {train_loss:.4f}  dev loss {dev_loss:.4f}  "
                f"dev EER {100 * dev_eer:.3f}%  lr {lr_now:.3g}  {record['time_s']:.1f}s{mark}",
                file=sys.stderr,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
        du.barrier()
    tb.close()

    result = RunResult(
        out_dir=out,
        best_epoch=int(best["epoch"]),
        best_dev_eer=float(best["dev_eer"]),
        best_dev_loss=float(best["dev_loss"]),
        threshold=float(best["threshold"]),
        best_path=best_path,
        last_path=last_path,
        epochs_done=len(history),
        history=history,
    )
    if stopped_early and dist_info.is_main:
        print(f"early stop: no dev improvement for {patience} epochs", file=sys.stderr)

    if eval_set is not None and best_path.exists():
        best_state = load_checkpoint(best_path, map_location="cpu")
        unwrap(model).load_state_dict(best_state["model"])
        loss_fn.load_state_dict(best_state["loss"])
        eval_loader, _ = _loader(eval_set, eval_micro, dist_info, False, seed, workers)
        scores = gather_scores(
            score_loader(
                unwrap(model),
                loss_fn,
                eval_loader,
                device,
                channels_last=channels_last,
                progress=progress and dist_info.is_main,
                desc="eval",
            )
        )
        result.eval_eer, _ = scores.eer(what="eval partition")
        result.eval_scores_path = out / "scores_eval.txt"
        if dist_info.is_main:
            write_partition_scores(scores, result.eval_scores_path)
    if dist_info.is_main:
        summary = {
            "best_epoch": result.best_epoch,
            "dev_eer": result.best_dev_eer,
            "dev_loss": result.best_dev_loss,
            "threshold": result.threshold,
            "eval_eer": result.eval_eer,
            "epochs_done": result.epochs_done,
            "stopped_early": stopped_early,
            "best_checkpoint": str(best_path),
            "seed": seed,
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    du.barrier()
    return result


__all__ = [
    "RunResult",
    "Scores",
    "TrainStep",
    "build_optimizer",
    "build_scheduler",
    "fit",
    "micro_batch_size",
    "noam_factor",
]
