"""Shared test fixtures and helpers: repo paths, the optional ../shared reference data, and the corpora,
checkpoints, score files and stand-in releases used both by a feature's own module and by
test_reliability.py (import helpers with ``from conftest import ...``)."""

from __future__ import annotations

import os
import socket
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFIGS = REPO / "configs"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Two cores: keep each test process from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# Imported only now: the BLAS libraries read OMP_NUM_THREADS when they load.
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def free_port() -> int:
    """A TCP port free on this machine now (for torchrun's --master_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _restore_deterministic_algorithms() -> Iterator[None]:
    """A test that trains in-process with --deterministic switches torch's deterministic kernels on for the
    whole worker; later tests then ran slower (XLSR-Mamba's tiny epoch: 2 s -> 42 s) and order-dependently."""
    enabled, warn_only = (torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder with the real ASVspoof 2019 LA reference files; skip when absent."""
    if not (SHARED / "asvspoof2019_la").is_dir():
        pytest.skip("../shared/asvspoof2019_la is not present")
    return SHARED


# --- A hand-written 2019 LA corpus for preprocess.py (test_preprocess.py, test_reliability.py) -----------

PROTOCOL = "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt"


def write_corpus(root: Path, specs: list[tuple[str, str]], partition: str = "train") -> list[str]:
    """Write FLACs and a 2019 LA CM protocol; ``specs`` = [(utt_id, kind)], kind in
    ``16k`` (1-2.5 s mono), ``short`` (0.2 s), ``8k-stereo``, ``empty``, ``truncated``, ``text``."""
    flac = root / f"ASVspoof2019_LA_{partition}" / "flac"
    flac.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (utt, kind) in enumerate(specs):
        rng = np.random.default_rng(i)
        path = flac / f"{utt}.flac"
        t = np.arange(int(16000 * (1.0 + 0.5 * (i % 4)))) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (120 + 10 * i) * t) + 0.05 * rng.standard_normal(t.size)
        if kind == "16k":
            sf.write(path, wave, 16000, format="FLAC", subtype="PCM_16")
        elif kind == "short":
            sf.write(path, wave[:3200], 16000, format="FLAC", subtype="PCM_16")
        elif kind == "8k-stereo":
            stereo = np.stack([wave[::2], 0.5 * wave[::2]], axis=1)
            sf.write(path, stereo, 8000, format="FLAC", subtype="PCM_16")
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "truncated":
            sf.write(path, wave, 16000, format="FLAC", subtype="PCM_16")
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        elif kind == "text":
            path.write_text("this is not audio\n")
        else:
            raise ValueError(kind)
        key = "bonafide" if i % 3 == 0 else "spoof"
        lines.append(f"LA_{i % 2:04d} {utt} - {'-' if key == 'bonafide' else f'A0{1 + i % 6}'} {key}\n")
    (root / PROTOCOL).parent.mkdir(parents=True, exist_ok=True)
    (root / PROTOCOL).write_text("".join(lines))
    return [utt for utt, _ in specs]


GOOD = [(f"LA_T_{i:07d}", "16k") for i in range(6)]
GOOD += [("LA_T_0000006", "short"), ("LA_T_0000007", "8k-stereo")]


@pytest.fixture
def two_threads():
    """Pin torch to 2 threads (restored afterwards): fp32 CPU results may depend on the thread count, and
    other tests (or preprocess.py under torchrun) change it for the whole pytest process."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield {**os.environ, "OMP_NUM_THREADS": "2"}
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The GOOD files in the 2019 LA layout (train partition)."""
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, GOOD)
    return root


# --- The tiny generated corpus with F0 and SSL feature stores (training, scoring) ------------------------

N_TRAIN, N_DEV, N_EVAL = 8, 7, 7


def build_tiny_corpus(base: Path) -> Path:
    """Generated corpus under base/LA and feature stores under base/feats (reused if already built)."""
    import preprocess
    from data.demo.__main__ import main as generate_demo

    done = base / "ready"
    if not done.exists():
        generate_demo(
            [
                "--out",
                str(base / "LA"),
                "--n-train",
                str(N_TRAIN),
                "--n-dev",
                str(N_DEV),
                "--n-eval",
                str(N_EVAL),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        common = [
            "--data-root",
            str(base / "LA"),
            "--out",
            str(base / "feats"),
            "--num-workers",
            "0",
            "--no-progress",
        ]
        for recipe in ("demo_sr_la_res2net_f0", "demo_xlsr_lcnn"):
            assert preprocess.main([*common, "--config", str(CONFIGS / f"{recipe}.yaml")]) == 0
        done.touch()
    return base


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train / 7 dev / 7 eval utterances from data.demo, with F0 and random:narrow SSL feature stores
    made by preprocess.py, built once per session."""
    return build_tiny_corpus(tmp_path_factory.getbasetemp() / "tiny_corpus")


def recipe(tmp_path: Path, name: str, **sections: dict) -> Path:
    """A copy of configs/<name>.yaml with whole sections replaced (overrides cannot remove keys)."""
    from utils.config import load_config, save_config

    cfg = load_config(CONFIGS / f"{name}.yaml")
    cfg.update(sections)
    path = tmp_path / f"{name}_custom.yaml"
    save_config(cfg, path)
    return path


def run_tiny_f0_recipe(tmp_path: Path, data_root: Path | None, dataset: str, name: str,
                       data_flags: Sequence[str] = ()) -> Path:
    """run_recipe.py over every stage with a tiny F0 + LCNN recipe (24 frames, one epoch) on the corpus
    ``dataset`` under ``data_root`` (None: the corpus is named by ``data_flags``, e.g. ``--manifest
    train=FILE``); returns the output folder (its run is named ``name``). Exit 0 is asserted."""
    import run_recipe
    from utils.errors import run_cli

    config = recipe(tmp_path, "demo_xlsr_lcnn", frontend={"name": "f0", "n_frames": 24},
                    model={"name": "lcnn", "input_shape": [1, 45, 24]},
                    data={"dataset": dataset, "train": "train", "dev": "dev", "eval": "eval"})
    out = tmp_path / "out"
    root = [] if data_root is None else ["--data-root", str(data_root)]
    argv = ["--config", str(config), *root, *data_flags, "--out", str(out), "--name", name,
            "--no-progress", "train.epochs=1", "train.batch_size=4", "train.amp=none", "train.compile=false"]
    assert run_cli(run_recipe.main, argv) == 0
    return out


#: Smaller back-end settings where a recipe's model is slow on CPU (XLSR-Mamba: 12 encoders unrolled over
#: every frame; Nes2Net-X: 7 x 8 nested branches): the same classes and code paths at a fraction of the cost.
SMALLER_MODELS = {"xlsr_mamba": {"emb_size": 16, "num_encoders": 2}, "nes2net_x": {"nes_ratio": [2, 2]}}


# --- An untrained checkpoint and a few recordings for generate_score.py ---------------------------------

THRESHOLD = 0.05


def make_checkpoint(path: Path, **model_overrides: object) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """An untrained demo XLS-R-LCNN checkpoint in our format (seeded), with a saved threshold."""
    from models import build_model
    from models.losses import build_loss
    from utils.checkpoint import save_checkpoint
    from utils.config import load_config

    cfg = load_config(CONFIGS / "demo_xlsr_lcnn.yaml")
    cfg["model"].update(model_overrides)
    torch.manual_seed(0)
    model, loss = build_model(cfg["model"]).eval(), build_loss(cfg["loss"]).eval()
    save_checkpoint(
        {
            "model": model.state_dict(),
            "loss": loss.state_dict(),
            "config": cfg,
            "epoch": 1,
            "threshold": THRESHOLD,
            "best": {"epoch": 1, "threshold": THRESHOLD},
        },
        path,
    )
    return path, model, loss


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    t = np.arange(int(44100 * 2.5)) / 44100
    stereo = 0.3 * np.stack([np.sin(2 * np.pi * 180 * t), np.sin(2 * np.pi * 310 * t)], axis=1)
    files = {
        "short": (rng.standard_normal(4800) * 0.1, 16000),
        "long": (rng.standard_normal(160000) * 0.1, 16000),
        "stereo": (stereo, 44100),
    }
    out = {}
    for name, (wave, rate) in files.items():
        out[name] = folder / f"{name}.wav"
        sf.write(out[name], wave.astype(np.float32), rate)
    return out


# --- Toy score files for evaluate_tDCF_asvspoof19.py -----------------------------------------------------


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, Path]:
    """A toy corpus: 30 bona fide, 60 spoof (A01, A02) CM scores in every layout, a protocol, ASV scores."""
    from utils.scorefiles import write_scores

    rng = np.random.default_rng(1)
    ids = [f"LA_T_{i:04d}" for i in range(90)]
    keys = ["bonafide"] * 30 + ["spoof"] * 60
    attacks = ["-"] * 30 + ["A01", "A02"] * 30
    scores = np.concatenate((rng.normal(2, 1, 30), rng.normal(-1, 1, 60))).tolist()
    paths = {name: tmp_path / f"{name}.txt" for name in ("official", "plain", "lcnn", "protocol", "asv")}
    write_scores(paths["official"], ids, scores, attacks, keys)
    write_scores(paths["plain"], ids, scores)
    paths["lcnn"].write_text(
        "".join(f"{u}_{a} {s!r} {k}\n" for u, a, k, s in zip(ids, attacks, keys, scores, strict=True))
    )
    rows = zip(ids, attacks, keys, strict=True)
    paths["protocol"].write_text("".join(f"LA_0001 {u} - {a} {k}\n" for u, a, k in rows))
    asv = [("bonafide", "target", s) for s in rng.normal(5, 1, 40)]
    asv += [("bonafide", "nontarget", s) for s in rng.normal(-5, 1, 40)]
    asv += [(a, "spoof", s) for a in ("A01", "A02") for s in rng.normal(0, 3, 20)]
    paths["asv"].write_text("".join(f"{c} {k} {s:.6f}\n" for c, k, s in asv))
    return paths


# --- A stand-in for the released XLS-R-LCNN whole-model pickle (models/import_released.py) ---------------
# Stand-in classes ``LCNN`` and ``MaxFeatureMap2D`` registered under a fake module ``model`` (as the
# released code names them), pickled with ``torch.save(model)``; the fake module is removed afterwards.


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
    """Layout of the released class (docs/systems/xlsr_lcnn.md), written independently of models.lcnn."""

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


def train_until_first_checkpoint_then_kill(args: list[str], out: Path, timeout: float = 120.0) -> None:
    """Run ``main_train.py *args --out out --throttle 60`` and SIGKILL it once ``out/last.pt`` exists: the
    throttle pauses after each epoch's checkpoint, so the kill lands between epochs 1 and 2."""
    import signal
    import subprocess
    import time

    cmd = [sys.executable, "main_train.py", *args, "--out", str(out), "--throttle", "60"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not (out / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, f"no checkpoint after {timeout:.0f} s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


# What main_train.py writes into a run folder (rank 0 only), without --eval scores.
RUN_FILES = {
    "best.pt",
    "last.pt",
    "config.yaml",
    "command.txt",
    "environment.json",
    "history.csv",
    "scores_dev.txt",
    "summary.json",
    "tb",
}
