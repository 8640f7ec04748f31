"""Opening a partition for training or scoring: the feature store written by preprocess.py, or raw audio
with features computed on the fly, checked against the recipe's front end and model input shape.

The training partition (only it) is augmented when the recipe has an active ``augment:`` section
(data/augment): `open_partition(..., augment_seed=run_seed)`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from data import store
from data.dataset import AudioDataset, StoreDataset
from data.protocols import audio_path, load_partition
from models.frontends import build_frontend
from utils.errors import UserError

if TYPE_CHECKING:
    from data.augment import Augmenter

#: Front-end settings that change only how features are computed, not what they are.
_COMPUTE_ONLY_SETTINGS = {"batch_size", "dtype", "device"}


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
    root = Path(features)
    if any(root.glob("shard-*.meta.json")):
        return root
    return store.store_dir_for(root, frontend_cfg, partition, dataset)


def open_store_partition(features: str | os.PathLike, cfg: dict[str, Any], partition: str) -> Dataset:
    """The store of ``partition`` for the recipe's front end, checked against the recipe.

    Missing stores, other front-end settings or a feature shape that is not the model's input shape
    raise a one-line `UserError` naming the store.
    """
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


def train_augmenter(cfg: dict[str, Any]) -> Augmenter | None:
    """The recipe's augmentation (``augment:`` section) when it can change a waveform, else None.

    A bad section raises `UserError` naming the key (``augment.rawboost.algo: ...``).
    """
    if cfg.get("augment") is None:
        return None
    from data.augment import Augmenter  # PyAV and scipy: only for recipes that augment

    augmenter = Augmenter.from_config(cfg["augment"], key="augment")
    return augmenter if augmenter.active else None


def open_audio_partition(
    data_root: str | os.PathLike,
    cfg: dict[str, Any],
    partition: str,
    frontend: Any | None = None,
    augment_seed: int | None = None,
) -> Dataset:
    """Raw audio of ``partition`` under ``data_root`` with features computed on the fly by the recipe's
    front end (meant for F0; an SSL front end runs the SSL model in every epoch).

    ``augment_seed``: the run seed when this is the training partition; the recipe's augmentation, if
    any, then runs between loading and the front end. None (dev, eval, scoring): never augmented.
    """

    dataset_name = recipe_dataset(cfg)
    rows = load_partition(data_root, partition, dataset_name)
    frontend = frontend or build_frontend(cfg["frontend"])
    check_feature_shape(cfg["model"]["input_shape"], frontend.feature_shape, f"front end {frontend.name}")
    augmenter = train_augmenter(cfg) if augment_seed is not None else None

    def path_fn(utt_id: str) -> Path:
        return audio_path(data_root, partition, utt_id, dataset_name)

    return AudioDataset(rows, path_fn, frontend, augment=augmenter, augment_seed=augment_seed or 0)


def open_partition(
    cfg: dict[str, Any],
    partition: str,
    *,
    features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    on_the_fly: bool = False,
    augment_seed: int | None = None,
) -> Dataset:
    """A partition's dataset: from the feature store under ``features``, or (``on_the_fly``) raw audio
    under ``data_root``. ``augment_seed``: the run seed, given for the training partition only (see
    `open_audio_partition`); a store cannot be augmented, so an active ``augment:`` section with a store
    is a `UserError` naming the key."""
    if on_the_fly:
        if data_root is None:
            raise UserError("features computed on the fly need the data root (the "
                "folder holding the protocols and audio)")
        return open_audio_partition(data_root, cfg, partition, augment_seed=augment_seed)
    if features is None:
        raise UserError("no feature store given: point to the store root written by "
            "preprocess.py, or compute features on the fly from the data root")
    if augment_seed is not None and train_augmenter(cfg) is not None:
        raise UserError(
            f"augment: augmentation changes the audio, so features must be computed from it while "
            f"training, not read from the feature store {features}; train from audio (on the fly) "
            f"or drop the recipe's augment section"
        )
    return open_store_partition(features, cfg, partition)
