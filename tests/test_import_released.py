"""Importer of the released XLS-R-LCNN whole-model pickle (SPEC §4).

The test writes its own "release": stand-in classes ``LCNN`` and ``MaxFeatureMap2D`` registered
under a fake module ``model`` (as the released code names them; conftest.py), pickled with
``torch.save(model)``, plain and inside DataParallel; the fake module is removed before importing.
Refusing a disallowed pickle global and a pickle without --trust-pickle is in test_reliability.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import LCNN, make_release
from torch import nn

from models.import_released import RELEASED_CONFIG, load_model_weights, main, save_model_weights
from models.lcnn import LCNN as OurLCNN
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "dataparallel"])
def test_import_gives_the_same_logits(tmp_path: Path, fake_model_module: None, wrap: bool) -> None:
    src, out = tmp_path / "anti-spoofing_feat_model.pt", tmp_path / "xlsr_lcnn.safetensors"
    original = make_release(src, wrap=wrap)
    del sys.modules["model"]  # the importer must not need the original code

    assert main([str(src), str(out), "--trust-pickle"]) == 0

    state, meta = load_model_weights(out)
    assert meta["config"]["model"] == {"name": "lcnn", "input_shape": [1, 1024, 201]}
    assert meta["config"]["frontend"]["name"] == "ssl"
    assert meta["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert int(state["conv2.2.num_batches_tracked"]) == 123
    ours = OurLCNN(input_shape=meta["config"]["model"]["input_shape"]).eval()
    ours.load_state_dict(state)  # strict: same keys, no "module." prefix
    x = torch.randn(2, 1, 1024, 201)
    with torch.no_grad():
        expected_emb, expected_logits = original(x)
        emb, logits = ours(x)
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(emb, expected_emb)


def test_release_with_an_unexpected_module_class_is_refused(tmp_path: Path, fake_model_module: None) -> None:
    src = tmp_path / "relu.pt"
    make_release(src, extra=nn.ReLU())
    with pytest.raises(UserError, match=r"torch\.nn\.modules\.activation\.ReLU"):
        main([str(src), str(tmp_path / "out.safetensors"), "--trust-pickle"])


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_legacy_format_whole_model_pickle_is_explained(tmp_path: Path, fake_model_module: None) -> None:
    src = tmp_path / "old.pt"
    torch.save(LCNN(), src, _use_new_zipfile_serialization=False)  # torch < 1.6 layout: module source inside
    with pytest.raises(UserError, match=r"old\.pt: whole-model pickle in torch's legacy \(pre-1\.6\) format"):
        main([str(src), str(tmp_path / "out.safetensors"), "--trust-pickle"])


def test_shape_mismatch_is_listed(tmp_path: Path, fake_model_module: None) -> None:
    src, out = tmp_path / "small.pt", tmp_path / "out.safetensors"
    make_release(src, enc_dim=128)
    with pytest.raises(UserError, match=r"out\.3\.weight has shape \[128, 80\], expected \[256, 80\]"):
        main([str(src), str(out), "--trust-pickle"])
    assert not out.exists()


def test_plain_state_dict_with_module_prefix_is_accepted(tmp_path: Path) -> None:
    src, out = tmp_path / "state.pt", tmp_path / "out.safetensors"
    state = OurLCNN().state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, src)
    assert main([str(src), str(out), "--trust-pickle"]) == 0
    loaded, _ = load_model_weights(out)
    assert loaded.keys() == state.keys()
    torch.testing.assert_close(loaded["fc_mu.weight"], state["fc_mu.weight"])


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="garbage.pt: not a readable torch checkpoint"):
        main([str(garbage), str(tmp_path / "o.safetensors"), "--trust-pickle"])
    with pytest.raises(UserError, match="missing.pt: released checkpoint not found"):
        main([str(tmp_path / "missing.pt"), str(tmp_path / "o.safetensors"), "--trust-pickle"])
    with pytest.raises(UserError, match="nothing.safetensors: weights file not found"):
        load_model_weights(tmp_path / "nothing.safetensors")
    with pytest.raises(UserError, match="garbage.pt: not a readable safetensors file"):
        load_model_weights(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign))
    with pytest.raises(UserError, match="foreign.safetensors: not a weights file of this toolkit"):
        load_model_weights(foreign)


def test_weights_round_trip(tmp_path: Path) -> None:
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(7)}
    save_model_weights(tmp_path / "w.safetensors", state, {"config": RELEASED_CONFIG})
    loaded, meta = load_model_weights(tmp_path / "w.safetensors")
    assert meta == {"config": RELEASED_CONFIG}
    assert loaded["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and int(loaded["b"]) == 7


@pytest.mark.slow
def test_cli_prints_one_line_error_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.import_released",
            str(tmp_path / "x.pt"),
            str(tmp_path / "y.safetensors"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("error: ")
        and "--trust-pickle" in proc.stderr
        and "Traceback" not in proc.stderr
    )
