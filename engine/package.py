"""A trained model as a self-contained package folder (`models.package`): config.json, model.safetensors
and a model card README.md, which generate_score.py --checkpoint takes as a folder or, once uploaded to
the Hugging Face hub, as its hub id.

    python -m engine.package runs/f0/best.pt packages/sr_la_res2net_f0
    python -m engine.package runs/xlsr_lcnn/best.pt packages/xlsr_lcnn --include-frontend

The card's results come from the run's summary.json beside the checkpoint (the numbers of that
checkpoint: best.pt, or swa.pt for its SWA numbers). A frozen pretrained front end (XLS-R) is recorded by
model id and content hash, or copied in with ``include_frontend``; a fine-tuned one is always included.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.scoring_model import read_trained
from models.frontends import FrontEnd, build_frontend
from models.import_released import sha256_of
from models.model_card import render_model_card
from models.package import TrainedWeights, is_package, package_config, write_package
from utils.errors import UserError, run_cli

SUMMARY_NAME = "summary.json"
#: The summary entries a package records as its results.
RESULT_KEYS = ("best_epoch", "dev_eer", "eval_eer", "threshold", "epochs_done", "seed")


def run_results(checkpoint: Path, summary: Path | None = None) -> tuple[dict[str, Any], str]:
    """(results, note): the numbers of ``checkpoint`` from the run's summary.json (default: beside it),
    empty with a note for the user when there is none or it describes another checkpoint."""
    path = summary or checkpoint.with_name(SUMMARY_NAME)
    if not path.is_file():
        return {}, f"no {path}: the package records no results"
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path}: not a JSON run summary ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a run summary (expected a JSON object)")
    results = {key: data[key] for key in RESULT_KEYS if data.get(key) is not None}
    if Path(str(data.get("swa_checkpoint", ""))).name == checkpoint.name:
        results["dev_eer"] = data.get("swa_dev_eer")  # eval scores of a SWA run are the SWA model's
        results.pop("best_epoch", None)
        return results, ""
    if Path(str(data.get("best_checkpoint", ""))).name != checkpoint.name:
        described = data.get("best_checkpoint")
        return {}, f"{path} describes {described}, not {checkpoint.name}: no results recorded"
    return results, ""


def include_frontend(trained: TrainedWeights, source: Path) -> None:
    """Copy a frozen pretrained front end (referred to by model id) into ``trained``, after checking that
    it is the one the model was trained with (content hash); nothing to do for the others."""
    if trained.frontend_state is not None:
        return
    frontend = _build_fp32(trained.config["frontend"])
    if not frontend.state_dict():
        return  # F0 subband, raw waveform: no weights
    found = frontend.content_hash()
    if trained.frontend_sha256 not in (None, found) and not _hash_as_trained(trained):
        model = trained.config["frontend"].get("model")
        raise UserError(f"{source}: the front end {model} found here is not the one this model was trained "
                        f"with (content hash {found[:12]}..., recorded {trained.frontend_sha256[:12]}...)")
    trained.frontend_state = frontend.state_dict()
    trained.frontend_settings = frontend.portable_settings()
    trained.frontend_frozen = True
    trained.frontend_sha256 = found


def _build_fp32(settings: dict[str, Any]) -> FrontEnd:
    """The front end of ``settings`` on the CPU, an SSL model computing in float32 (the scoring default)."""
    return build_frontend({**settings, "dtype": "fp32"} if settings.get("name") == "ssl" else settings, "cpu")


def _hash_as_trained(trained: TrainedWeights) -> bool:
    """Whether the front end built as the recipe says (its ``dtype``) has the recorded content hash: the
    trainer hashes the model it ran, whose linear layers are pre-cast under a bf16/fp16 ``dtype``."""
    settings = trained.config["frontend"]
    if settings.get("dtype") in (None, "fp32"):
        return False
    return build_frontend(dict(settings), device="cpu").content_hash() == trained.frontend_sha256


def _reference_hash(trained: TrainedWeights) -> None:
    """A frozen front end with weights that the checkpoint does not name by hash (a model trained from
    stored features): hash it now, so the package says which weights it needs."""
    if trained.frontend_state is not None or trained.frontend_sha256 is not None:
        return
    frontend = _build_fp32(trained.config["frontend"])
    if frontend.state_dict():
        trained.frontend_sha256 = frontend.content_hash()


def package_model(
    checkpoint: str | Path, out_dir: str | Path, *, with_frontend: bool = False,
    summary: str | Path | None = None, license: str = "mit", name: str | None = None,
) -> tuple[Path, list[str]]:
    """Write the package of ``checkpoint`` (best.pt, last.pt, swa.pt, or a .safetensors weights file) into
    ``out_dir`` -> (out_dir, notes for the user). ``with_frontend``: copy a frozen pretrained front end in
    (`include_frontend`); ``summary``: the run summary to take results from; ``license``: SPDX id for the
    card; ``name``: the package's name (default: the recipe's)."""
    path = Path(checkpoint)
    if is_package(path):
        raise UserError(f"{path}: already a model package")
    trained = read_trained(path)
    for section in ("frontend", "model", "loss"):
        if not isinstance(trained.config.get(section), dict):
            raise UserError(f"{path}: no '{section}' config recorded in the file")
    trained.source = {**trained.source, "file": path.name, "sha256": sha256_of(path)}
    if with_frontend:
        include_frontend(trained, path)
    else:
        _reference_hash(trained)
    results, note = run_results(path, Path(summary) if summary is not None else None)
    config = package_config(trained, results)
    if name:
        config["name"] = name
    notes = [note] if note else []
    model_id = str(trained.config["frontend"].get("model", ""))
    if config["frontend"]["weights"] == "reference" and Path(model_id).expanduser().exists():
        notes.append(f"the front end is the local folder {model_id}: the package needs it there "
                     "(--include-frontend copies it in)")
    return write_package(out_dir, trained, config, render_model_card(config, license)), notes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.package",
        description="Write a trained model as a self-contained package folder: config.json (recipe, input "
        "length, score definition, threshold, calibration), model.safetensors and a Hugging Face model "
        "card README.md with the run's results. generate_score.py --checkpoint takes the folder, or its "
        "hub id once uploaded.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m engine.package runs/f0/best.pt packages/sr_la_res2net_f0\n"
        "  python -m engine.package runs/xlsr_lcnn/best.pt packages/xlsr_lcnn --include-frontend",
    )
    parser.add_argument("checkpoint", help="best.pt / last.pt / swa.pt of a run, or a .safetensors file")
    parser.add_argument("out_dir", help="package folder to write (must not exist, or be empty)")
    parser.add_argument(
        "--include-frontend",
        action="store_true",
        help="copy a frozen pretrained front end (XLS-R) into the package instead of naming it by hub id "
        "and content hash (self-contained, ~1.2 GB more for XLS-R 300M)",
    )
    parser.add_argument("--summary", help=f"run summary for the results (default: {SUMMARY_NAME} beside it)")
    parser.add_argument("--license", default="mit", help="license of the weights for the card (default mit)")
    parser.add_argument("--name", help="package name (default: the recipe's name)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, notes = package_model(args.checkpoint, args.out_dir, with_frontend=args.include_frontend,
                               summary=args.summary, license=args.license, name=args.name)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out}/ (config.json, model.safetensors, README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
