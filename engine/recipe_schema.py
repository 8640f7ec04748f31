"""What keys a recipe (configs/*.yaml) can have: every section, key, type, default and meaning.

`load_recipe` loads a recipe with ``section.key=value`` overrides and checks it against `RECIPE`: a key that
is not listed here, or a value of the wrong type, is a one-line error naming the file and line (or the
override) and the nearest valid key. Any key listed here can be set by override on any recipe, also when
the YAML lacks it; a key the YAML lacks takes the default below, which is what its reader uses.

Sections:

- ``frontend``, ``model``, ``loss``: ``name`` chooses a registered class; the other keys are that class's
  constructor parameters (models/frontends, models/registry.py, models/losses.py), so a new back end or
  loss brings its own keys. ``python -m engine.recipe_schema`` lists them for every registered class.
- ``optim``, ``sched``, ``train``, ``data``: the dataclasses below (read by engine/optim.py,
  engine/trainer.py, engine/partitions.py, engine/scorer.py, main_train.py).
- ``augment`` (optional, off when absent): checked by data/augment (`Augmenter.from_config`).

The resolved recipe stays a plain dict: defaults are not written into it, so a run's config.yaml shows
what the recipe and the command line said. Configs saved inside checkpoints are not checked again when
they are scored: the builders check the ``frontend``/``model``/``loss`` sections they use, and older runs
keep loading even if a ``train`` key is renamed later.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import yaml

from data.waveform_dataset import SCORE_CROPS, TRAIN_CROPS
from models.frontends import FRONTEND_SECTION
from models.losses import LOSS_SECTION
from models.registry import MODEL_SECTION
from utils.config import load_config
from utils.errors import run_cli
from utils.schema import (
    Field,
    Schema,
    Section,
    SettingError,
    check_section,
    dataclass_fields,
    describe,
    section_of,
    setting,
)

#: ``optim.name`` and ``sched.name`` values (engine/optim.py; compared lower-cased, as it does).
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("step", "noam", "cosine", "none", "constant")


@dataclass(frozen=True)
class OptimSection:
    """The optimizer (engine/optim.py `build_optimizer`)."""

    name: str = setting("adam", "adam, adamw or sgd", choices=OPTIMIZERS, ignore_case=True)
    lr: float = setting(1e-3, "learning rate; with sched.name=noam a multiplier of the Noam factor")
    betas: Sequence[float] = setting((0.9, 0.999), "Adam/AdamW (beta1, beta2)")
    eps: float = setting(1e-8, "Adam/AdamW epsilon")
    weight_decay: float = setting(0.0, "L2 penalty (Adam) or decoupled decay (AdamW)")
    amsgrad: bool = setting(False, "Adam/AdamW AMSGrad variant")
    momentum: float = setting(0.9, "SGD momentum")


@dataclass(frozen=True)
class SchedSection:
    """The learning-rate schedule (engine/optim.py `build_scheduler`)."""

    name: str = setting("none", "step (per epoch), noam or cosine (per optimizer step), none/constant",
                        choices=SCHEDULES, ignore_case=True)
    step_epochs: int = setting(10, "step: multiply the lr by gamma every this many epochs")
    gamma: float = setting(0.5, "step: the factor")
    d_model: int = setting(64, "noam: d in d^-0.5 * min(step^-0.5, step * warmup^-1.5)")
    warmup_steps: int = setting(1000, "noam: optimizer steps of warm-up")
    min_ratio: float = setting(0.05, "cosine: final lr as a fraction of optim.lr")


@dataclass(frozen=True)
class TrainSection:
    """The training loop (engine/trainer.py `TrainSettings.from_config`)."""

    epochs: int = setting(1, "epochs to train")
    batch_size: int = setting(64, "global batch per optimizer step (split over processes and grad_accum)")
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    eval_batch_size: int | None = setting(None, "per-process dev/eval batch (null: the micro-batch)")
    select_by: str = setting("dev_eer", "best.pt: the lowest of these", choices=("dev_eer", "dev_loss"))
    patience: int | None = setting(None, "stop after this many epochs without improvement (null: never)")
    amp: str | None = setting("auto", "autocast: auto, none (fp32), bf16 or fp16 (utils/precision.py)")
    channels_last: bool | str | None = setting("auto", "auto (where measured faster), true or false")
    fused_adam: bool | str | None = setting("auto", "fused Adam kernel: auto, true or false")
    compile: bool | str | None = setting("auto", "torch.compile: auto (when it repays), true or false")
    sync_batchnorm: bool = setting(False, "synchronise BatchNorm statistics over processes (CUDA DDP)")
    num_workers: int = setting(0, "DataLoader worker processes")
    calibrate: bool = setting(False, "fit a score-to-LLR calibration on dev into best.pt")
    swa: bool = setting(False, "average the weights of every epoch as good as the best (swa.pt)")
    average: Mapping[str, Any] | None = setting(
        None, "checkpoint averaging {top_k: 5, by: dev_eer|dev_loss, bn_update: true} -> avg.pt (null: off)")
    grad_checkpoint: bool = setting(False, "recompute a fine-tuned SSL front end's activations in backward")
    find_unused_parameters: bool | None = setting(None, "DDP's find_unused_parameters (null: per model)")
    draws_per_epoch: int | None = setting(
        None, "items drawn per epoch from the data.train sources by weight (null: the sum of their sizes)")


@dataclass(frozen=True)
class SourceSection:
    """A source in a list in data.train or data.dev; any other data key (e.g. train_crop) is its own."""

    partition: str = setting("train", "the partition of the source's corpus")
    dataset: str | None = setting(None, "the source's corpus (null: data.dataset)")
    weight: float = setting(1.0, "train: draw weight, > 0 (draws per epoch are proportional to it)")
    root: str | None = setting(None, "the source's data root for raw-audio modes (null: --data-root)")
    name: str | None = setting(None, "the source's name in history.csv, logs (null: <dataset>-<partition>)")


#: The ``data`` keys a source cannot set (they choose the sources), and the keys only a source has.
_NOT_IN_SOURCE = ("train", "dev", "eval")
_SOURCE_FIELDS = dataclass_fields(SourceSection)
_SOURCE_ONLY = ("partition", "weight", "root", "name")


def source_fields() -> dict[str, Field]:
    """The keys of a source: `SourceSection`'s (``partition`` required) and every other `DataSection` key."""
    data = {k: f for k, f in dataclass_fields(DataSection).items() if k not in _NOT_IN_SOURCE}
    return {**data, **_SOURCE_FIELDS, "partition": replace(_SOURCE_FIELDS["partition"], required=True)}


def source_section() -> Section:
    """One source's keys as a section (checked like the recipe's sections)."""
    fields = source_fields()
    return Section(fields=lambda _values: fields, doc=SourceSection.__doc__ or "")


@dataclass(frozen=True)
class DataSource:
    """One source of a list in ``data.train``/``data.dev``, its defaults filled in: ``data`` holds the
    `DataSection` keys it sets (merged over the recipe's ``data`` section to open it)."""

    name: str
    partition: str
    weight: float
    root: str | None
    data: dict[str, Any]


def data_sources(data: Mapping[str, Any], key: str) -> list[DataSource]:
    """The sources listed in ``data[key]`` (a list of mappings, already checked by `check_sources`)."""
    out = []
    for entry in data[key]:
        dataset = entry.get("dataset") or data.get("dataset", DataSection.dataset)
        partition = str(entry["partition"])
        name = entry.get("name") or f"{dataset}-{partition}"
        rest = {**{k: v for k, v in entry.items() if k not in _SOURCE_ONLY}, "dataset": dataset}
        out.append(DataSource(str(name), partition, float(entry.get("weight", SourceSection.weight)),
                              entry.get("root"), rest))
    return out


def check_sources(value: Any, key: str, data: Mapping[str, Any]) -> None:
    """A list of sources at ``key`` (``data.train``): one `SourceSection` mapping per entry, at least one,
    weights > 0, distinct names; a plain string (one partition) passes."""
    if isinstance(value, str):
        return
    if not value:
        raise SettingError(key, f"{key!r} must name a partition or list at least one source")
    section = source_section()
    names: dict[str, int] = {}
    for i, entry in enumerate(value):
        check_section(entry, section, f"{key}[{i}]")
        weight = entry.get("weight", SourceSection.weight)
        if not 0 < weight < math.inf:
            where = f"{key}[{i}].weight"
            raise SettingError(where, f"{where!r} must be > 0 and finite, got {weight!r}")
    for i, source in enumerate(data_sources({**data, key: value}, key)):
        if source.name in names:
            where = f"{key}[{i}].name" if "name" in value[i] else f"{key}[{i}]"
            raise SettingError(where, f"{key}[{i}]: duplicate source name {source.name!r} (also "
                               f"{key}[{names[source.name]}]); give each source its own 'name'")
        names[source.name] = i


#: ``data.train`` and ``data.dev``: one partition's name, or a list of sources.
PartitionOrSources = str | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class DataSection:
    """Which corpus and partitions (engine/partitions.py, main_train.py); a new key is one more field."""

    dataset: str = setting("la2019", "the corpus of the partitions (a name in data/corpora)")
    manifests: Mapping[str, str] | None = setting(
        None, "dataset manifest: {partition: CSV/TSV file} of your recordings (docs/data.md; null: none)")
    train: PartitionOrSources = setting(
        "train", "training partition, or a list of sources {dataset, partition, weight, root, name}",
        check=check_sources)
    dev: PartitionOrSources = setting(
        "dev", "dev partition (selection, threshold, calibration), or a list of sources", check=check_sources)
    eval: str | None = setting(None, "partition scored after training (null: none)")
    train_crop: str = setting("first", "raw-wave recipes: first or random window per epoch",
                              choices=TRAIN_CROPS)
    score_crop: str = setting(
        "first", "raw-wave recipes scored with a checkpoint (generate_score.py --data-root, "
        "engine.cross_corpus, main_train.py's eval scores): first (frontend.n_samples samples, tiled) or "
        "full (whole utterance, for back ends taking any length)",
        choices=SCORE_CROPS)
    score_crop_by_dataset: Mapping[str, Literal["first", "full"]] | None = setting(
        None, "score_crop per corpus, over score_crop, e.g. {itw: full} (null: none)")


def _check_augment(values: Any, key: str) -> None:
    """The ``augment`` section, by the augmentation's own reader (its messages name the key)."""
    if values is None:
        return
    from data.augment import Augmenter  # PyAV and scipy: only for recipes that augment

    Augmenter.from_config(values, key=key)


#: Every top-level key of a recipe.
RECIPE: Schema = {
    "name": Field("name", str | None, None, "the recipe's name (run names come from the file name)"),
    "frontend": FRONTEND_SECTION,
    "model": MODEL_SECTION,
    "loss": LOSS_SECTION,
    "optim": section_of(OptimSection),
    "sched": section_of(SchedSection),
    "train": section_of(TrainSection),
    "data": section_of(DataSection),
    "augment": Section(check=_check_augment, doc="waveform augmentation (data/augment; off when absent)"),
}


def load_recipe(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load the recipe at ``path`` with ``section.key=value`` overrides, checked against `RECIPE`."""
    return load_config(path, overrides, schema=RECIPE)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engine.recipe_schema``: every key a recipe can have; with a recipe (and overrides):
    the checked, resolved recipe as YAML."""
    parser = argparse.ArgumentParser(prog="python -m engine.recipe_schema", description=main.__doc__)
    parser.add_argument("config", nargs="?", help="recipe YAML to check and print, e.g. configs/aasist.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    if args.config is None:
        print("\n".join(describe({**RECIPE, "data.train[i]": source_section()})))
        return 0
    cfg = load_recipe(args.config, args.overrides)
    print(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
