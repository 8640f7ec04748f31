"""Model packages (engine/package.py, models/package.py, models/model_card.py): for every registered model
on a tiny config, package -> score gives the same bytes as checkpoint -> score; the model card's YAML
parses and its numbers are the run's summary; hub ids resolve offline from a local cache folder; released
imports write packages directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, SMALLER_MODELS, THRESHOLD

import generate_score
from engine.package import main as package_main
from engine.package import package_model
from engine.scoring_model import read_trained
from models import MODELS, build_model, discover
from models.frontends import build_frontend
from models.losses import build_loss
from models.package import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, locate_model
from utils.checkpoint import save_checkpoint
from utils.config import load_config
from utils.errors import UserError, run_cli

discover()

#: The calibration a tiny checkpoint carries (as engine.calibrate_checkpoint stores it).
CALIBRATION = {"scale": 1.5, "offset": -0.25, "prior": 0.655, "separable": False, "n_bonafide": 7,
               "n_spoof": 14, "dev_scores": "scores_dev.txt"}


def tiny_recipe(model_name: str, recipe: str | None = None, **sections: dict) -> dict:
    """A recipe naming ``model_name`` (configs/<recipe>.yaml, else the demo one if there is one), cut for
    CPU: SSL front ends become the random ``narrow`` model (4,000 samples for back ends that read (frames,
    hidden)), raw waveforms 2,400 samples, residual stages one block each; then the entries of
    ``sections`` (e.g. ``frontend={"n_samples": 4000}``) update theirs; the model's input shape follows
    the front end."""
    recipes = sorted(CONFIGS.glob("*.yaml"), key=lambda p: (not p.name.startswith("demo_"), p.name))
    if recipe is not None:
        recipes = [CONFIGS / f"{recipe}.yaml"]
    cfg = next(c for c in map(load_config, recipes) if c["model"]["name"] == model_name)
    fe, shape = dict(cfg["frontend"]), list(cfg["model"]["input_shape"])
    if fe["name"] == "ssl":
        fe.update(model="random:narrow", dtype="fp32")
        if len(shape) == 2:
            fe["n_samples"] = 4000
    elif fe["name"] == "waveform":
        fe["n_samples"] = 2400
    fe.update(sections.pop("frontend", {}))
    cfg = {**cfg, **{name: {**(cfg.get(name) or {}), **values} for name, values in sections.items()}}
    feature_shape = list(build_frontend(fe, device="cpu").feature_shape)
    shape = [feature_shape[2], feature_shape[1]] if len(shape) == 2 else feature_shape
    model = {**cfg["model"], "input_shape": shape}
    if "layers" in model:
        model["layers"] = [1] * len(model["layers"])
    return {**cfg, "frontend": fe, "model": model}


def tiny_checkpoint(model_name: str, folder: Path, recipe: str | None = None, **sections: dict) -> Path:
    """An untrained best.pt of `tiny_recipe` in the trainer's layout (seeded): threshold, calibration, a
    trainable front end's weights and portable settings, or a frozen one's content hash; summary.json
    beside it."""
    cfg = tiny_recipe(model_name, recipe, **sections)
    torch.manual_seed(0)
    model, loss = build_model(cfg["model"]).eval(), build_loss(cfg["loss"]).eval()
    state = {"model": model.state_dict(), "loss": loss.state_dict(), "config": cfg, "epoch": 3,
             "threshold": THRESHOLD, "best": {"epoch": 2, "threshold": THRESHOLD}, "calibration": CALIBRATION}
    frontend = build_frontend(cfg["frontend"], device="cpu")
    if cfg["frontend"].get("trainable"):
        state["frontend_state"] = frontend.state_dict()
        state["frontend_settings"] = frontend.portable_settings()
    elif frontend.state_dict():
        state["frontend_sha256"] = frontend.content_hash()
    path = folder / "best.pt"
    save_checkpoint(state, path)
    summary = {"best_epoch": 2, "dev_eer": 0.0714285714285714, "dev_loss": 0.5, "threshold": THRESHOLD,
               "eval_eer": 0.1428571428571428, "epochs_done": 3, "stopped_early": False,
               "best_checkpoint": str(path), "seed": 7, "calibration": CALIBRATION}
    (folder / "summary.json").write_text(json.dumps(summary))
    return path


def score(checkpoint: Path | str, clips: dict[str, Path], out: Path, stereo: bool = True) -> bytes:
    """generate_score.py --audio on the short (and the stereo) clip -> the bytes of the results file."""
    files = [clips["short"], *([clips["stereo"]] if stereo else [])]
    argv = ["--checkpoint", str(checkpoint), "--audio", *map(str, files),
            "--output", str(out), "--no-progress", "--device", "cpu", "--llr"]
    assert generate_score.main(argv) == 0
    return out.read_bytes()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_package_scores_the_same_bytes_as_its_checkpoint(name: str, clips, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(name, tmp_path, **({"model": SMALLER_MODELS[name]} if name in SMALLER_MODELS
                                                    else {}))
    package, notes = package_model(checkpoint, tmp_path / "package")
    assert notes == []
    assert sorted(p.name for p in package.iterdir()) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((package / CONFIG_NAME).read_text())
    expected_weights = "trained" if tiny_recipe(name)["frontend"].get("trainable") else (
        "reference" if tiny_recipe(name)["frontend"]["name"] == "ssl" else "none")
    assert config["frontend"]["weights"] == expected_weights
    # the tiny raw-waveform models cut the 2.5 s stereo clip into 33 windows: the short one (3) is enough
    stereo = tiny_recipe(name)["frontend"]["name"] != "waveform"
    from_checkpoint = score(checkpoint, clips, tmp_path / "ckpt.csv", stereo=stereo)
    assert from_checkpoint == score(package, clips, tmp_path / "pkg.csv", stereo=stereo)


def test_included_frontend_scores_the_same_bytes(clips, tmp_path: Path, capsys) -> None:
    """A frozen XLS-R-style front end copied into the package scores exactly as when named by its id."""
    checkpoint = tiny_checkpoint("lcnn", tmp_path)
    assert run_cli(package_main, [str(checkpoint), str(tmp_path / "pkg"), "--include-frontend"]) == 0
    assert "wrote" in capsys.readouterr().out
    config = json.loads((tmp_path / "pkg" / CONFIG_NAME).read_text())
    trained = read_trained(checkpoint)
    assert config["frontend"]["weights"] == "included"
    assert config["frontend"]["content_hash"] == trained.frontend_sha256
    assert config["frontend"]["settings"]["architecture"]["hidden_size"] == 64
    from_id = score(checkpoint, clips, tmp_path / "a.json")
    assert from_id == score(tmp_path / "pkg", clips, tmp_path / "b.json")


def test_model_card_yaml_parses_and_its_numbers_are_the_summary(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint("sr_la_res2net", tmp_path)
    package, _ = package_model(checkpoint, tmp_path / "pkg", license="cc-by-4.0")
    summary = json.loads((tmp_path / "summary.json").read_text())
    card = (package / CARD_NAME).read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-4.0" and header["datasets"] == ["ASVspoof 2019 LA"]
    assert header["metrics"] == ["eer"] and "sr_la_res2net" in header["tags"]
    results = header["model-index"][0]["results"]
    assert [(r["dataset"]["split"], r["metrics"][0]["value"]) for r in results] == [
        ("dev", 100 * summary["dev_eer"]), ("eval", 100 * summary["eval_eer"])
    ]
    config = json.loads((package / CONFIG_NAME).read_text())
    assert config["results"] == {k: summary[k] for k in ("best_epoch", "dev_eer", "eval_eer", "threshold",
                                                         "epochs_done", "seed")}
    assert config["threshold"]["value"] == THRESHOLD and config["threshold"]["kind"] == "dev_eer"
    assert config["calibration"] == CALIBRATION
    assert config["input"] == {"sample_rate": 16000, "channels": 1, "n_samples": 80000, "seconds": 5.0,
                               "longer": "scored by windows of n_samples every n_samples/2, window scores "
                               "averaged", "shorter": "tiled to n_samples"}
    assert config["score"]["name"] == "a_softmax"
    for text in (f"| dev EER (%) | {100 * summary['dev_eer']:.4f} |", "| best epoch | 2 |",
                 f"LLR = {CALIBRATION['scale']!r} * score + {CALIBRATION['offset']!r}"):
        assert text in card


def test_summary_of_another_checkpoint_gives_no_results(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint("sr_la_res2net", tmp_path)
    last = checkpoint.with_name("last.pt")
    shutil.copy(checkpoint, last)
    package, notes = package_model(last, tmp_path / "pkg")
    assert notes == [f"{tmp_path / 'summary.json'} describes {checkpoint}, not last.pt: no results recorded"]
    assert json.loads((package / CONFIG_NAME).read_text())["results"] == {}
    assert "model-index" not in yaml.safe_load((package / CARD_NAME).read_text().split("---\n")[1])


def hub_cache(package: Path, cache: Path, repo: str = "toolkit-tests/tiny-f0") -> Path:
    """The layout huggingface_hub keeps a downloaded model repository in: refs/main names a snapshot."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(package, folder / "snapshots" / revision)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    return folder / "snapshots" / revision


def test_hub_id_resolves_offline_from_the_cache(clips, tmp_path: Path, monkeypatch, capsys) -> None:
    checkpoint = tiny_checkpoint("sr_la_res2net", tmp_path)
    package, _ = package_model(checkpoint, tmp_path / "pkg")
    cache = tmp_path / "hub"
    snapshot = hub_cache(package, cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert locate_model("toolkit-tests/tiny-f0") == snapshot
    monkeypatch.chdir(tmp_path)  # relative paths: the hub id is not a local folder
    assert score("toolkit-tests/tiny-f0", clips, tmp_path / "hub.csv") == score(
        package, clips, tmp_path / "local.csv")
    capsys.readouterr()
    argv = ["--checkpoint", "toolkit-tests/not-cached", "--audio", str(clips["short"]), "--device", "cpu"]
    assert run_cli(generate_score.main, argv) == 2
    assert capsys.readouterr().err == (
        f"error: toolkit-tests/not-cached: not in {cache}, and HF_HUB_OFFLINE=1 forbids downloading it (run "
        "once online, or give the package folder)\n"
    )


def test_package_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint("sr_la_res2net", tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(UserError, match="full: already exists and is not an empty folder"):
        package_model(checkpoint, tmp_path / "full")
    with pytest.raises(UserError, match=f"{tmp_path}: a folder, but not a model package"):
        read_trained(tmp_path)
    package, _ = package_model(checkpoint, tmp_path / "pkg")
    with pytest.raises(UserError, match="pkg: already a model package"):
        package_model(package, tmp_path / "again")
    (package / CONFIG_NAME).write_text('{"format": "something else"}')
    with pytest.raises(UserError, match="config.json: not a model package of this toolkit"):
        read_trained(package)


def test_import_released_writes_a_package(tmp_path: Path, fake_model_module: None) -> None:
    from conftest import make_release

    from models.import_released import main as import_main

    src = tmp_path / "anti-spoofing_feat_model.pt"
    make_release(src)
    assert import_main([str(src), str(tmp_path / "w.safetensors"), "--trust-pickle"]) == 0
    assert import_main([str(src), str(tmp_path / "pkg"), "--trust-pickle", "--package"]) == 0
    from_file, from_package = read_trained(tmp_path / "w.safetensors"), read_trained(tmp_path / "pkg")
    assert from_package.config == from_file.config and from_package.source == from_file.source
    assert from_package.model_state.keys() == from_file.model_state.keys()
    assert all(torch.equal(from_package.model_state[k], v) for k, v in from_file.model_state.items())
    config = json.loads((tmp_path / "pkg" / CONFIG_NAME).read_text())
    xlsr = "facebook/wav2vec2-xls-r-300m"
    assert config["frontend"] == {"weights": "reference", "name": "ssl", "model": xlsr, "content_hash": None}
    assert config["results"] == {}
    header = yaml.safe_load((tmp_path / "pkg" / CARD_NAME).read_text().split("---\n")[1])
    assert header["license"] == "other" and "model-index" not in header
