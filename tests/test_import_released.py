"""Importer of the released XLS-R-LCNN whole-model pickle (SPEC §4).

The test writes its own "release": stand-in classes ``LCNN`` and ``MaxFeatureMap2D`` registered
under a fake module ``model`` (as the released code names them), pickled with ``torch.save(model)``,
plain and inside DataParallel; the fake module is removed before importing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from models.import_released import RELEASED_CONFIG, load_model_weights, main, save_model_weights
from models.lcnn import LCNN as OurLCNN
from utils.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]


class MaxFeatureMap2D(nn.Module):
    """As in the release: view channels as (2, C/2) and take the max over the 2."""

    __module__ = "model"

    def __init__(self, max_dim: int = 1) -> None:
        super().__init__()
        self.max_dim = max_dim

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        shape = list(inputs.size())
        shape[self.max_dim] //= 2
        shape.insert(self.max_dim, 2)
        return inputs.view(*shape).max(self.max_dim)[0]


def _released_block(cin: int, cout: int, k: int, *after: str) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, (k, k), 1, padding=(k // 2, k // 2)), MaxFeatureMap2D()]
    layers += [
        nn.MaxPool2d((2, 2), (2, 2)) if a == "pool" else nn.BatchNorm2d(cout // 2, affine=False)
        for a in after
    ]
    return nn.Sequential(*layers)


class LCNN(nn.Module):
    """Layout of the released class (SPEC §4), written independently of models.lcnn."""

    __module__ = "model"

    def __init__(
        self, num_nodes: int = 201, enc_dim: int = 256, nclasses: int = 2, extra: nn.Module | None = None
    ):
        super().__init__()
        self.num_nodes, self.enc_dim, self.nclasses = num_nodes, enc_dim, nclasses
        self.conv1 = _released_block(1, 64, 5, "pool")
        self.conv2 = _released_block(32, 64, 1, "bn")
        self.conv3 = _released_block(32, 96, 3, "pool", "bn")
        self.conv4 = _released_block(48, 96, 1, "bn")
        self.conv5 = _released_block(48, 128, 3, "pool")
        self.conv6 = _released_block(64, 128, 1, "bn")
        self.conv7 = _released_block(64, 64, 3, "bn")
        self.conv8 = _released_block(32, 64, 1, "bn")
        self.conv9 = _released_block(32, 64, 3, "pool")
        self.out = nn.Sequential(
            nn.Dropout(0.7),
            nn.Linear(64 * (num_nodes // 16) * 32, 160),
            MaxFeatureMap2D(),
            nn.Linear(80, enc_dim),
        )
        self.fc_mu = nn.Linear(enc_dim, nclasses)
        if extra is not None:
            self.extra = extra

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for n in range(1, 10):
            x = getattr(self, f"conv{n}")(x)
        feat = self.out(torch.flatten(x, 1))
        return feat, self.fc_mu(feat)


@pytest.fixture
def fake_model_module() -> Iterator[None]:
    """Register the stand-ins as module ``model`` while pickling; remove it afterwards."""
    previous = sys.modules.get("model")
    module = types.ModuleType("model")
    module.LCNN, module.MaxFeatureMap2D = LCNN, MaxFeatureMap2D
    sys.modules["model"] = module
    try:
        yield
    finally:
        if previous is None:
            sys.modules.pop("model", None)
        else:
            sys.modules["model"] = previous


def make_release(path: Path, wrap: bool = False, **kwargs: object) -> LCNN:
    """Build a released-style LCNN with non-trivial BN statistics and ``torch.save`` it whole."""
    torch.manual_seed(0)
    model = LCNN(**kwargs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(123)
    model.eval()
    torch.save(nn.DataParallel(model) if wrap else model, path)
    return model


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


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_with_a_disallowed_global_is_refused_without_running_it(
    tmp_path: Path, zip_format: bool
) -> None:
    src, out, marker = tmp_path / "evil.pt", tmp_path / "out.safetensors", tmp_path / "pwned"
    payload = {"weights": torch.zeros(2), "payload": _Evil(marker)}
    torch.save(payload, src, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError, match=r"evil\.pt: refusing to unpickle: .*system"):
        main([str(src), str(out), "--trust-pickle"])
    assert not marker.exists()
    assert not out.exists()


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


def test_refuses_without_trust_pickle(
    tmp_path: Path, fake_model_module: None, capsys: pytest.CaptureFixture
) -> None:
    src, out = tmp_path / "release.pt", tmp_path / "out.safetensors"
    make_release(src)
    assert run_cli(main, [str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--trust-pickle" in err and err.count("\n") == 1
    assert not out.exists()


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
