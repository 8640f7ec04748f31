"""Opening a partition for training or scoring: the feature store written by preprocess.py, raw audio
with features computed on the fly, or raw waves (see `input_mode`), checked against the recipe's front
end and model input shape.

Only the training partition (``training=True``) is augmented, when the recipe has an active ``augment:``
section (data/augment); its seeds come from (run seed, epoch, utterance index): the trainer calls
``set_epoch(epoch, seed=run seed)`` on the training dataset before every epoch."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from data import store
from data.corpora import Corpus, default_corpus, get_corpus, recipe_corpus
from data.dataset import AudioDataset, StoreDataset
from data.mixture import MixtureDataset
from data.waveform_dataset import SCORE_CROPS, WaveformDataset
from models.frontends import FrontEnd, build_frontend
from models.frontends.base import store_tag
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


def store_dir_for(
    features: str | os.PathLike,
    frontend_cfg: dict[str, Any],
    partition: str,
    corpus: Corpus | str | None = None,
) -> Path:
    """The preprocess.py store of ``partition`` of ``corpus`` (default: the default corpus) for the front end
    ``frontend_cfg`` under ``features``, or ``features`` itself when it already is one store."""
    root = Path(features)
    if any(root.glob("shard-*.meta.json")):
        return root
    corpus = default_corpus() if corpus is None else get_corpus(corpus)
    return store.store_dir(root, store_tag(frontend_cfg), corpus.store_name(partition))


def open_store_partition(features: str | os.PathLike, cfg: dict[str, Any], partition: str) -> Dataset:
    """The store of ``partition`` for the recipe's front end, checked against the recipe.

    Missing stores, other front-end settings or a feature shape that is not the model's input shape
    raise a one-line `UserError` naming the store.
    """
    store = store_dir_for(features, cfg["frontend"], partition, recipe_corpus(cfg))
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
    data_root: str | os.PathLike | None,
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
    rows = recipe_corpus(cfg).read(data_root, partition)
    frontend = frontend or build_frontend(cfg["frontend"])
    check_feature_shape(cfg["model"]["input_shape"], frontend.feature_shape, f"front end {frontend.name}")
    augmenter = train_augmenter(cfg) if augment_seed is not None else None
    return AudioDataset(rows, None, frontend, augment=augmenter, augment_seed=augment_seed or 0)


def open_partition(
    cfg: dict[str, Any],
    partition: str,
    *,
    features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    on_the_fly: bool = False,
    training: bool = False,
    augment_seed: int | None = None,
) -> Dataset:
    """A partition's dataset: from the feature store under ``features``, or (``on_the_fly``) raw audio
    under ``data_root``; raw waves under ``data_root`` for the waveform and fine-tuning modes of
    `input_mode`. ``training``: the training partition, with the recipe's crop and augmentation
    (``augment_seed``, if given, implies it and sets the run seed before the trainer does); a store cannot
    be augmented, so an active ``augment:`` section with a store is a `UserError` naming the key."""
    training = training or augment_seed is not None
    no_root = data_root is None and recipe_corpus(cfg).needs_root  # manifests name their audio files
    if input_mode(cfg) != FEATURES:
        if no_root:
            raise UserError(
                f"the '{cfg['frontend'].get('name')}' front end of this recipe reads raw audio: "
                "give the data root (the folder holding the protocols and audio) or --manifest PART=FILE"
            )
        return open_waveform_partition(data_root, cfg, partition, training=training)
    if on_the_fly:
        if no_root:
            raise UserError("features computed on the fly need the data root (the "
                "folder holding the protocols and audio) or --manifest PART=FILE")
        seed = (augment_seed or 0) if training else None
        return open_audio_partition(data_root, cfg, partition, augment_seed=seed)
    if features is None:
        raise UserError("no feature store given: point to the store root written by "
            "preprocess.py, or compute features on the fly from the data root")
    if training and train_augmenter(cfg) is not None:
        raise UserError(
            f"augment: augmentation changes the audio, so features must be computed from it while "
            f"training, not read from the feature store {features}; train from audio (on the fly) "
            f"or drop the recipe's augment section"
        )
    return open_store_partition(features, cfg, partition)


def open_sources(
    cfg: dict[str, Any],
    partition: str | Sequence[Mapping[str, Any]],
    *,
    key: str = "train",
    features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    on_the_fly: bool = False,
    training: bool = False,
) -> Dataset:
    """``data.<key>``'s dataset: `open_partition` of one partition's name, or for a list of sources
    (`engine.recipe_schema.data_sources`) a `data.mixture.MixtureDataset` of each source's
    `open_partition` with the source's ``data`` keys over the recipe's and its ``root`` (if given) as the
    data root. Utterance ids must be unique across the sources: dev scores are told apart by them."""
    where = {"features": features, "on_the_fly": on_the_fly, "training": training}
    if isinstance(partition, str):
        return open_partition(cfg, partition, data_root=data_root, **where)
    from engine.recipe_schema import data_sources

    sources = data_sources({**cfg["data"], key: partition}, key)
    parts = []
    for source in sources:
        source_cfg = {**cfg, "data": {**cfg["data"], **source.data}}
        root = source.root if source.root is not None else data_root
        parts.append(open_partition(source_cfg, source.partition, data_root=root, **where))
    _check_unique_utterances(parts, [s.name for s in sources], key)
    return MixtureDataset(parts, [s.name for s in sources], [s.weight for s in sources])


def _check_unique_utterances(parts: Sequence[Dataset], names: Sequence[str], key: str) -> None:
    """`UserError` when two sources share an utterance id (datasets with protocol ``rows``)."""
    seen: dict[str, str] = {}
    for name, part in zip(names, parts, strict=True):
        for row in getattr(part, "rows", ()):
            other = seen.setdefault(row.utt_id, name)
            if other != name:
                raise UserError(f"config: data.{key}: sources '{other}' and '{name}' both hold utterance "
                                f"{row.utt_id}; list each utterance in one source only")


# ----------------------------------------------------------------------------- input modes
# How a recipe's inputs reach the model:
#   features  (default)                  front-end features (store or on the fly) -> model
#                                        (XLS-R-LCNN, SR-LA-Res2Net)
#   waveform  frontend: {name: waveform}  raw waves of n_samples -> model (AASIST, AASIST-L)
#   finetune  frontend.trainable: true    raw waves -> countermeasure, whose front end is trained with
#                                        the model (XLS-R-AASIST); built by `training_frontend`
FEATURES, WAVEFORM, FINETUNE = "features", "waveform", "finetune"
#: The recipe's ``data.train_crop`` choices (`data.waveform_dataset.WaveformDataset`); dev/eval use ``first``.
DEFAULT_TRAIN_CROP = "first"
#: ``data.score_crop`` when a recipe has none: scored on the training input, the first ``n_samples``.
DEFAULT_SCORE_CROP = "first"


def _score_crops_by_corpus(values: Any) -> dict[str, Any]:
    """``data.score_crop_by_dataset`` keyed by registered corpus names (None: empty); `UserError` naming
    the key for anything else or an unknown corpus."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"data.score_crop_by_dataset: expected a mapping corpus -> crop, got {values!r}")
    try:
        return {get_corpus(name).name: crop for name, crop in values.items()}
    except UserError as exc:  # the message lists the known corpora
        raise UserError(f"data.score_crop_by_dataset: {exc}") from None


def score_crop(
    cfg: dict[str, Any], dataset: str | None = None, override: str | None = None
) -> tuple[str, str]:
    """(crop, the key that chose it) for scoring ``dataset`` (default: the recipe's) with a checkpoint of
    recipe ``cfg``: ``override`` (generate_score.py ``--crop``), else ``data.score_crop_by_dataset``'s entry
    for the corpus, else ``data.score_crop`` (default ``first``). A crop or corpus name that is not one
    raises `UserError` naming the key (checkpoint configs are not checked again when loaded)."""
    data = cfg.get("data") or {}
    crop, key = data.get("score_crop", DEFAULT_SCORE_CROP), "data.score_crop"
    by_dataset = _score_crops_by_corpus(data.get("score_crop_by_dataset"))
    if override is not None:
        crop, key = override, "--crop"
    elif by_dataset:  # the corpus is only looked up when the recipe names some
        name = get_corpus(dataset).name if dataset is not None else recipe_corpus(cfg).name
        if name in by_dataset:
            crop, key = by_dataset[name], f"data.score_crop_by_dataset.{name}"
    if crop not in SCORE_CROPS:
        raise UserError(f"{key}: {crop!r} is not one of {', '.join(SCORE_CROPS)}")
    return str(crop), key


def input_mode(cfg: dict[str, Any]) -> str:
    """``features``, ``waveform`` or ``finetune`` (see the table above) from the recipe's front end."""
    frontend = cfg.get("frontend") or {}
    if frontend.get("name") == "waveform":
        return WAVEFORM
    if frontend.get("trainable"):
        return FINETUNE
    return FEATURES


def waveform_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``waveform`` front end that turns audio into this recipe's model input in the waveform and
    fine-tuning modes (first ``frontend.n_samples`` samples, tiled): used to score by windows."""
    return {"name": "waveform", "n_samples": int(cfg["frontend"].get("n_samples", 64600))}


def waveform_input_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """The recipe as its countermeasure takes raw waves when the SSL front end runs inside it (fine-tuned):
    the ``waveform`` front end (`waveform_settings`) and a model input of (n_samples,)."""
    waveform = waveform_settings(cfg)
    return {**cfg, "frontend": waveform, "model": {**cfg["model"], "input_shape": [waveform["n_samples"]]}}


def scoring_batch(data: Dataset, batch_size: int) -> int:
    """Utterances per scoring batch of ``data``: ``batch_size``, or 1 for whole utterances (``full``: their
    lengths differ, and scores then do not depend on the batch size)."""
    return 1 if getattr(data, "crop", None) == "full" else batch_size


def _fits_frontend(input_shape: Sequence[int], frontend: FrontEnd) -> bool:
    """A model input shape of (frames, hidden) also fits SSL features laid out as (1, hidden, frames)."""
    shape, feat = tuple(int(v) for v in input_shape), tuple(frontend.feature_shape)
    return shape == feat or (len(feat) == 3 and feat[0] == 1 and shape == (feat[2], feat[1]))


def open_waveform_partition(
    data_root: str | os.PathLike | None, cfg: dict[str, Any], partition: str, *, training: bool = False,
    crop: str = "first", min_samples: int = 1,
) -> WaveformDataset:
    """Raw waves of ``partition`` cut to ``frontend.n_samples``: the first samples (tiled), or for the
    training partition ``data.train_crop`` (``first`` | ``random``) after the recipe's ``augment``
    section (RawBoost on the whole utterance; dev and eval stay un-augmented). ``crop`` (not training):
    ``first``, or ``full``: whole utterances, those under ``min_samples`` tiled up to it (`score_crop`)."""
    rows = recipe_corpus(cfg).read(data_root, partition)
    n_samples = waveform_settings(cfg)["n_samples"]
    if input_mode(cfg) == WAVEFORM:
        check_feature_shape(cfg["model"]["input_shape"], (n_samples,), "front end waveform")
    augment = None
    if training:
        from data.augment import Augmenter  # PyAV: only when a training partition is opened

        crop = str((cfg.get("data") or {}).get("train_crop", DEFAULT_TRAIN_CROP))
        augmenter = Augmenter.from_config(cfg.get("augment"), key="augment")
        augment = augmenter.apply if augmenter.active else None
    return WaveformDataset(rows, None, n_samples, crop=crop, augment=augment, min_samples=min_samples)


def training_frontend(cfg: dict[str, Any], device: torch.device | str | None = None) -> FrontEnd | None:
    """The front end to train inside the countermeasure (``finetune`` mode), built on ``device`` and
    checked against the model's ``input_shape``; None in the other modes."""
    if input_mode(cfg) != FINETUNE:
        return None
    frontend = build_frontend(cfg["frontend"], device)
    if not _fits_frontend(cfg["model"]["input_shape"], frontend):
        raise UserError(
            f"config: model.input_shape {list(cfg['model']['input_shape'])} does not fit the front end's "
            f"output {list(frontend.feature_shape)} (use (frames, hidden) or (1, hidden, frames))"
        )
    return frontend
