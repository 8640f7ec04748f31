"""Model packages: a trained countermeasure as one self-contained folder, laid out as a Hugging Face model
repository, so that the same folder can be scored locally or uploaded and fetched by hub id.

    config.json        what the model is and how to use it: the recipe it was trained with (front end,
                       model, loss, ...), input length, score definition, decision threshold and what it
                       is, calibration, where the front end's weights are, the run's results
    model.safetensors  the weights: back end under ``model.``, loss under ``loss.``, front end under
                       ``frontend.`` when it was fine-tuned or included on request; a frozen pretrained
                       front end is otherwise named in config.json by model id and content hash
    README.md          the model card (`models.model_card`)

`write_package` writes one (atomically: a temporary folder renamed into place), `read_package` reads it
back (config.json is authoritative; the weights file's metadata holds the format tag only) and
`locate_model` finds a package given as a folder or as a hub id ``org/name`` (downloaded into the
Hugging Face cache; ``HF_HUB_OFFLINE=1`` honoured).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from utils.errors import UserError
from utils.io import atomic_dir

PACKAGE_FORMAT = "asvspoof-toolkit-package/1"
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
MODEL_PREFIX, LOSS_PREFIX, FRONTEND_PREFIX = "model.", "loss.", "frontend."
#: An ONNX export (`engine.export`) in a package folder, and the metadata key holding its config.json.
ONNX_NAME, ONNX_METADATA_KEY = "model.onnx", "asvspoof_package"
SAMPLE_RATE = 16000

#: Where a package's front end weights are: fine-tuned with the model (``trained``), a frozen pretrained
#: model copied in (``included``), named by id and content hash (``reference``), or none (F0, waveform).
FRONTEND_WEIGHTS = ("trained", "included", "reference", "none")

#: What each score definition of `models.losses` means, for config.json and the model card.
SCORE_DEFINITIONS = {
    "logit_diff": "logit(bona fide) - logit(spoof) of the output layer",
    "raw_logit": "the bona fide logit of the output layer (as the released model scored)",
    "a_softmax": "||x|| (cos theta_bonafide - cos theta_spoof) of the A-Softmax layer",
    "oc_softmax": "cosine similarity of the embedding with the learned bona fide direction",
}

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass
class TrainedWeights:
    """What a trained model file holds, whatever its kind (checkpoint, weights file, package).

    ``config``: the recipe (at least ``frontend``, ``model``, ``loss``). ``frontend_state``: front end
    weights with ``frontend_settings`` to rebuild it; ``frontend_frozen``: those weights are a frozen
    pretrained model (not fine-tuned). ``frontend_sha256``: content hash of a frozen pretrained front end
    (`models.frontends.base.FrontEnd.content_hash`). ``threshold``: the dev-EER threshold on raw scores;
    ``calibration``: `utils.calibration.Calibration.as_dict` plus ``dev_scores``; ``source``: where the
    weights came from (file, sha256, kind)."""

    config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    loss_state: dict[str, torch.Tensor] = field(default_factory=dict)
    frontend_state: dict[str, torch.Tensor] | None = None
    frontend_settings: dict[str, Any] | None = None
    frontend_frozen: bool = False
    frontend_sha256: str | None = None
    threshold: float | None = None
    calibration: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def frontend_weights(self) -> str:
        """One of `FRONTEND_WEIGHTS`; a front end built from a pretrained ``model`` is a reference."""
        if self.frontend_state is not None:
            return "included" if self.frontend_frozen else "trained"
        pretrained = self.frontend_sha256 is not None or "model" in (self.config.get("frontend") or {})
        return "reference" if pretrained else "none"


def score_name(loss_cfg: dict[str, Any]) -> str:
    """The key of `SCORE_DEFINITIONS` for a recipe's ``loss`` section."""
    name = str(loss_cfg.get("name", ""))
    if name in ("asoftmax", "a_softmax"):
        return "a_softmax"
    if name == "ocsoftmax":
        return "oc_softmax"
    return str(loss_cfg.get("score", "logit_diff"))


def is_package(path: str | os.PathLike) -> bool:
    """True for a folder holding a package's config.json."""
    return (Path(path) / CONFIG_NAME).is_file()


def package_config(weights: TrainedWeights, results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config.json of a package of ``weights`` (``results``: the run's numbers, e.g. dev/eval EER)."""
    cfg = weights.config
    n_samples = int(cfg["frontend"].get("max_samples", cfg["frontend"].get("n_samples", 64600)))
    score = score_name(cfg["loss"])
    frontend: dict[str, Any] = {"weights": weights.frontend_weights(), "name": cfg["frontend"]["name"]}
    if frontend["weights"] in ("reference", "included"):
        frontend.update(model=cfg["frontend"].get("model"), content_hash=weights.frontend_sha256)
    if weights.frontend_settings is not None:
        frontend["settings"] = weights.frontend_settings
    threshold = None
    if weights.threshold is not None and math.isfinite(weights.threshold):
        threshold = {"value": float(weights.threshold), "kind": "dev_eer",
                     "meaning": "equal error rate threshold on the development scores: score >= value -> "
                     "bona fide, else spoof (raw scores, not LLRs)"}
    return {
        "format": PACKAGE_FORMAT,
        "name": str(cfg.get("name") or "countermeasure"),
        "config": cfg,
        "input": {"sample_rate": SAMPLE_RATE, "channels": 1, "n_samples": n_samples,
                  "seconds": n_samples / SAMPLE_RATE,
                  "longer": "scored by windows of n_samples every n_samples/2, window scores averaged",
                  "shorter": "tiled to n_samples"},
        "score": {"definition": SCORE_DEFINITIONS.get(score, score), "name": score,
                  "higher": "more bona fide"},
        "threshold": threshold,
        "calibration": weights.calibration,
        "frontend": frontend,
        "source": weights.source,
        "results": results or {},
    }


def write_package(
    out_dir: str | os.PathLike, weights: TrainedWeights, config: dict[str, Any], card: str
) -> Path:
    """Write config.json (``config``, from `package_config`), model.safetensors and README.md (``card``)
    into ``out_dir``, which must not exist or be empty; nothing is left there on failure."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    tensors = {MODEL_PREFIX + k: v for k, v in weights.model_state.items()}
    tensors.update({LOSS_PREFIX + k: v for k, v in weights.loss_state.items()})
    tensors.update({FRONTEND_PREFIX + k: v for k, v in (weights.frontend_state or {}).items()})
    # safetensors refuses views and shared storage
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_dir(out) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": PACKAGE_FORMAT})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / CARD_NAME).write_text(card)
    return out




def read_package(path: str | os.PathLike) -> tuple[TrainedWeights, dict[str, Any]]:
    """(weights, config.json) of the package folder ``path``; a damaged or foreign one -> `UserError`."""
    from safetensors import SafetensorError, safe_open

    folder = Path(path)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder / CONFIG_NAME}: cannot read the package config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != PACKAGE_FORMAT:
        raise UserError(f"{folder / CONFIG_NAME}: not a model package of this toolkit ('{PACKAGE_FORMAT}')")
    try:
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt", device="cpu") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{folder / WEIGHTS_NAME}: cannot read the package weights ({exc})") from None
    frontend = config.get("frontend") or {}
    kind = frontend.get("weights", "none")
    if kind not in FRONTEND_WEIGHTS:
        raise UserError(f"{folder / CONFIG_NAME}: frontend.weights {kind!r} is not one of {FRONTEND_WEIGHTS}")
    has_frontend = kind in ("trained", "included")
    threshold = (config.get("threshold") or {}).get("value")
    weights = TrainedWeights(
        config=dict(config.get("config") or {}),
        model_state=_under(tensors, MODEL_PREFIX),
        loss_state=_under(tensors, LOSS_PREFIX),
        frontend_state=_under(tensors, FRONTEND_PREFIX) if has_frontend else None,
        frontend_settings=frontend.get("settings") if has_frontend else None,
        frontend_frozen=kind == "included",
        frontend_sha256=frontend.get("content_hash"),
        threshold=float(threshold) if threshold is not None else None,
        calibration=config.get("calibration"),
        source=dict(config.get("source") or {}),
    )
    return weights, config


def _under(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def looks_like_hub_id(spec: str) -> bool:
    """``org/name`` (no file suffix of ours, not an existing path): a Hugging Face model id."""
    return bool(_HUB_ID.fullmatch(spec)) and not Path(spec).exists() and not spec.endswith(
        (".pt", ".pth", ".safetensors", ".json")
    )


def locate_model(spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local path of a trained model given as a path (returned as is) or a hub id ``org/name``,
    downloaded with `huggingface_hub.snapshot_download` into its cache (``cache_dir``, else
    ``HF_HUB_CACHE`` / the default). ``HF_HUB_OFFLINE=1``: only the cache is looked at."""
    text = str(spec)
    if not looks_like_hub_id(text):
        return Path(spec)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    try:
        return Path(snapshot_download(text, cache_dir=cache, local_files_only=offline))
    except RepositoryNotFoundError:
        raise UserError(f"{text}: no such model on the Hugging Face hub (nor a local path)") from None
    except LocalEntryNotFoundError:
        where = cache or "the Hugging Face cache"
        if offline:
            raise UserError(f"{text}: not in {where}, and HF_HUB_OFFLINE=1 forbids downloading it (run once "
                            "online, or give the package folder)") from None
        raise UserError(f"{text}: not in {where} and the hub cannot be reached (offline?)") from None
    except (HfHubHTTPError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{text}: cannot fetch from the Hugging Face hub ({first[:200]})") from None
