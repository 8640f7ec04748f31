"""Checkpoint averaging: the mean of the weights of the k best epochs (Nes2Net-X, XLSR-Mamba;
docs/systems/nes2net_x.md, docs/systems/xlsr_mamba.md), as ``avg.pt`` beside ``best.pt``.

With ``train.average: {top_k: 5, by: dev_eer | dev_loss, bn_update: true}`` the trainer offers every
epoch's weights (back end, loss and a trainable front end, as SWA averages them) to a `CheckpointAverager`:
an epoch among the ``top_k`` best so far by ``by`` is written to ``average/epoch_NNN.pt`` and the one it
pushes out is deleted once ``last.pt`` no longer lists it. The kept set (epochs and metrics) is part of
every checkpoint, so ``--resume`` continues it exactly; files of epochs that a crash left unlisted are
removed on resume. Ties keep the earlier epoch (a later epoch must be strictly better to get in).

After the last epoch the trainer loads the equal-weight mean of the kept epochs, recomputes BatchNorm
statistics over the training set (``bn_update``; off: the statistics are averaged too, as published), scores
dev, and writes ``avg.pt`` (scored like ``best.pt``) and ``scores_dev_avg.txt``; eval scores are then the
averaged model's.

For a finished run, ``python -m engine.average RUN_DIR --top-k 3 --by dev_loss`` averages a subset of the
kept epochs again into ``avg.pt`` (BatchNorm statistics averaged, no dev threshold: it reads no data).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError, run_cli

METRICS = ("dev_eer", "dev_loss")
FOLDER = "average"


@dataclass(frozen=True)
class AverageSettings:
    """``train.average``: keep the ``top_k`` best epochs by ``by``; ``bn_update``: fresh BN statistics."""

    top_k: int
    by: str
    bn_update: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AverageSettings | None:
        """The recipe's ``train.average`` section, None when absent or null; bad values -> `UserError`."""
        section = (cfg.get("train") or {}).get("average")
        return None if section is None else cls.parse(section)

    @classmethod
    def parse(cls, section: Any) -> AverageSettings:
        """``{top_k, by, bn_update}`` (defaults 5, dev_eer, true); bad values -> `UserError`."""
        if not isinstance(section, Mapping) or set(section) - {"top_k", "by", "bn_update"}:
            raise UserError(f"config: train.average must be {{top_k, by, bn_update}} or null: {section!r}")
        top_k, by = int(section.get("top_k", 5)), str(section.get("by", "dev_eer"))
        if top_k < 1 or by not in METRICS:
            raise UserError(f"config: train.average needs top_k >= 1 and by in {METRICS}: {dict(section)}")
        return cls(top_k, by, bool(section.get("bn_update", True)))


def epoch_path(out: Path, epoch: int) -> Path:
    """Where the weights of a kept ``epoch`` live in run folder ``out``."""
    return out / FOLDER / f"epoch_{epoch:03d}.pt"


def ranked(kept: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """The best ``top_k`` of ``kept`` ({"epoch", "metric"} records), best first; ties: earlier epoch."""
    return sorted(kept, key=lambda r: (r["metric"], r["epoch"]))[:top_k]


class CheckpointAverager:
    """The kept set of one run (see the module docstring); ``write`` False on non-main processes."""

    def __init__(self, settings: AverageSettings, out: Path, write: bool = True) -> None:
        self.settings, self.out, self.write = settings, Path(out), write
        self.kept: list[dict[str, Any]] = []

    def offer(
        self, epoch: int, record: Mapping[str, float], weights: Mapping[str, torch.Tensor]
    ) -> list[int]:
        """Consider ``epoch`` (1-based) with its history ``record``; save its weights when it enters the
        kept set. Returns the epochs pushed out, to `discard` once the checkpoint no longer lists them."""
        metric = float(record[self.settings.by])
        if not math.isfinite(metric):
            return []
        candidate = {"epoch": int(epoch), "metric": metric}
        new = ranked([*self.kept, candidate], self.settings.top_k)
        if candidate not in new:
            return []
        if self.write:
            save_checkpoint({"epoch": int(epoch), "model": dict(weights)}, epoch_path(self.out, epoch))
        dropped = [r["epoch"] for r in self.kept if r not in new]
        self.kept = new
        return dropped

    def discard(self, epochs: Sequence[int]) -> None:
        """Delete the weight files of ``epochs`` (no longer in the kept set)."""
        if self.write:
            for epoch in epochs:
                epoch_path(self.out, epoch).unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        return {"kept": [dict(r) for r in self.kept]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the kept set; weight files of epochs it does not list (a crash between writing one and
        the checkpoint) are removed."""
        self.kept = [{"epoch": int(r["epoch"]), "metric": float(r["metric"])} for r in state.get("kept", [])]
        listed = {epoch_path(self.out, r["epoch"]) for r in self.kept}
        if self.write and (self.out / FOLDER).is_dir():
            for path in (self.out / FOLDER).glob("epoch_*.pt"):
                if path not in listed:
                    path.unlink()

    def averaged(self, epochs: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """Mean weights of ``epochs`` (default: the kept set) read from their files."""
        chosen = [r["epoch"] for r in self.kept] if epochs is None else list(epochs)
        if not chosen:
            raise ValueError("no weights to average")
        # a running float64 sum: one epoch's weights in memory at a time (1.3 GB each when XLS-R is tuned)
        total: dict[str, torch.Tensor] = {}
        kept: dict[str, torch.Tensor] = {}  # integer tensors (num_batches_tracked): the first epoch's
        dtypes: dict[str, torch.dtype] = {}
        for epoch in chosen:
            for key, value in load_checkpoint(epoch_path(self.out, epoch))["model"].items():
                dtypes.setdefault(key, value.dtype)
                if not value.is_floating_point():
                    kept.setdefault(key, value)
                else:
                    total[key] = total[key] + value.double() if key in total else value.double()
        return {k: kept[k] if k in kept else (total[k] / len(chosen)).to(dt) for k, dt in dtypes.items()}


def average_run(run_dir: str | Path, top_k: int, by: str) -> tuple[Path, list[int]]:
    """Write ``run_dir/avg.pt`` from the ``top_k`` best kept epochs by ``by`` (history of last.pt) ->
    (path, epochs averaged). BatchNorm statistics are averaged; no threshold (no data is read)."""
    run_dir = Path(run_dir)
    if by not in METRICS:
        raise UserError(f"--by must be one of {', '.join(METRICS)}, got {by!r}")
    last = load_checkpoint(run_dir / "last.pt")
    kept = (last.get("average") or {}).get("kept") or []
    if not kept:
        raise UserError(f"{run_dir / 'last.pt'}: no kept epochs (train the run with train.average)")
    by_epoch = {int(r["epoch"]): r for r in last.get("history", [])}
    records = [{"epoch": r["epoch"], "metric": float(by_epoch[r["epoch"]][by])} for r in kept]
    chosen = [r["epoch"] for r in ranked(records, top_k)]
    missing = [str(epoch_path(run_dir, e)) for e in chosen if not epoch_path(run_dir, e).is_file()]
    if missing:
        raise UserError(f"{missing[0]}: weights of a kept epoch are missing")
    averager = CheckpointAverager(AverageSettings(top_k, by), run_dir, write=False)
    weights = averager.averaged(chosen)
    state = {key: last[key] for key in ("config", "seed", "history") if key in last}
    model = {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
    loss = {k.removeprefix("loss."): v for k, v in weights.items() if k.startswith("loss.")}
    frontend = {k.removeprefix("frontend."): v for k, v in weights.items() if k.startswith("frontend.")}
    state.update(model=model, loss=loss, epoch=max(chosen), averaged_epochs=chosen,
                 best={"epoch": max(chosen), "threshold": math.nan})
    if frontend:
        state.update(frontend_state=frontend, frontend_settings=last.get("frontend_settings"))
    elif "frontend_sha256" in last:
        state["frontend_sha256"] = last["frontend_sha256"]
    save_checkpoint(state, run_dir / "avg.pt")
    return run_dir / "avg.pt", chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.average",
        description="Average the weights of the best kept epochs of a finished run (trained with "
        "train.average) into RUN_DIR/avg.pt. BatchNorm statistics are averaged too; train with "
        "train.average.bn_update for fresh ones and a dev threshold.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--by", default="dev_eer", choices=METRICS)
    args = parser.parse_args(argv)
    path, chosen = average_run(args.run_dir, args.top_k, args.by)
    print(f"wrote {path}: mean of epochs {', '.join(map(str, chosen))} (best {args.by} first)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
