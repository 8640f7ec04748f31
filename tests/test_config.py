"""Recipes carry the published settings (docs/systems/); overrides are typed; mistakes are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.recipe_schema import load_recipe
from engine.trainer import build_scheduler, micro_batch_size, noam_factor
from utils.config import apply_overrides, load_config, parse_value, save_config
from utils.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_xlsr_lcnn_recipe_has_the_published_settings() -> None:
    cfg = load_config(CONFIGS / "xlsr_lcnn.yaml")
    assert cfg["frontend"] == {
        "name": "ssl",
        "model": "facebook/wav2vec2-xls-r-300m",
        "layer": -1,
        "n_samples": 64600,
        "dtype": "auto",
    }
    assert cfg["model"]["input_shape"] == [1, 1024, 201]
    assert cfg["loss"] == {"name": "weighted_ce", "weights": [10.0, 1.0]}
    assert cfg["optim"] == {
        "name": "adam",
        "lr": 1e-4,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 5e-4,
        "amsgrad": False,
    }
    assert cfg["sched"] == {"name": "step", "step_epochs": 10, "gamma": 0.5}
    assert (cfg["train"]["batch_size"], cfg["train"]["epochs"], cfg["train"]["select_by"]) == (
        64,
        100,
        "dev_eer",
    )


def test_f0_recipe_has_the_published_settings() -> None:
    from models.frontends import build_frontend

    cfg = load_config(CONFIGS / "sr_la_res2net_f0.yaml")
    frontend = build_frontend(cfg["frontend"])
    assert frontend.feature_shape == (1, 45, 600) == tuple(cfg["model"]["input_shape"])
    assert frontend.settings()["tiling"] == "mirror" and frontend.n_samples == 80000
    assert cfg["loss"] == {"name": "a_softmax", "margin": 4}
    assert cfg["optim"] == {
        "name": "adam",
        "lr": 1.0,
        "betas": [0.9, 0.98],
        "eps": 1e-9,
        "weight_decay": 1e-4,
        "amsgrad": True,
    }
    assert cfg["sched"] == {"name": "noam", "d_model": 64, "warmup_steps": 1000}
    assert (cfg["train"]["batch_size"], cfg["train"]["epochs"]) == (64, 32)


@pytest.mark.parametrize("name", ["demo_xlsr_lcnn", "demo_sr_la_res2net_f0"])
def test_demo_recipes_are_labelled_and_keep_the_architecture(name: str) -> None:
    demo = load_config(CONFIGS / f"{name}.yaml")
    published = load_config(CONFIGS / f"{name.removeprefix('demo_')}.yaml")
    assert "DEMO" in (CONFIGS / f"{name}.yaml").read_text().splitlines()[0]
    assert demo["model"]["name"] == published["model"]["name"]
    assert demo["loss"] == published["loss"]
    assert demo["train"]["epochs"] < published["train"]["epochs"]
    same_arch = {k: v for k, v in demo["model"].items() if k != "input_shape"}
    assert same_arch == {k: v for k, v in published["model"].items() if k != "input_shape"}
    if demo["frontend"]["name"] == "ssl":
        assert demo["frontend"]["model"] == "random:narrow" and demo["model"]["input_shape"] == [1, 64, 201]


def test_demo_noam_keeps_the_published_peak_learning_rate() -> None:
    demo = load_config(CONFIGS / "demo_sr_la_res2net_f0.yaml")
    warm = demo["sched"]["warmup_steps"]
    published_peak = noam_factor(1000)
    assert published_peak == pytest.approx(3.953e-3, rel=1e-3)
    assert demo["optim"]["lr"] * noam_factor(warm, 64, warm) == pytest.approx(published_peak, rel=1e-6)


def test_overrides_are_yaml_typed_and_dotted(tmp_path: Path) -> None:
    cfg = load_recipe(
        CONFIGS / "xlsr_lcnn.yaml",
        [
            "train.epochs=3",
            "optim.lr=2e-5",
            "optim.betas=[0.8, 0.9]",
            "train.patience=5",
            "train.amp=bf16",
            "optim.amsgrad=true",
            "model.dropout=0.5",
            "model.n_classes=2",
            "train.swa=true",
            "data.eval=null",
        ],
    )
    assert cfg["train"]["epochs"] == 3 and isinstance(cfg["train"]["epochs"], int)
    assert cfg["optim"]["lr"] == 2e-5 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["optim"]["betas"] == [0.8, 0.9] and cfg["optim"]["amsgrad"] is True
    assert cfg["train"]["patience"] == 5 and cfg["train"]["amp"] == "bf16"
    # keys the YAML lacks: a parameter of the chosen model's constructor, a documented train key
    assert cfg["model"]["n_classes"] == 2 and cfg["train"]["swa"] is True
    assert cfg["data"]["eval"] is None
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_recipe(tmp_path / "resolved.yaml") == cfg
    assert parse_value("1e-4") == 1e-4 and parse_value("facebook/x") == "facebook/x"
    with pytest.raises(UserError, match=r"unknown key 'model.extra_option' for model 'lcnn'"):
        load_recipe(CONFIGS / "xlsr_lcnn.yaml", ["model.extra_option=7"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown key 'train.epoch' in 'train.epoch=3' (did you mean 'train.epochs'?)"),
        ("trian.epochs=3", "unknown key 'trian' in 'trian.epochs=3' (did you mean 'train'?)"),
        ("train.epochs", "override 'train.epochs' is not of the form section.key=value"),
        ("optim.lr.x=1", "'optim.lr' is not a section (in 'optim.lr.x=1')"),
    ],
)
def test_bad_overrides_are_one_line_errors_naming_the_file(override: str, message: str) -> None:
    path = CONFIGS / "xlsr_lcnn.yaml"
    for load in (load_recipe, load_config):  # with the recipe schema, and without (keys the file has)
        with pytest.raises(UserError) as err:
            load(path, [override])
        assert str(err.value) == f"command line ({path}): {message}"


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  batch: [1, 2\n")
    with pytest.raises(UserError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(bad)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a YAML mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(UserError, match="not divisible"):
        micro_batch_size(64, 3, 2)
    assert micro_batch_size(64, 2, 2) == 16
    with pytest.raises(UserError) as err:
        apply_overrides({"train": {"epochs": 1}}, ["train.lr=1"])
    assert str(err.value) == "command line: unknown key 'train.lr' in 'train.lr=1' (known: epochs)"


def _lrs(sched_cfg: dict, base_lr: float, steps: int, per_epoch: bool) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=base_lr)
    sched, interval = build_scheduler(opt, sched_cfg)
    assert interval == ("epoch" if per_epoch else "step")
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_halves_every_ten_epochs() -> None:
    lrs = _lrs({"name": "step", "step_epochs": 10, "gamma": 0.5}, 1e-4, 31, per_epoch=True)
    assert lrs[0] == lrs[9] == 1e-4
    assert lrs[10] == lrs[19] == 5e-5
    assert lrs[20] == 2.5e-5 and lrs[30] == 1.25e-5


def test_noam_schedule_per_optimizer_step() -> None:
    lrs = _lrs({"name": "noam", "d_model": 64, "warmup_steps": 1000}, 1.0, 2000, per_epoch=False)
    # optimizer step k (1-based) uses 64^-0.5 · min(k^-0.5, k · 1000^-1.5)
    assert lrs[0] == pytest.approx(64**-0.5 * 1000**-1.5, rel=1e-12)
    assert max(lrs) == pytest.approx(3.9528e-3, rel=1e-4) and int(torch.tensor(lrs).argmax()) == 999
    assert lrs[1999] == pytest.approx(64**-0.5 * 2000**-0.5, rel=1e-12)
