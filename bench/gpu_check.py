"""A prepared CUDA check: proves the toolkit's GPU paths and measures GPU speed, in one run of <= 4 minutes.

    python bench/gpu_check.py --out gpu_out              # on a machine with one CUDA GPU
    python bench/gpu_check.py --out gpu_out --compile    # also the torch.compile variants (+ ~5 min)
    python bench/gpu_check.py --dry-run                  # list the parts (also what happens without CUDA)
    python bench/gpu_check.py --out gpu_out --only cuda_tests matmul

Parts (each with its own time budget; a part that fails or runs out of time is reported and the rest
still run; the budgets add up to under 4 minutes, `--total` caps the whole run):

    facts            nvidia-smi, torch/CUDA/cuDNN versions, device properties
    matmul           8192^3 bf16 matrix products: the achievable peak the utilisations are also given against
    flops            FLOPs per utterance/sample of every measured workload (meta device; utils/flops.py)
    cuda_tests       `pytest -m cuda` (tests/test_cuda.py): AMP bf16/fp16 steps of every model, nccl DDP,
                     GPU vs CPU scores and SSL features, checkpoints GPU -> CPU -> GPU
    train_lcnn, train_sr_la_res2net
                     training samples/s of the recipe (batch 64) through engine.trainer: the recipe's own
                     settings (fp32) and bf16 + channels_last (+ train.compile with --compile)
    ssl_extract      XLS-R 300M-sized (random weights) extraction utt/s at batch 16/32/64 in bf16, with and
                     without writing the float16 rows to a feature store (data/store.py)
    store_read       random minibatches of 64 from a store through the trainer's DataLoader (0/2/4 workers)
                     vs the training rates above: is training I/O-bound?
    decode           FLAC decoding (data/audio.py) utt/s with 1, 2 and 8 threads
    finetune         one XLS-R-AASIST fine-tuning step (300M random SSL model, batch 14, bf16) with and
                     without gradient checkpointing: time and peak memory

Outputs in --out: gpu_check.json (everything, rewritten after every part), gpu_check.md (the tables),
nvidia-smi.txt, cuda_tests.log and cuda_tests.xml. Utilisation = FLOPs per item x items/s, against the
datasheet dense bf16 peak of the GPU (when known) and against the measured matmul rate.

Machines without network (e.g. a lent GPU machine with only a CUDA PyTorch image): the exercised paths
import soundfile (+ cffi, pycparser) and soxr, which such images lack. Download their wheels here first
(`bash bench/gpu_wheels.sh`: CPython 3.12 manylinux x86-64 wheels into the ignored folder `.whl/`),
carry `.whl` with the working tree and install them there before the run:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 bench/gpu_check.py --out "$OUT"

(with this project's device tool: ``run(command=..., carry=[".whl"])``). If the modules are still
missing and `--wheels` (default `.whl/`) holds wheels, the script unpacks them itself into a temporary
folder and puts it on sys.path and PYTHONPATH (wheels are zip files). The script needs torch >= 2.1 and
uses no API newer than torch 2.11.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from utils.flops import FlopCount, module_flops  # noqa: E402

# The training harness is shared with tests/test_cuda.py, which this script runs on the GPU.
sys.path.insert(0, str(REPO / "tests"))
from harness import device_trainer, random_batches, train_on_batches  # noqa: E402

#: Modules on the exercised paths that a CUDA PyTorch image may lack (carried as wheels).
CARRIED_MODULES = ("soundfile", "soxr")
#: Datasheet dense bf16 tensor-core peaks (TFLOP/s, no sparsity); first match of the device name wins.
DATASHEET_BF16_TFLOPS = (
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b.*\bNVL\b", 835.0),
    (r"\bH[12]00\b|\bH800\b|\bGH200\b", 989.0),
    (r"\bA100\b|\bA800\b", 312.0),
    (r"\bL40S\b", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
)
SSL_KIND = "xlsr-300m"
SSL_SAMPLES = 64600  # 4.04 s: what the XLS-R recipes cut or tile every utterance to
RECIPES = {"train_lcnn": "xlsr_lcnn", "train_sr_la_res2net": "sr_la_res2net_f0"}
#: XLS-R-AASIST fine-tuning (SSL_Anti-spoofing's settings; class 0 = bona fide here).
FINETUNE_CFG: dict[str, Any] = {
    "frontend": {"name": "ssl", "model": f"random:{SSL_KIND}", "n_samples": SSL_SAMPLES, "trainable": True},
    "model": {"name": "xlsr_aasist", "input_shape": [1, 1024, 201]},
    "loss": {"name": "weighted_ce", "weights": [0.9, 0.1]},
    "optim": {"name": "adam", "lr": 1.0e-6, "weight_decay": 1.0e-4},
    "sched": {"name": "none"},
    "train": {"batch_size": 14, "amp": "bf16", "num_workers": 0},
}


# ------------------------------------------------------------------------------------------ wheels


def missing_modules(names: Sequence[str] | None = None) -> list[str]:
    """The modules of ``names`` (default `CARRIED_MODULES`) that cannot be imported here."""
    missing = []
    for name in CARRIED_MODULES if names is None else names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def use_carried_wheels(wheel_dir: Path, site: Path) -> list[str]:
    """When `CARRIED_MODULES` are missing and ``wheel_dir`` holds wheels, unpack every wheel into
    ``site`` and put it first on sys.path and PYTHONPATH (for subprocesses); returns the wheels used."""
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if not wheels or not missing_modules():
        return []
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
    return [w.name for w in wheels]


# ------------------------------------------------------------------------------------------ FLOPs


class _SSLThenBackEnd(torch.nn.Module):
    """SSL model -> last hidden state -> back end, as the fine-tuned countermeasure computes it."""

    def __init__(self, ssl: torch.nn.Module, backend: torch.nn.Module) -> None:
        super().__init__()
        self.ssl, self.backend = ssl, backend

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backend(self.ssl(x).last_hidden_state)


def _ssl_model(kind: str) -> torch.nn.Module:
    from transformers import Wav2Vec2Model

    from models.frontends.ssl import random_model_config

    config = random_model_config(kind)
    # Every layer runs (layer drop would make the cost random); masking changes no FLOPs.
    config.layerdrop, config.apply_spec_augment = 0.0, False
    return Wav2Vec2Model(config)


@functools.cache
def ssl_flops(kind: str = SSL_KIND, n_samples: int = SSL_SAMPLES) -> FlopCount:
    """FLOPs of one frozen SSL forward (extraction) of an ``n_samples`` utterance."""
    return module_flops(lambda: _ssl_model(kind), (n_samples,), batch=1, train=False)


@functools.cache
def recipe_flops(recipe: str) -> FlopCount:
    """FLOPs per sample of a recipe's back end on its ``input_shape``: scoring (forward) and training."""
    from models import build_model
    from utils.config import load_config

    cfg = load_config(REPO / "configs" / f"{recipe}.yaml")
    return module_flops(lambda: build_model(cfg["model"]), tuple(cfg["model"]["input_shape"]))


@functools.cache
def finetune_flops(kind: str = SSL_KIND, n_samples: int = SSL_SAMPLES) -> FlopCount:
    """FLOPs per utterance of XLS-R-AASIST fine-tuning (SSL model + back end, forward and backward;
    recomputation by gradient checkpointing not included)."""
    from models import build_model

    def build() -> torch.nn.Module:
        return _SSLThenBackEnd(_ssl_model(kind), build_model(FINETUNE_CFG["model"]))

    return module_flops(build, (n_samples,), batch=2, train=True)


def datasheet_peak(device_name: str) -> float | None:
    """Datasheet dense bf16 TFLOP/s of a GPU named ``device_name``, None when not in the table."""
    for pattern, peak in DATASHEET_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return peak
    return None


# ------------------------------------------------------------------------------------------ training helpers


# ------------------------------------------------------------------------------------------ the run


class PartTimeout(Exception):
    """A part ran past its time budget."""


@dataclass
class Context:
    """What parts share: arguments, device, output and scratch folders, the current part's deadline and
    what it recorded so far (kept when it fails later), the peaks utilisation is computed against, and
    the results of the parts already run."""

    args: argparse.Namespace
    device: torch.device
    out: Path
    tmp: Path
    deadline: float = 0.0
    rows: list[dict[str, str]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def left(self) -> float:
        """Seconds left of the current part's budget."""
        return self.deadline - time.monotonic()

    def share(self, runs_left: int, reserve: float = 2.0, floor: float = 1.5) -> float:
        """Seconds for the next of ``runs_left`` measurements: an equal share of what is left."""
        return max(floor, (self.left() - reserve) / max(runs_left, 1))

    def record(self, what: str, value: str, util: str = "", note: str = "", **numbers: Any) -> None:
        """One line of the part's table, and its numbers (under ``what``) for the JSON."""
        self.rows.append({"what": what, "value": value, "util": util, "note": note})
        if numbers:
            self.raw[what] = numbers
        print(f"   {what}: {value}  {util}  {note}", flush=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> int:
        """Peak bytes allocated on the device since `reset_peak_memory` (0 on the CPU)."""
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0

    def measure(self, step: Callable[[], int], seconds: float, min_steps: int = 2) -> tuple[int, float]:
        """Run ``step()`` (returns items done) at least ``min_steps`` times and until ``seconds`` have
        passed (or the part's budget nears its end) -> (items, seconds), device work included."""
        self.sync()
        start = time.perf_counter()
        items = steps = 0
        while steps < min_steps or (time.perf_counter() - start < seconds and self.left() > 3.0):
            items += step()
            steps += 1
            self.sync()
        return items, time.perf_counter() - start

    def utilisation(self, flops_per_item: float, items_per_s: float) -> tuple[str, dict[str, float]]:
        """Achieved TFLOP/s and its fraction of each peak -> (text for the table, numbers for the JSON)."""
        achieved = flops_per_item * items_per_s / 1e12
        numbers = {"tflops": achieved, **{f"util_{k}": achieved / v for k, v in self.peaks.items()}}
        text = f"{achieved:.1f} TFLOP/s" + "".join(
            f"; {100 * achieved / v:.1f} % of {k} {v:.0f}" for k, v in self.peaks.items()
        )
        return text, numbers


@dataclass(frozen=True)
class Part:
    name: str
    budget_s: float
    what: str
    run: Callable[[Context], None]
    compile_budget_s: float = 0.0  # added with --compile
    needs_cuda: bool = True


PARTS: list[Part] = []


def part(name: str, budget_s: float, what: str, compile_budget_s: float = 0.0, needs_cuda: bool = True):
    """Register ``fn(ctx)``, which records its results with `Context.record` (run in registration order)."""

    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        PARTS.append(Part(name, budget_s, what, fn, compile_budget_s, needs_cuda))
        return fn

    return register


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


# ------------------------------------------------------------------------------------------ parts


@part("facts", 5, "nvidia-smi and torch/CUDA device facts")
def part_facts(ctx: Context) -> None:
    import transformers

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        facts.update(
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory=_gib(props.total_memory),
            bf16_supported=torch.cuda.is_bf16_supported(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    ctx.raw["facts"] = facts
    smi = []
    for args in (["nvidia-smi"], ["nvidia-smi", "-q", "-d", "CLOCK,POWER,MEMORY"]):
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
            smi.append(done.stdout + done.stderr)
        except (OSError, subprocess.TimeoutExpired) as exc:
            smi.append(f"{' '.join(args)}: {exc}\n")
    (ctx.out / "nvidia-smi.txt").write_text("\n".join(smi))
    for key, value in facts.items():
        ctx.record(key, str(value))


@part("matmul", 5, "bf16 8192^3 matrix products: the achievable peak")
def part_matmul(ctx: Context) -> None:
    n = 8192 if ctx.device.type == "cuda" else 1024
    a = torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    items, seconds = ctx.measure(lambda: int(bool((a @ b).shape)), 1.5, min_steps=10)
    tflops = 2 * n**3 * items / seconds / 1e12
    name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "CPU"
    sheet = datasheet_peak(name)
    if sheet is not None:
        ctx.peaks["datasheet"] = sheet
    ctx.peaks["matmul"] = tflops
    ctx.record(f"bf16 matmul {n}^3", f"{tflops:.3g} TFLOP/s", note=f"{items} products", tflops=tflops)
    ctx.record("datasheet dense bf16", f"{sheet:.0f} TFLOP/s" if sheet else f"unknown for {name}")


@part("flops", 15, "FLOPs per item of every measured workload (meta device)", needs_cuda=False)
def part_flops(ctx: Context) -> None:
    counts = {f"XLS-R 300M forward, {SSL_SAMPLES} samples": ssl_flops().forward}
    for recipe in RECIPES.values():
        f = recipe_flops(recipe)
        counts[f"{recipe} back end forward"] = f.forward
        counts[f"{recipe} back end training (fwd+bwd)"] = f.train
    ft = finetune_flops()
    counts["XLS-R-AASIST fine-tuning forward"] = ft.forward
    counts["XLS-R-AASIST fine-tuning (fwd+bwd)"] = ft.train
    for what, flops in counts.items():
        ctx.record(what, f"{flops / 1e9:.2f} GFLOP", gflop=flops / 1e9)


_TEST_LINE = re.compile(r"^(\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)")


def parse_junit(path: Path) -> list[dict[str, Any]]:
    """Test cases of a pytest junit XML: name, outcome, seconds, properties, first line of the message."""
    import xml.etree.ElementTree as ET

    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                lines = (node.get("message") or node.text or "").strip().splitlines()
                message = lines[0][:200] if lines else ""
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        seconds = float(case.get("time") or 0.0)
        cases.append(
            {
                "name": case.get("name"),
                "outcome": outcome,
                "seconds": seconds,
                "properties": props,
                "message": message,
            }
        )
    return cases


def parse_verbose_log(text: str) -> list[dict[str, Any]]:
    """Test cases from pytest -v output (what is left when pytest was killed before writing its XML)."""
    return [
        {"name": m.group(1), "outcome": m.group(2).lower(), "seconds": None, "properties": {}, "message": ""}
        for m in map(_TEST_LINE.match, text.splitlines())
        if m
    ]


@part("cuda_tests", 90, "pytest -m cuda (tests/test_cuda.py and any other cuda-marked test)")
def part_cuda_tests(ctx: Context) -> None:
    xml, log = ctx.out / "cuda_tests.xml", ctx.out / "cuda_tests.log"
    cmd = [
        sys.executable, "-m", "pytest", "-m", "cuda", "-o", "addopts=", "-v", "-ra",
        "-p", "no:cacheprovider", "--continue-on-collection-errors",
        "-o", "junit_family=xunit1", f"--junitxml={xml}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        # Own session, so that a timeout also ends what the tests started (torchrun and its workers).
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        code = None
        try:
            code = proc.wait(timeout=max(5.0, ctx.left() - 2.0))
        except subprocess.TimeoutExpired:
            pass
        finally:  # also when the part's own time limit interrupts the wait
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if xml.exists() and code is not None:
        cases = parse_junit(xml)
    else:
        cases = parse_verbose_log(log.read_text(errors="replace"))
    counts = {o: sum(c["outcome"] == o for c in cases) for o in ("passed", "failed", "error", "skipped")}
    summary = ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "no tests ran"
    ctx.record("pytest -m cuda", summary, note="TIMED OUT" if code is None else f"exit code {code}", **counts)
    ctx.raw["cases"] = cases
    for case in cases:
        props = "; ".join(f"{k}={v}" for k, v in case["properties"].items())
        seconds = f" ({case['seconds']:.1f} s)" if case["seconds"] is not None else ""
        ctx.record(
            case["name"], case["outcome"] + seconds, note="; ".join(filter(None, [props, case["message"]]))
        )
    if code != 0 or not counts["passed"]:
        raise RuntimeError(f"pytest -m cuda: {summary} (exit code {code}); see cuda_tests.log")


def _epoch_step(
    trainer: Any, batches: list[tuple[torch.Tensor, torch.Tensor]], label: str
) -> Callable[[], int]:
    """A `Context.measure` step: one more training epoch over ``batches`` -> samples trained."""
    epochs = iter(range(1, 1 << 30))

    def step() -> int:
        loss = train_on_batches(trainer, batches, next(epochs))
        if not np.isfinite(loss):
            raise RuntimeError(f"{label}: training loss is {loss}")
        return sum(len(y) for _x, y in batches)

    return step


def _train_throughput(ctx: Context, recipe: str) -> None:
    from utils.config import load_config

    cfg = load_config(REPO / "configs" / f"{recipe}.yaml")
    shape, batch = tuple(cfg["model"]["input_shape"]), int(cfg["train"]["batch_size"])
    # The store's dtype: SSL hidden states are float16 there, F0 features float32 (the trainer casts).
    dtype = torch.float16 if cfg["frontend"]["name"] == "ssl" else torch.float32
    batches = random_batches(shape, batch, 4, ctx.device, dtype)
    flops = recipe_flops(recipe).train
    variants = [
        ("recipe settings (fp32)", {}),
        ("bf16 + channels_last", {"amp": "bf16", "channels_last": True}),
    ]
    if ctx.args.compile:
        variants.append(("bf16 + channels_last + compile", {**variants[1][1], "compile": True}))
    for i, (label, overrides) in enumerate(variants):
        run_cfg = {**cfg, "train": {**cfg["train"], **overrides, "grad_accum": 1}}
        trainer = device_trainer(run_cfg, ctx.device, ctx.tmp / f"{recipe}_{i}")
        start = time.perf_counter()
        train_on_batches(trainer, batches[:2])  # warm-up: cuDNN plans, allocator, compiling
        warm = time.perf_counter() - start
        share = max(2.0, ctx.share(len(variants) - i) - warm)
        items, seconds = ctx.measure(_epoch_step(trainer, batches, label), share, min_steps=1)
        rate = items / seconds
        util, numbers = ctx.utilisation(flops, rate)
        note = f"{items} samples in {seconds:.1f} s; warm-up {warm:.1f} s"
        what = f"{recipe} training, batch {batch}, {label}"
        ctx.record(what, f"{rate:,.0f} samples/s", util, note, samples_per_s=rate, warmup_s=warm, **numbers)
        del trainer
        torch.cuda.empty_cache()


def best_rate(result: dict[str, Any] | None, key: str = "samples_per_s") -> float | None:
    """The highest ``key`` among a finished part's recorded numbers (None when it recorded none)."""
    rates = [v[key] for v in (result or {}).get("raw", {}).values() if isinstance(v, dict) and key in v]
    return max(rates) if rates else None


@part("train_lcnn", 15, "LCNN training samples/s (recipe batch 64) via engine.trainer", compile_budget_s=90)
def part_train_lcnn(ctx: Context) -> None:
    _train_throughput(ctx, RECIPES["train_lcnn"])


@part("train_sr_la_res2net", 17, "SR-LA-Res2Net training samples/s (batch 64) via engine.trainer",
      compile_budget_s=150)  # fmt: skip
def part_train_sr_la_res2net(ctx: Context) -> None:
    _train_throughput(ctx, RECIPES["train_sr_la_res2net"])


def _speech_like(n: int, seconds: Sequence[float]) -> list[np.ndarray]:
    from bench.bench_preprocess import synthetic_waves

    return synthetic_waves(n, seconds, seed=3)


def _store_index(n: int) -> list[tuple[str, str, str, str]]:
    """Store index rows ``utt_id speaker attack key``, alternating spoof and bona fide."""
    return [
        (f"LA_T_{i:07d}", "LA_0000", "-" if i % 2 else "A01", "bonafide" if i % 2 else "spoof")
        for i in range(n)
    ]


@part("ssl_extract", 33, "XLS-R 300M-sized extraction utt/s, batch 16/32/64, bf16, with/without the store",
      compile_budget_s=90)  # fmt: skip
def part_ssl_extract(ctx: Context) -> None:
    from data.store import ShardWriter
    from models.frontends.ssl import SSLFrontEnd

    start = time.perf_counter()
    fe = SSLFrontEnd(f"random:{SSL_KIND}", device=ctx.device, dtype="bf16", n_samples=SSL_SAMPLES)
    ctx.record("model build (random init on CPU, then to the GPU)", f"{time.perf_counter() - start:.1f} s")
    waves = _speech_like(64, (2.5, 3.5, 4.5))  # tiled or cut to 4.04 s, as real utterances are
    flops = ssl_flops().forward
    n_rows = 64 * 64
    store = ShardWriter(
        ctx.tmp / "ssl_store", _store_index(n_rows), fe.settings(), fe.feature_shape, np.float16
    )
    cursor = iter(range(1 << 30))
    fronts = [(f"bf16, batch {b}", fe, b) for b in (16, 32, 64)]
    if ctx.args.compile:
        compiled = SSLFrontEnd(
            f"random:{SSL_KIND}", device=ctx.device, dtype="bf16", batch_size=32, compile=True
        )
        fronts.append(("bf16 + compile, batch 32", compiled, 32))
    runs = [(label, front, b, write) for label, front, b in fronts for write in (False, True)]
    for i, (label, front, b, write) in enumerate(runs):
        front.batch_size = b
        chunk = waves[:b]
        start = time.perf_counter()
        front.extract(chunk)  # warm-up (and compiling)
        warm = time.perf_counter() - start
        ctx.reset_peak_memory()

        def step(front=front, chunk=chunk, b=b, write=write) -> int:
            feats = front.extract(chunk)
            if write:
                first = (next(cursor) * b) % (n_rows - b + 1)  # rewriting rows costs the same
                store.commit(np.arange(first, first + b), feats)
            return b

        items, seconds = ctx.measure(step, ctx.share(len(runs) - i))
        rate = items / seconds
        util, numbers = ctx.utilisation(flops, rate)
        peak = ctx.peak_memory()
        note = f"{items} utt in {seconds:.1f} s; warm-up {warm:.1f} s; peak {_gib(peak)}"
        if write:
            note += f"; {rate * store._row_bytes / 1e6:,.0f} MB/s written (fdatasync per batch)"
        what = f"XLS-R 300M extraction, {label}, " + ("+ store write" if write else "no store")
        ctx.record(what, f"{rate:,.0f} utt/s", util, note, utt_per_s=rate, peak_memory_bytes=peak, **numbers)


@part("store_read", 13, "store minibatches of 64 through the trainer's DataLoader: is training I/O-bound?")
def part_store_read(ctx: Context) -> None:
    from data.dataset import StoreDataset
    from data.store import ShardWriter
    from engine.trainer import make_loader
    from utils.distributed import DistInfo

    kinds = [
        ("XLS-R hidden states (1, 1024, 201) float16", (1, 1024, 201), np.float16, "train_lcnn"),
        ("F0 subband (1, 45, 600) float32", (1, 45, 600), np.float32, "train_sr_la_res2net"),
    ]
    n_rows, batch = 1024, 64
    rng = np.random.default_rng(0)
    stores = {}
    for label, shape, dtype, _ in kinds:
        folder = ctx.tmp / f"read_{np.dtype(dtype).name}"
        writer = ShardWriter(folder, _store_index(n_rows), {"name": "bench"}, shape, dtype)
        block = rng.standard_normal((256, *shape)).astype(dtype)
        for lo in range(0, n_rows, 256):
            writer.commit(np.arange(lo, lo + 256), block)
        stores[label] = StoreDataset(writer.store_dir)
    runs = [(kind, workers) for kind in kinds for workers in (0, 2, 4)]
    for i, ((label, shape, dtype, train_part), workers) in enumerate(runs):
        loader, sampler = make_loader(stores[label], batch, DistInfo(device=ctx.device), True, 0, workers)
        share, epoch, items, seconds, first = ctx.share(len(runs) - i, 1.0, 1.0), 0, 0, 0.0, 0.0
        start = time.perf_counter()
        while epoch == 0 or seconds < share:
            sampler.set_epoch(epoch)
            for j, (x, _y, _u, _a) in enumerate(loader):
                x = x.to(ctx.device, non_blocking=True).float()
                if epoch == 0 and j == 0:  # worker start-up: once per epoch of ~400 batches in real training
                    ctx.sync()
                    first, start = time.perf_counter() - start, time.perf_counter()
                else:
                    items += x.shape[0]
            ctx.sync()
            seconds, epoch = time.perf_counter() - start, epoch + 1
        rate = items / seconds
        trained = best_rate(ctx.results.get(train_part))
        if trained is None:
            verdict = f"no {train_part} rate to compare with"
        elif rate < trained:
            verdict = f"I/O-BOUND: training ran {trained:,.0f} samples/s"
        else:
            verdict = f"{rate / trained:.1f}x the training rate ({trained:,.0f} samples/s)"
        mb = rate * int(np.prod(shape)) * np.dtype(dtype).itemsize / 1e6
        note = f"{mb:,.0f} MB/s; {verdict}; from the page cache (just written); first batch {first:.2f} s"
        what = f"read {label}, batch {batch}, {workers} workers"
        ctx.record(what, f"{rate:,.0f} samples/s", "", note, samples_per_s=rate, train_samples_per_s=trained)


@part("decode", 5, "FLAC decoding (data/audio.py load_audio) utt/s with 1, 2, 8 threads", needs_cuda=False)
def part_decode(ctx: Context) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import soundfile as sf

    from data.audio import SAMPLE_RATE, load_audio

    folder = ctx.tmp / "flac"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, wave in enumerate(_speech_like(32, (3.5,))):  # ~3.5 s: about the mean 2019 LA utterance
        paths.append(folder / f"u{i}.flac")
        sf.write(paths[-1], wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    thread_counts = (1, 2, 8)
    for n, threads in enumerate(thread_counts):
        with ThreadPoolExecutor(threads) as pool:
            step = lambda pool=pool: len(list(pool.map(load_audio, paths)))  # noqa: E731
            items, seconds = ctx.measure(step, ctx.share(len(thread_counts) - n, 1.0, 0.5), min_steps=1)
        rate = items / seconds
        ctx.record(f"decode 3.5 s FLAC, {threads} threads", f"{rate:,.0f} utt/s", utt_per_s=rate)


def enable_grad_checkpointing(cfg: dict[str, Any], frontend: Any) -> str:
    """Turn on gradient checkpointing of the SSL model: the recipe key ``train.grad_checkpoint`` when the
    trainer knows it, else Hugging Face's switch on the model itself. Returns which one was used."""
    from engine.trainer import TrainSettings

    if "grad_checkpoint" in getattr(TrainSettings, "__dataclass_fields__", {}):
        cfg["train"]["grad_checkpoint"] = True
        return "train.grad_checkpoint=true"
    import warnings

    with warnings.catch_warnings():  # transformers >= 5.2x renames it (activation_checkpointing_enable)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
            frontend.model.gradient_checkpointing_enable(**kwargs)
        except TypeError:  # older transformers
            frontend.model.gradient_checkpointing_enable()
    return "gradient_checkpointing_enable() on the SSL model"


@part("finetune", 30, "XLS-R-AASIST fine-tuning step, 300M random SSL, batch 14, bf16, +/- checkpointing")
def part_finetune(ctx: Context) -> None:
    import copy
    import gc

    from models.frontends import build_frontend

    flops = finetune_flops().train
    start = time.perf_counter()
    frontend = build_frontend(FINETUNE_CFG["frontend"], device=ctx.device)
    frontend.model.config.layerdrop = 0.0  # every layer every step: the cost the FLOPs count
    ctx.record("model build (random init on CPU, then to the GPU)", f"{time.perf_counter() - start:.1f} s")
    for checkpointing in (False, True):
        cfg = copy.deepcopy(FINETUNE_CFG)
        how = enable_grad_checkpointing(cfg, frontend) if checkpointing else "off"
        trainer = device_trainer(cfg, ctx.device, ctx.tmp / f"finetune_{checkpointing}", frontend=frontend)
        batch = int(cfg["train"]["batch_size"])
        waves = [(0.1 * x, y) for x, y in random_batches((SSL_SAMPLES,), batch, 1, ctx.device)]
        start = time.perf_counter()
        train_on_batches(trainer, waves)
        warm = time.perf_counter() - start
        ctx.reset_peak_memory()
        share = max(1.0, ctx.share(2 - int(checkpointing), 3.0) - warm)
        items, seconds = ctx.measure(_epoch_step(trainer, waves, "fine-tuning"), share, min_steps=2)
        peak = ctx.peak_memory()
        per_step = seconds * batch / items
        util, numbers = ctx.utilisation(flops, items / seconds)
        label = "with" if checkpointing else "without"
        what = f"XLS-R-AASIST fine-tuning step, batch {batch}, bf16, {label} grad checkpointing"
        note = f"peak {_gib(peak)}; {items // batch} steps; warm-up {warm:.1f} s; checkpointing: {how}"
        ctx.record(what, f"{per_step * 1000:,.0f} ms/step", util, note, seconds_per_step=per_step,
                   peak_memory_bytes=peak, **numbers)  # fmt: skip
        del trainer, waves
        gc.collect()
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ driver


def part_names() -> list[str]:
    return [p.name for p in PARTS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_check.py",
        description="Prove the CUDA paths (pytest -m cuda) and measure GPU throughput with FLOP-derived "
        "utilisation, in <= 4 minutes by default. Without CUDA it only lists the parts.",
        epilog="parts: " + ", ".join(part_names()),
    )
    add = parser.add_argument
    add("--out", default="gpu_check_out", help="folder for gpu_check.json/.md and logs")
    add("--compile", action="store_true", help="add the torch.compile variants (minutes more)")
    add("--dry-run", action="store_true", help="list the parts and their budgets; run nothing")
    add("--only", nargs="+", choices=part_names(), metavar="PART", help="run only these parts")
    add("--skip", nargs="+", choices=part_names(), default=[], metavar="PART", help="skip these parts")
    add("--scale", type=float, default=1.0, help="multiply every part's time budget (default 1)")
    add("--total", type=float, help="cap on the whole run in seconds (default: the parts' budgets added up)")
    add("--device", default="cuda", help="default cuda; cpu runs the parts on the CPU (slow; for testing)")
    add("--wheels", type=Path, default=REPO / ".whl", help="wheels to unpack when modules are missing")
    return parser


def selected_parts(args: argparse.Namespace) -> list[tuple[Part, float]]:
    """(part, budget in seconds) of the parts this run would do, in order."""
    chosen = []
    for p in PARTS:
        if (args.only and p.name not in args.only) or p.name in args.skip:
            continue
        chosen.append((p, args.scale * (p.budget_s + (p.compile_budget_s if args.compile else 0.0))))
    return chosen


def print_plan(parts: list[tuple[Part, float]]) -> None:
    for p, budget in parts:
        print(f"  {p.name:20s} {budget:5.0f} s  {'CUDA' if p.needs_cuda else 'host'}  {p.what}")
    print(f"  {'total':20s} {sum(b for _, b in parts):5.0f} s")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `PartTimeout` in this (main) thread after ``seconds``; code stuck in a C call is stopped when
    it returns to Python."""

    def expire(_signum: int, _frame: Any) -> None:
        # Again in 2 s, in case this one lands where exceptions are ignored (e.g. an at-fork hook).
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        raise PartTimeout(f"ran past its {seconds:.0f} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_part(ctx: Context, p: Part, budget: float, grace: float = 5.0) -> dict[str, Any]:
    """Run one part within ``budget`` seconds (stopped ``grace`` seconds later) -> its result: status
    (ok, failed, timeout), what it recorded (also before failing), error and traceback. Never raises."""
    ctx.deadline, ctx.rows, ctx.raw = time.monotonic() + budget, [], {}
    start = time.perf_counter()
    result: dict[str, Any] = {"status": "ok"}
    try:
        with time_limit(budget + grace):  # parts pace themselves by ctx.left(); this stops a runaway one
            p.run(ctx)
    except Exception as exc:  # noqa: BLE001 - a failing part is reported, the others still run
        result["status"] = "timeout" if isinstance(exc, PartTimeout) else "failed"
        result["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        result["traceback"] = traceback.format_exc().splitlines()[-12:]
        ctx.record("ERROR", result["status"], note=result["error"])
    result.update(rows=ctx.rows, raw=ctx.raw, seconds=round(time.perf_counter() - start, 2), budget_s=budget)
    return result


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a facts line, then one table per part."""
    facts = report.get("facts") or {}
    lines = ["# GPU check (bench/gpu_check.py)", ""]
    if facts:
        keys = ("torch", "cuda", "cudnn", "transformers", "python")
        lines += [
            f"{facts.get('device')} ({facts.get('memory')}), "
            + ", ".join(f"{k} {facts.get(k)}" for k in keys)
        ]
        lines += [""]
    for name, result in report["parts"].items():
        lines += [
            f"## {name}: {result['status']} ({result['seconds']:.0f} s of {result['budget_s']:.0f} s)",
            "",
        ]
        lines += ["| what | value | FLOP-derived utilisation | note |", "|---|---:|---|---|"]
        for r in result.get("rows", []):
            lines.append(
                "| "
                + " | ".join(str(r[k]).replace("|", "/") for k in ("what", "value", "util", "note"))
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any]) -> None:
    from utils.io import atomic_write_text

    atomic_write_text(out / "gpu_check.json", json.dumps(report, indent=1, default=str) + "\n")
    atomic_write_text(out / "gpu_check.md", markdown(report))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = selected_parts(args)
    device = torch.device(args.device)
    if args.dry_run or (device.type == "cuda" and not torch.cuda.is_available()):
        why = "dry run" if args.dry_run else "CUDA is not available: dry run"
        print(f"gpu_check: {why}; the parts a CUDA run does (budget, where):")
        print_plan(parts)
        return 0
    started = time.monotonic()
    total = args.total if args.total is not None else sum(b for _, b in parts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wheels = use_carried_wheels(args.wheels, Path(tempfile.gettempdir()) / "gpu_check_site")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    report: dict[str, Any] = {
        "args": vars(args),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wheels_unpacked": wheels,
        "missing_modules": missing_modules(),
        "parts": {},
    }
    print_plan(parts)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Context(args, device, out, Path(tmp))
        for p, budget in parts:
            budget = min(budget, total - (time.monotonic() - started))
            if budget < 3.0:
                skipped = {"what": "skipped", "value": "out of time (--total)", "util": "", "note": ""}
                result = {"status": "skipped", "seconds": 0.0, "budget_s": 0.0, "raw": {}, "rows": [skipped]}
            else:
                print(f"== {p.name} (budget {budget:.0f} s)", flush=True)
                result = run_part(ctx, p, budget)
            ctx.results[p.name] = report["parts"][p.name] = result
            report["facts"] = report.get("facts") or result["raw"].get("facts")
            report["peaks_tflops"] = ctx.peaks
            report["seconds"] = round(time.monotonic() - started, 1)
            write_report(out, report)
    bad = [name for name, r in report["parts"].items() if r["status"] not in ("ok", "skipped")]
    print(f"gpu_check: {len(report['parts'])} parts in {report['seconds']:.0f} s; not ok: {bad or 'none'}; "
          f"{out / 'gpu_check.md'}")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
