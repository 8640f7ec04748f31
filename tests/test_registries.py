"""Registry-driven consistency: every registered model has a recipe, builds from it, keeps the model
contract and trains one tiny epoch; a new back end needs one module and one recipe, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SMALLER_MODELS
from official_asvspoof2019 import score_file_eer
from test_package import tiny_recipe
from torch import nn

from models import MODELS, build_model, discover, register_model
from models.frontends import FRONTENDS
from models.losses import LOSSES, build_loss
from utils.config import load_config, save_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
discover()
BUILTIN_MODELS = sorted(MODELS)
MAX_WAVE = 16_000  # raw-waveform models are checked on 1 s inputs: the contract does not depend on length


def recipes_naming(section: str, name: str, configs: list[Path] = CONFIGS) -> list[Path]:
    """Recipes whose ``section.name`` is ``name``."""
    return [p for p in configs if (load_config(p).get(section) or {}).get("name") == name]


def small_input_shape(cfg: dict) -> tuple[int, ...]:
    shape = tuple(int(v) for v in cfg["model"]["input_shape"])
    return (min(shape[0], MAX_WAVE),) if len(shape) == 1 else shape


def check_contract(cfg: dict) -> None:
    """forward -> (embedding, logits (B, 2)); classify(embedding) == logits; loss.score -> (B,)."""
    torch.manual_seed(0)
    model = build_model(cfg["model"]).eval()
    loss = build_loss(cfg["loss"])
    x = torch.randn(3, *small_input_shape(cfg))
    with torch.no_grad():
        embedding, logits = model(x)
        assert logits.shape == (3, 2) and embedding.shape[0] == 3
        torch.testing.assert_close(model.classify(embedding), logits)
        assert loss.score(embedding, logits).shape == (3,)


class _Items(torch.utils.data.Dataset):
    def __init__(self, shape: tuple[int, ...], n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, *shape, generator=g)
        self.labels = [i % 2 for i in range(n)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.x[i], self.labels[i], f"utt{i}", "-" if self.labels[i] == 0 else "A01"


def train_one_epoch(cfg: dict, out: Path) -> None:
    """One epoch of 4 random inputs through the real Trainer, then the checkpoint loads for scoring."""
    from engine.scoring_model import load_scoring_model
    from engine.trainer import fit

    cfg = {**cfg, "train": {**cfg.get("train", {}), "epochs": 1, "batch_size": 2, "amp": "none",
                            "compile": False, "channels_last": False, "num_workers": 0}}
    cfg.pop("augment", None)
    shape = small_input_shape(cfg)
    train, dev = _Items(shape, 4, 0), _Items(shape, 4, 1)
    result = fit(cfg, build_model(cfg["model"]), build_loss(cfg["loss"]), train, dev, out, progress=False)
    assert result.epochs_done == 1
    assert result.best_dev_eer == pytest.approx(score_file_eer(out / "scores_dev.txt"), rel=1e-9)
    assert load_scoring_model(result.best_path, torch.device("cpu")).cfg["model"] == cfg["model"]


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_every_model_has_a_recipe(name: str) -> None:
    assert recipes_naming("model", name), f"no configs/*.yaml names model {name!r}"


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_every_front_end_has_a_recipe(name: str) -> None:
    assert recipes_naming("frontend", name), f"no configs/*.yaml names front end {name!r}"


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_every_model_keeps_the_contract(name: str) -> None:
    check_contract(load_config(recipes_naming("model", name)[0]))


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_every_model_trains_one_tiny_epoch(name: str, tmp_path: Path) -> None:
    """The model of its first recipe cut for CPU as the package and export tests cut it (`tiny_recipe`)."""
    train_one_epoch(tiny_recipe(name, model=SMALLER_MODELS.get(name, {})), tmp_path / name)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_scores_and_gives_a_finite_loss(name: str) -> None:
    loss = build_loss({"name": name})
    # OC-softmax learns a direction in the embedding space (256-d by default); the others read logits.
    embedding, logits = torch.randn(4, 256), torch.randn(4, 2)
    labels = torch.tensor([0, 1, 0, 1])
    assert torch.isfinite(loss(embedding, logits, labels)) and loss.score(embedding, logits).shape == (4,)


def test_a_third_back_end_is_one_module_and_one_recipe(tmp_path: Path) -> None:
    """Register a toy back end from outside models/ and write one recipe: the same checks pass."""

    @register_model("toy_mean_pool")
    class ToyMeanPool(nn.Module):
        def __init__(self, input_shape: list[int], hidden: int = 8) -> None:
            super().__init__()
            self.proj = nn.Linear(int(input_shape[1]), hidden)
            self.out = nn.Linear(hidden, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            embedding = torch.relu(self.proj(x.mean(dim=-1).flatten(1)))
            return embedding, self.classify(embedding)

        def classify(self, embedding: torch.Tensor) -> torch.Tensor:
            return self.out(embedding)

    try:
        recipe = tmp_path / "toy.yaml"
        save_config({"frontend": {"name": "f0", "n_frames": 20}, "model": {"name": "toy_mean_pool",
                     "input_shape": [1, 45, 20]}, "loss": {"name": "weighted_ce", "weights": [10.0, 1.0]},
                     "optim": {"name": "adam", "lr": 1e-3}, "train": {"epochs": 1}}, recipe)
        assert recipes_naming("model", "toy_mean_pool", [recipe]) == [recipe]
        check_contract(load_config(recipe))
        train_one_epoch(load_config(recipe), tmp_path / "run")
    finally:
        del MODELS["toy_mean_pool"]
