"""Opening a partition for training or scoring: the feature store written by preprocess.py, or raw audio
with features computed on the fly, checked against the recipe's front end and model input shape."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from data import store
from data.dataset import AudioDataset, StoreDataset
from data.protocols import audio_path, load_partition
from models.frontends import build_frontend
from utils.errors import UserError

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


def open_audio_partition(
    data_root: str | os.PathLike, cfg: dict[str, Any], partition: str, frontend: Any | None = None
) -> Dataset:
    """Raw audio of ``partition`` under ``data_root`` with features computed on the fly by the recipe's
    front end (meant for F0; an SSL front end runs the SSL model in every epoch)."""

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
            raise UserError("features computed on the fly need the data root (the "
                "folder holding the protocols and audio)")
        return open_audio_partition(data_root, cfg, partition)
    if features is None:
        raise UserError("no feature store given: point to the store root written by "
            "preprocess.py, or compute features on the fly from the data root")
    return open_store_partition(features, cfg, partition)
