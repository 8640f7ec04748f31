"""What keys a recipe can have (engine/recipe_schema.py): every key of a recipe is checked when it is
loaded; a misspelt key or a wrong type is a one-line error naming the file and line (or the override) and
the nearest valid key; every documented key can be set by override on every recipe; the documented
defaults are the ones the code uses, and the code reads exactly the documented keys."""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import CONFIGS, REPO, make_checkpoint
from torch import nn

from data.corpora import recipe_corpus
from engine.optim import build_optimizer, build_scheduler
from engine.partitions import DEFAULT_SCORE_CROP, DEFAULT_TRAIN_CROP, score_crop
from engine.recipe_schema import (
    OPTIMIZERS,
    RECIPE,
    SCHEDULES,
    DataSection,
    OptimSection,
    SchedSection,
    TrainSection,
    load_recipe,
    main,
)
from engine.scoring_model import load_scoring_model
from engine.trainer import TrainSettings
from models.registry import MODELS, discover, register_model
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.config import apply_overrides, load_yaml
from utils.errors import UserError, run_cli
from utils.schema import Field, Section

RECIPES = sorted(CONFIGS.glob("*.yaml"))
SECTIONS = {"optim": OptimSection, "sched": SchedSection, "train": TrainSection, "data": DataSection}


def edited(tmp_path: Path, name: str, old: str, new: str) -> tuple[Path, int]:
    """A copy of configs/<name>.yaml with ``old`` (found once) replaced, and the line where it was."""
    text = (CONFIGS / f"{name}.yaml").read_text()
    assert text.count(old) == 1, old
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new))
    return path, text[: text.index(old)].count("\n") + 1


def error(path: Path, overrides: Sequence[str] = ()) -> str:
    with pytest.raises(UserError) as err:
        load_recipe(path, overrides)
    return str(err.value)


# --- misspelt keys and wrong types --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "old", "new", "message"),
    [
        ("xlsr_lcnn", "  epochs: 100\n", "  epoch: 100\n",
         "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
        ("xlsr_lcnn", "optim:\n", "optimizer:\n", "unknown key 'optimizer' (did you mean 'optim'?)"),
        ("xlsr_lcnn", "  emb_dim: 256", "  emb_dims: 256",
         "unknown key 'model.emb_dims' for model 'lcnn' (did you mean 'model.emb_dim'?)"),
        ("sr_la_res2net_f0", "  n_frames: 600", "  n_frame: 600",
         "unknown key 'frontend.n_frame' for front end 'f0' (did you mean 'frontend.n_frames'?)"),
        ("aasist", "  score: raw_logit", "  scores: raw_logit",
         "unknown key 'loss.scores' for loss 'weighted_ce' (did you mean 'loss.score'?)"),
        ("xlsr_lcnn", "  batch_size: 64 ", "  batch_size: '64'",
         "'train.batch_size' must be an integer, got '64'"),
        ("xlsr_lcnn", "  amsgrad: false", "  amsgrad: 'no'",
         "'optim.amsgrad' must be true or false, got 'no'"),
        ("xlsr_lcnn", "  select_by: dev_eer", "  select_by: dev_er",
         "'train.select_by' must be one of dev_eer, dev_loss, got 'dev_er' (did you mean 'dev_eer'?)"),
    ],
)
def test_a_bad_key_in_the_yaml_names_file_line_key_and_nearest_key(
    tmp_path: Path, name: str, old: str, new: str, message: str
) -> None:
    path, line = edited(tmp_path, name, old, new)
    assert error(path) == f"{path}:{line}: {message}"


@pytest.mark.parametrize(
    ("name", "override", "head", "tail"),
    [
        ("xlsr_lcnn", "train.epoch=3", "unknown key 'train.epoch'", " (did you mean 'train.epochs'?)"),
        ("sr_la_res2net_f0", "frontend.n_frame=50", "unknown key 'frontend.n_frame' for front end 'f0'",
         " (did you mean 'frontend.n_frames'?)"),
        ("xlsr_lcnn", "train.epochs=ten", "'train.epochs' must be an integer, got 'ten'", ""),
        ("xlsr_lcnn", "train.epochs=2.5", "'train.epochs' must be an integer, got 2.5", ""),
        ("xlsr_lcnn", "train.swa=maybe", "'train.swa' must be true or false, got 'maybe'", ""),
        ("xlsr_lcnn", "optim.lr=true", "'optim.lr' must be a number, got True", ""),
        ("xlsr_lcnn", "optim.betas=[0.9, x]", "'optim.betas' must be a list of numbers, got [0.9, 'x']", ""),
        ("xlsr_lcnn", "train.patience=[1]", "'train.patience' must be an integer or null, got [1]", ""),
        ("xlsr_lcnn", "model.dropout=high", "'model.dropout' must be a number, got 'high'", ""),
        ("aasist", "loss.weights=0.9", "'loss.weights' must be a list of numbers, got 0.9", ""),
        ("xlsr_lcnn", "train=5", "'train' must be a mapping of keys, got 5", ""),
        ("xlsr_lcnn", "sched.name=cosin",
         "'sched.name' must be one of step, noam, cosine, none, constant, got 'cosin'",
         " (did you mean 'cosine'?)"),
    ],
)
def test_a_bad_override_names_the_override_key_and_nearest_key(
    name: str, override: str, head: str, tail: str
) -> None:
    path = CONFIGS / f"{name}.yaml"
    assert error(path, [override]) == f"command line ({path}): {head} in {override!r}{tail}"


def test_an_unknown_model_name_suggests_the_nearest_registered_one() -> None:
    discover()
    path = CONFIGS / "xlsr_lcnn.yaml"
    assert error(path, ["model.name=lcnnn"]) == (
        f"command line ({path}): 'model.name' must be one of {', '.join(sorted(MODELS))}, got 'lcnnn' "
        "in 'model.name=lcnnn' (did you mean 'lcnn'?)"
    )


def test_a_missing_name_repeated_key_or_bad_augmentation_is_reported_at_its_line(tmp_path: Path) -> None:
    path, _ = edited(tmp_path, "xlsr_lcnn", "  name: lcnn\n", "")
    model_line = (CONFIGS / "xlsr_lcnn.yaml").read_text().splitlines().index("model:") + 1
    assert error(path).startswith(f"{path}:{model_line}: missing key 'model.name' (one of ")
    path, line = edited(tmp_path, "xlsr_lcnn", "  grad_accum: 1\n", "  grad_accum: 1\n  epochs: 5\n")
    first = line - 2  # epochs is two lines above grad_accum
    assert error(path) == f"{path}:{line + 1}: duplicate key 'train.epochs' (also at line {first})"
    path, line = edited(tmp_path, "xlsr_aasist_la", "{algo: 5, p: 1.0}", "{algo: 9, p: 1.0}")
    assert error(path).startswith(f"{path}:{line}: augment.rawboost.algo: unknown RawBoost algo 9 (known: ")


def test_checked_overrides_without_a_file_name_the_config() -> None:
    with pytest.raises(UserError) as err:
        apply_overrides({"train": {"epoch": 1}}, ["train.epochs=2"], schema=RECIPE)
    assert str(err.value) == "config: unknown key 'train.epoch' (did you mean 'train.epochs'?)"


# --- every documented key on every recipe -------------------------------------------------------------


def documented(cfg: dict[str, Any]) -> list[tuple[str, Field]]:
    """(section, field) for every key `RECIPE` documents for this recipe (its chosen model, loss and
    front end); section "" for top-level keys."""
    out: list[tuple[str, Field]] = []
    for key, spec in RECIPE.items():
        if isinstance(spec, Field):
            out.append(("", spec))
        elif spec.fields is not None:
            out += [(key, field) for field in spec.fields(cfg.get(key) or {}).values()]
    return out


def plain(value: Any) -> Any:
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_documented_key_can_be_set_on_every_recipe(path: Path) -> None:
    """The YAML-vs-code consistency walk: each recipe loads to exactly its YAML values (nothing added),
    and every documented key of each section takes an override to a valid value (its default, each of its
    choices; the recipe's own ``name``), also where the YAML lacks the key."""
    cfg = load_recipe(path)
    assert cfg == load_yaml(path)
    keys = documented(cfg)
    assert {s for s, _ in keys} == {"", "frontend", "model", "loss", "optim", "sched", "train", "data"}
    for section, field in keys:
        dotted = f"{section}.{field.name}".strip(".")
        if (field.name == "name" and section) or field.required:
            values = [cfg[section][field.name]]
        else:
            values = [field.default, *(field.choices or ())]
        for value in values:
            resolved = load_recipe(path, [f"{dotted}={json.dumps(plain(value))}"])
            assert (resolved[section] if section else resolved)[field.name] == plain(value), dotted
    augment = cfg.get("augment") or {}  # its own reader checks it; any recipe may switch it on
    rawboost = {**(augment.get("rawboost") or {}), "algo": 3}
    resolved = load_recipe(path, ["augment.preset=la", "augment.p=0.5", "augment.rawboost.algo=3"])
    assert resolved["augment"] == {**augment, "preset": "la", "p": 0.5, "rawboost": rawboost}


def test_the_readme_overrides_work_on_recipes_that_lack_the_key() -> None:
    assert load_recipe(CONFIGS / "aasist.yaml", ["train.fused_adam=false"])["train"]["fused_adam"] is False
    assert load_recipe(CONFIGS / "xlsr_lcnn.yaml", ["train.swa=true"])["train"]["swa"] is True
    # the optimizer reads its name lower-cased, so the check does too
    assert load_recipe(CONFIGS / "xlsr_lcnn.yaml", ["optim.name=Adam"])["optim"]["name"] == "Adam"


def test_a_new_back_end_brings_its_keys_with_its_signature() -> None:
    @register_model("toy_schema")
    class Toy(nn.Module):
        def __init__(self, input_shape: Sequence[int], hidden: int = 8) -> None:
            super().__init__()

    path = CONFIGS / "aasist.yaml"
    try:
        cfg = load_recipe(path, ["model.name=toy_schema", "model.hidden=16"])
        assert cfg["model"] == {"name": "toy_schema", "input_shape": [64600], "hidden": 16}
        assert error(path, ["model.name=toy_schema", "model.hiden=16"]) == (
            f"command line ({path}): unknown key 'model.hiden' for model 'toy_schema' in 'model.hiden=16' "
            "(did you mean 'model.hidden'?)"
        )
        assert error(path, ["model.name=toy_schema", "model.hidden=wide"]).endswith(
            "'model.hidden' must be an integer, got 'wide' in 'model.hidden=wide'"
        )
    finally:
        del MODELS["toy_schema"]


# --- the code uses the documented defaults and reads exactly the documented keys ----------------------


def _lrs(sched_cfg: dict[str, Any], steps: int = 25) -> tuple[list[float], str]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, interval = build_scheduler(opt, sched_cfg, total_steps=steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out, interval


def test_the_documented_defaults_are_what_the_code_uses() -> None:
    cpu = torch.device("cpu")
    model = {"name": "lcnn"}
    train = dataclasses.asdict(TrainSection())
    assert TrainSettings.from_config({"model": model, "train": {}}, cpu, 1) == TrainSettings.from_config(
        {"model": model, "train": train}, cpu, 1
    )
    for select_by in TrainSection.__dataclass_fields__["select_by"].metadata["choices"]:
        assert TrainSettings.from_config({"train": {"select_by": select_by}}, cpu, 1).select_by == select_by
    params = [nn.Parameter(torch.zeros(2))]
    optim = dataclasses.asdict(OptimSection())
    for name in OPTIMIZERS:
        empty = build_optimizer(params, {"name": name})
        full = build_optimizer(params, {**optim, "name": name})
        assert type(empty) is type(full) and empty.param_groups == full.param_groups
    assert type(build_optimizer(params, {})) is type(build_optimizer(params, {"name": OptimSection.name}))
    sched = dataclasses.asdict(SchedSection())
    for name in SCHEDULES:
        assert _lrs({"name": name}) == _lrs({**sched, "name": name})
    assert _lrs({}) == _lrs({"name": SchedSection.name}) == ([1.0] * 25, "epoch")
    assert recipe_corpus({"data": {}}).name == DataSection.dataset
    from data.waveform_dataset import CROPS, SCORE_CROPS, TRAIN_CROPS

    assert DEFAULT_TRAIN_CROP == DataSection.train_crop
    assert DataSection.__dataclass_fields__["train_crop"].metadata["choices"] == TRAIN_CROPS
    assert DEFAULT_SCORE_CROP == DataSection.score_crop == score_crop({"data": {}})[0]
    assert DataSection.__dataclass_fields__["score_crop"].metadata["choices"] == SCORE_CROPS
    assert set(TRAIN_CROPS) | set(SCORE_CROPS) == set(CROPS)  # what WaveformDataset takes


READERS = [  # functions that read a section's keys: (file, function, section)
    ("engine/trainer.py", "from_config", "train"),
    ("engine/average.py", "from_config", "train"),
    ("engine/optim.py", "build_optimizer", "optim"),
    ("engine/optim.py", "build_scheduler", "sched"),
    ("data/corpora/base.py", "recipe_corpus", "data"),
    ("data/corpora/manifest.py", "from_recipe", "data"),
    ("engine/partitions.py", "open_waveform_partition", "data"),
    ("engine/partitions.py", "score_crop", "data"),
    ("main_train.py", "main", "data"),
]


def read_keys(path: Path, function: str) -> set[str]:
    """String keys ``function`` reads with ``x.get("k")`` and ``get(cfg, "a.b")`` (the last part)."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    keys = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and node.args:
            dotted = isinstance(node.func, ast.Name) and node.func.id == "get"  # utils.config.get(cfg, "a.b")
            method = isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            arg = node.args[1] if dotted and len(node.args) > 1 else node.args[0]
            if (dotted or method) and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                keys.add(arg.value.split(".")[-1])
    return keys


def test_the_code_reads_exactly_the_documented_keys() -> None:
    """Every documented key of the optim, sched, train and data sections is read by their readers, and
    every key those readers read is documented (or is a top-level section)."""
    read: dict[str, set[str]] = {section: set() for section in SECTIONS}
    for file, function, section in READERS:
        read[section] |= read_keys(REPO / file, function)
    for section, cls in SECTIONS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields - read[section] == set(), f"{section}: documented but never read"
        assert read[section] - fields - set(RECIPE) == set(), f"{section}: read but not documented"


# --- saved configs, the key listing -------------------------------------------------------------------


def test_old_checkpoints_keep_scoring_whatever_their_saved_config(tmp_path: Path) -> None:
    path, model, _ = make_checkpoint(tmp_path / "best.pt")
    state = load_checkpoint(path)
    state["config"]["train"] = {"an_old_option": 1, "epochs": "ten"}  # never checked again when scored
    del state["config"]["data"]
    save_checkpoint(state, path)
    loaded = load_scoring_model(path, torch.device("cpu"))
    assert loaded.cfg["train"] == {"an_old_option": 1, "epochs": "ten"}
    x = torch.randn(2, *loaded.cfg["model"]["input_shape"])
    assert torch.equal(loaded.model(x)[1], model.eval()(x)[1])


def test_the_key_listing_and_the_resolved_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  train.epochs: an integer = 1  # epochs to train" in lines
    assert "    model.dropout [lcnn]: a number = 0.7" in lines
    assert "  optim.betas: a list of numbers = [0.9, 0.999]  # Adam/AdamW (beta1, beta2)" in lines
    path = CONFIGS / "aasist.yaml"
    assert main([str(path), "train.epochs=3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == load_recipe(path, ["train.epochs=3"])
    assert run_cli(main, [str(path), "train.epoch=3"]) == 2
    assert capsys.readouterr().err == (
        f"error: command line ({path}): unknown key 'train.epoch' in 'train.epoch=3' "
        "(did you mean 'train.epochs'?)\n"
    )


def test_every_section_of_the_recipe_schema_is_documented() -> None:
    for key, spec in RECIPE.items():
        assert spec.doc, key
        if isinstance(spec, Section) and key in SECTIONS:
            assert all(f.metadata["doc"] for f in dataclasses.fields(SECTIONS[key])), key
